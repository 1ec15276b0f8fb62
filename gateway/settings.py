"""The gateway's one TOML file, decoded into typed Structs and validated when loaded.

Every error names the key path (`server.port`, `clients[1].api_key`, ...), at start-up and in
`gateway check-config` alike. Secrets may come from the environment instead of the file:
`GATEWAY_ADMIN_TOKEN`, `GATEWAY_DATA_KEY`, `GATEWAY_CLIENT_<ID>_API_KEY`,
`GATEWAY_CLIENT_<ID>_SECRET`, `GATEWAY_CLIENT_<ID>_CHALLENGE_SECRET` (ID upper-cased, `-` and
`.` as `_`).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from ratelimit.rules import Limit, validate_limits
from risk.rules import RiskRule, merge_rules, validate_rules


class ConfigError(ValueError):
    """Configuration problems, one per line, each starting with the offending key path."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Server(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    port: int = 8080
    admin_port: int = 8081
    workers: int = 1
    trusted_proxies: list[str] = []
    max_body_bytes: int = 16_384
    # Past this many requests in flight in one worker, new ones are shed with 503 overloaded.
    max_in_flight: int = 4_096
    # Slow clients: a connection idle, or still sending its request headers, is closed after
    # keepalive_timeout_s; a body not fully received within body_timeout_s gets 408 and a close.
    keepalive_timeout_s: float = 5.0
    body_timeout_s: float = 5.0
    shutdown_timeout_s: float = 10.0


