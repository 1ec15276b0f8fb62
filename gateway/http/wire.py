"""Claim answers written to the connection as one buffer, past aiohttp's Response machinery.

A claim's answer is a small JSON body with a handful of headers, and in a flash sale most of the
worker's time per request is framing: building a `web.Response` (a header multidict, content
type parsing), then `prepare()` and `write_eof()` walking compression, chunking, cookies and
signals that a claim never uses. `Answer` is what aiohttp's request handler needs of an
answer — `prepare(request)`, `write_eof()`, `keep_alive` — and writes status line, headers and
body with one `transport.write`.

Only HTTP/1.1 claims reached through `PublicDispatch` answer this way. Everything else gets
aiohttp's own responses, which handle what a claim's answer does not: HEAD, HTTP/1.0,
`Expect: 100-continue`, the other routes, the admin API.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp.helpers import rfc822_formatted_time  # aiohttp's own Date, cached per second
from aiohttp.http import SERVER_SOFTWARE

_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\nContent-Type: application/json\r\n".encode()
    for s in HTTPStatus
}
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n".encode()


class Answer:
    """A JSON answer: status, headers (str -> str), body; written as is to an HTTP/1.1 claim.

    Decisions (claims, redemptions) return one; routes other than the direct claim route turn
    it into a `web.Response`.
    `headers` may be added to until aiohttp calls `prepare`; the values are the gateway's own
    (request ids, numbers, fixed words), never text taken from a request.
    """

    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = {} if headers is None else headers
        self.keep_alive: bool | None = None

    @property
    def body_length(self) -> int:
        """What aiohttp's access log reports as the body size (`%b`)."""
        return len(self.body)

    def force_close(self) -> None:
        """Close the connection after this answer (as `web.StreamResponse.force_close`)."""
        self.keep_alive = False

    async def prepare(self, request: Any) -> None:
        """Write the whole answer; raises ConnectionResetError when the client has gone."""
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client disconnected before the answer")
        if self.keep_alive is None:
            self.keep_alive = request.keep_alive
        head = "".join([f"{name}: {value}\r\n" for name, value in self.headers.items()])
        if not self.keep_alive and "Connection" not in self.headers:
            head += "Connection: close\r\n"
        body = self.body
        transport.write(
            b"".join(
                (
                    _STATUS_LINES[self.status],
                    head.encode("latin-1"),
                    b"Content-Length: %d\r\nDate: %s\r\n"
                    % (len(body), rfc822_formatted_time().encode()),
                    _SERVER,
                    b"\r\n",
                    body,
                )
            )
        )

    async def write_eof(self) -> None:
        """Nothing left to send: `prepare` wrote the body too."""
