"""JSON by default; CSV with ?format=csv (a table of the document's rows, or metric,value)."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from backend.http.envelope import invalid, json_response


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(f"{prefix}.{i}", item, out)
    else:
        out.append((prefix, "" if value is None else value))


def _table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    flat = []
    for row in rows:
        pairs: list[tuple[str, Any]] = []
        _flatten("", row, pairs)
        flat.append(dict(pairs))
    header: list[str] = []
    for row in flat:
        header += [k for k in row if k not in header]
    return [header, *[[row.get(k, "") for k in header] for row in flat]]


def to_csv(document: dict[str, Any], rows_key: str | None) -> str:
    """`rows_key` names the list to tabulate; without one, every leaf is a metric,value row."""
    if rows_key is not None:
        lines = _table(document[rows_key])
    else:
        pairs: list[tuple[str, Any]] = []
        _flatten("", document, pairs)
        lines = [["metric", "value"], *[list(p) for p in pairs]]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


def respond(request: web.Request, document: dict[str, Any], rows_key: str | None) -> web.Response:
    wanted = request.query.get("format", "json")
    if wanted == "json":
        return json_response(document)
    if wanted == "csv":
        return web.Response(text=to_csv(document, rows_key), content_type="text/csv")
    raise invalid("format: json or csv")