class Redis(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = "embedded"
    data_dir: str = "var"
    timeout_s: float = 1.0
    # Events beyond this many per stream are trimmed (approximately) by XADD MAXLEN ~.
    stream_max_len: int = 1_000_000
    # When a change is answered (SPEC 5a): in Valkey's memory (everysec), in its AOF on disk
    # (fsync), or on at least one replica (replica), waiting at most durability_timeout_ms.
    durability: Literal["everysec", "fsync", "replica"] = "everysec"
    durability_timeout_ms: int = 1000


Role = Literal["viewer", "operator", "admin"]


class AdminUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    token: str
    role: Role


class Admin(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str = ""
    users: list[AdminUser] = []

    @property
    def operators(self) -> list[AdminUser]:
        """Every named admin user; `token`, when set, is an `admin` named `admin` (SPEC 4)."""
        if not self.token:
            return list(self.users)
        return [AdminUser(name="admin", token=self.token, role="admin"), *self.users]


class Backend(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8082
    # A relative sqlite path is kept under redis.data_dir, next to the embedded Valkey's data.
    database_url: str = "sqlite:///ledger.db"
    # The gateway's admin API, which claw-back calls; empty: server.host and server.admin_port.
    gateway_url: str = ""
    # Processes that ingest the event streams, the backend's own included (docs/backend.md).
    ingest_workers: int = 1


class Security(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    data_key: str = ""


class Client(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    api_key: str = ""
    require_signature: bool = False
    secret: str = ""
    # Keys the challenge passes the client's backend mints (SPEC §6); '' accepts none.
    challenge_secret: str = ""


class Supplier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    base_url: str
    timeout_s: float = 3.0
    max_concurrency: int = 64
    priority: int = 1


class Risk(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rules: list[RiskRule] = []


class Redemption(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # A reservation is left to its worker this long; after that the reconciler settles it
    # (asks the supplier, or returns the voucher). Live supplier work is bounded to half of it.
    sweep_after_s: float = 30.0
    # How often each worker looks for pending redemptions that are due.
    reconcile_interval_s: float = 2.0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: Server = Server()
    redis: Redis = Redis()
    admin: Admin = Admin()
    security: Security = Security()
    clients: list[Client] = []
    suppliers: list[Supplier] = []
    limits: dict[str, list[Limit]] = {}
    risk: Risk = Risk()
    redemption: Redemption = Redemption()
    backend: Backend = Backend()

    @property
    def risk_rules(self) -> list[RiskRule]:
        """The safe defaults plus the configured rules (a rule replaces the default of its kind)."""
        return merge_rules(self.risk.rules)


_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_INGEST_WORKERS = 16


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    """Read, decode and validate one TOML file; raise ConfigError naming the bad key."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from exc
    return parse(raw, env)


def parse(raw: bytes | str, env: Mapping[str, str] | None = None) -> Settings:
    """Decode TOML text into Settings with environment overrides applied, then validate.

    Every problem is reported at once: each unknown key (with a "did you mean"), each
    section whose types are wrong, and each section that fails its checks.
    """
    try:
        data = msgspec.toml.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config: not valid TOML: {exc}") from exc
    problems = _unknown_keys(data, msgspec.inspect.type_info(Settings), "")
    # Limits and rules first: their validators name the full key path (limits.claim[1].by).
    problems += _attempt(lambda: _validate_leaf_sections(data))
    mistyped = set()
    for field in msgspec.structs.fields(Settings):
        if field.name not in data:
            continue
        try:
            msgspec.convert(data[field.name], type=field.type)
        except msgspec.ValidationError as exc:
            problems.append(_msgspec_message(str(exc), field.name))
            mistyped.add(field.name)
            del data[field.name]  # checked no further; the rest still is
    settings = _apply_env(msgspec.convert(data, type=Settings), os.environ if env is None else env)
    problems += _problems(settings, skip=mistyped)
    if problems:
        raise ConfigError(*problems)
    return settings


def _validate_leaf_sections(data: dict[str, Any]) -> None:
    try:
        if isinstance(data.get("limits"), dict):
            data["limits"] = validate_limits(data["limits"])
    except ValueError:
        data.pop("limits")
        raise
    risk = data.get("risk")
    if isinstance(risk, dict) and "rules" in risk:
        try:
            risk["rules"] = validate_rules(risk["rules"])
        except ValueError:
            risk.pop("rules")
            raise


def _unknown_keys(data: Any, info: Any, where: str) -> list[str]:
    """Every key the Structs do not know (removed from `data`), with the nearest known one."""
    if isinstance(info, msgspec.inspect.ListType) and isinstance(data, list):
        return [
            problem
            for i, item in enumerate(data)
            for problem in _unknown_keys(item, info.item_type, f"{where}[{i}]")
        ]
    if not isinstance(info, msgspec.inspect.StructType) or not isinstance(data, dict):
        return []
    fields = {f.encode_name: f.type for f in info.fields}
    problems = []
    for key in list(data):
        path = f"{where}.{key}" if where else key
        if key in fields:
            problems += _unknown_keys(data[key], fields[key], path)
            continue
        near = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        hint = f" (did you mean `{near[0]}`?)" if near else ""
        problems.append(f"{path}: unknown key{hint}")
        del data[key]
    return problems


def _attempt(check: Callable[[], object]) -> list[str]:
    """The problems one check raises (it stops at its first), or none."""
    try:
        check()
    except ConfigError as exc:
        return exc.problems
    except ValueError as exc:
        return [str(exc)]
    return []


def _msgspec_message(text: str, section: str = "") -> str:
    # msgspec says "Expected `int`, got `str` - at `$.port`"; lead with the key path.
    match = re.search(r" - at `\$\.?(.*)`$", text)
    inner = match.group(1) if match else ""
    where = ".".join(part for part in (section, inner) if part).replace(".[", "[")
    what = text[: match.start()] if match else text
    field = re.match(r"Object (contains unknown|missing required) field `([^`]*)`", what)
    if field:
        key = f"{where}.{field.group(2)}" if where else field.group(2)
        return f"{key}: {'unknown key' if field.group(1).startswith('contains') else 'required'}"
    return f"{where or 'config'}: {what}"


def _env_name(client_id: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", client_id.upper())


def _apply_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    admin = settings.admin
    if env.get("GATEWAY_ADMIN_TOKEN"):
        admin = msgspec.structs.replace(admin, token=env["GATEWAY_ADMIN_TOKEN"])
    security = settings.security
    if env.get("GATEWAY_DATA_KEY"):
        security = msgspec.structs.replace(security, data_key=env["GATEWAY_DATA_KEY"])
    clients = []
    for client in settings.clients:
        prefix = f"GATEWAY_CLIENT_{_env_name(client.id)}_"
        api_key = env.get(prefix + "API_KEY") or client.api_key
        secret = env.get(prefix + "SECRET") or client.secret
        challenge = env.get(prefix + "CHALLENGE_SECRET") or client.challenge_secret
        clients.append(
            msgspec.structs.replace(
                client, api_key=api_key, secret=secret, challenge_secret=challenge
            )
        )
    return msgspec.structs.replace(settings, admin=admin, security=security, clients=clients)


def validate(settings: Settings) -> None:
    """Check what types alone cannot; raise ConfigError naming every bad key."""
    problems = _problems(settings)
    if problems:
        raise ConfigError(*problems)


def _problems(settings: Settings, skip: set[str] | None = None) -> list[str]:
    """Each section's first problem (a section stops at its first); `skip`: sections not read."""
    checks: dict[str, Callable[[], object]] = {
        "server": lambda: _validate_server(settings.server),
        "redis": lambda: _validate_redis(settings.redis),
        "admin": lambda: _validate_admin(settings.admin),
        "backend": lambda: _validate_backend(settings.backend),
        "security": lambda: (
            settings.security.data_key and data_key_bytes(settings.security.data_key)
        ),
        "redemption": lambda: _validate_redemption(settings.redemption),
        "clients": lambda: _validate_clients(settings.clients),
        "suppliers": lambda: _validate_suppliers(settings.suppliers),
        "limits": lambda: validate_limits(settings.limits),
        "risk": lambda: validate_rules(settings.risk.rules),
    }
    skip = skip or set()
    return [p for name, check in checks.items() if name not in skip for p in _attempt(check)]


def _validate_redemption(redemption: Redemption) -> None:
    if redemption.sweep_after_s < 2 or redemption.reconcile_interval_s <= 0:
        raise ConfigError("redemption: sweep_after_s must be >= 2 and reconcile_interval_s > 0")


def _validate_admin(admin: Admin) -> None:
    if not admin.token and not admin.users:
        raise ConfigError(
            "admin.token: required unless admin.users is set (or GATEWAY_ADMIN_TOKEN)"
        )
    names: set[str] = {"admin"} if admin.token else set()
    tokens: set[str] = {admin.token} if admin.token else set()
    for i, user in enumerate(admin.users):
        where = f"admin.users[{i}]"
        if not _ID_RE.match(user.name):
            raise ConfigError(f"{where}.name: 1-64 of A-Z a-z 0-9 _ . -, got {user.name!r}")
        if user.name in names:
            raise ConfigError(f"{where}.name: duplicate admin user name {user.name!r}")
        if len(user.token) < 8:
            raise ConfigError(f"{where}.token: at least 8 characters")
        if user.token in tokens:
            raise ConfigError(f"{where}.token: the same token is given to two admin users")
        names.add(user.name)
        tokens.add(user.token)


def _validate_backend(backend: Backend) -> None:
    if not 0 <= backend.port <= 65535:
        raise ConfigError(f"backend.port: must be 0..65535, got {backend.port}")
    if not backend.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(
            "backend.database_url: must be sqlite:///PATH or postgresql://..., "
            f"got {backend.database_url!r}"
        )
    if backend.gateway_url and not backend.gateway_url.startswith(("http://", "https://")):
        raise ConfigError("backend.gateway_url: must be an http(s) URL")
    if not 1 <= backend.ingest_workers <= MAX_INGEST_WORKERS:
        raise ConfigError(
            f"backend.ingest_workers: must be 1..{MAX_INGEST_WORKERS}, got {backend.ingest_workers}"
        )


def _validate_server(server: Server) -> None:
    for key in ("port", "admin_port"):
        value = getattr(server, key)
        if not 0 <= value <= 65535:
            raise ConfigError(f"server.{key}: must be 0..65535, got {value}")
    if server.port == server.admin_port and server.port != 0:
        raise ConfigError("server.admin_port: must differ from server.port")
    if not 1 <= server.workers <= 256:
        raise ConfigError(f"server.workers: must be 1..256, got {server.workers}")
    if server.max_body_bytes < 256:
        raise ConfigError("server.max_body_bytes: must be >= 256")
    if server.max_in_flight < 1:
        raise ConfigError("server.max_in_flight: must be >= 1")
    for key in ("body_timeout_s", "keepalive_timeout_s", "shutdown_timeout_s"):
        if getattr(server, key) <= 0:
            raise ConfigError(f"server.{key}: must be > 0")
    _validate_proxies(server.trusted_proxies)


def _validate_proxies(proxies: list[str]) -> None:
    for i, proxy in enumerate(proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"server.trusted_proxies[{i}]: not an address or CIDR: {proxy!r}"
            ) from exc


def _validate_redis(redis: Redis) -> None:
    url = redis.url
    if url != "embedded" and not url.startswith(
        ("redis://", "rediss://", "unix://", "redis+cluster://", "redis+sentinel://")
    ):
        raise ConfigError(
            f"redis.url: must be 'embedded', redis://, rediss://, unix://, "
            f"redis+cluster:// or redis+sentinel://, got {url!r}"
        )
    if url.startswith("redis+sentinel://"):
        _validate_sentinel_url(url)
    if redis.timeout_s <= 0:
        raise ConfigError("redis.timeout_s: must be > 0")
    if redis.stream_max_len < 1000:
        raise ConfigError("redis.stream_max_len: must be >= 1000")
    if not 1 <= redis.durability_timeout_ms <= 60_000:
        raise ConfigError(
            f"redis.durability_timeout_ms: must be 1..60000, got {redis.durability_timeout_ms}"
        )
    if redis.durability == "replica" and url == "embedded":
        raise ConfigError(
            "redis.durability: 'replica' needs a Valkey with a replica; the embedded one has "
            "none (use 'fsync', or point redis.url at a primary with a replica)"
        )


def _validate_sentinel_url(url: str) -> None:
    """redis+sentinel://host:port[,host:port]/service: at least one Sentinel and a service."""
    rest = url.removeprefix("redis+sentinel://")
    hosts, _, service = rest.partition("/")
    addresses = hosts.rpartition("@")[2].split(",")
    if (
        not service
        or "/" in service
        or not all(
            re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:,\s\[\]]+):\d{1,5}", address)
            for address in addresses
        )
    ):
        shown = re.sub(r"//[^/@]*@", "//***@", url)  # no password in the message
        raise ConfigError(
            "redis.url: a Sentinel URL is redis+sentinel://host:port[,host:port]/service, "
            f"got {shown!r}"
        )


def _validate_clients(clients: list[Client]) -> None:
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for i, client in enumerate(clients):
        where = f"clients[{i}]"
        if not _ID_RE.match(client.id):
            raise ConfigError(f"{where}.id: 1-64 of A-Z a-z 0-9 _ . -, got {client.id!r}")
        if client.id in seen_ids:
            raise ConfigError(f"{where}.id: duplicate client id {client.id!r}")
        if not client.api_key:
            raise ConfigError(f"{where}.api_key: required (or set GATEWAY_CLIENT_..._API_KEY)")
        if client.api_key in seen_keys:
            raise ConfigError(f"{where}.api_key: the same key is given to two clients")
        if client.require_signature and not client.secret:
            raise ConfigError(f"{where}.secret: required when require_signature = true")
        seen_ids.add(client.id)
        seen_keys.add(client.api_key)


def _validate_suppliers(suppliers: list[Supplier]) -> None:
    seen: set[str] = set()
    for i, supplier in enumerate(suppliers):
        where = f"suppliers[{i}]"
        if not _ID_RE.match(supplier.id):
            raise ConfigError(f"{where}.id: 1-64 of A-Z a-z 0-9 _ . -, got {supplier.id!r}")
        if supplier.id in seen:
            raise ConfigError(f"{where}.id: duplicate supplier id {supplier.id!r}")
        if not supplier.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: must be an http(s) URL")
        if supplier.timeout_s <= 0:
            raise ConfigError(f"{where}.timeout_s: must be > 0")
        if supplier.max_concurrency < 1:
            raise ConfigError(f"{where}.max_concurrency: must be >= 1")
        if supplier.priority < 1:
            raise ConfigError(f"{where}.priority: must be >= 1")
        seen.add(supplier.id)


def data_key_bytes(value: str) -> bytes:
    """Decode a base64 AES-256 key; raise ConfigError unless it is exactly 32 bytes."""
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("security.data_key: not valid base64") from exc
    if len(key) != 32:
        raise ConfigError(f"security.data_key: must decode to 32 bytes, got {len(key)}")
    return key


def resolve_data_key(settings: Settings) -> bytes:
    """The data key: from config/env, else var/data.key (created 0600 on first start).

    `gateway serve` hands it to every worker; the admin backend reads the same one (it turns
    claim ids back into codes with it, gateway/codes.py ClaimIds).
    """
    if settings.security.data_key:
        return data_key_bytes(settings.security.data_key)
    path = Path(settings.redis.data_dir) / "data.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return data_key_bytes(path.read_text().strip())


Route = Literal["claim", "redeem"]
