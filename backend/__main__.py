"""`python -m backend --config FILE` (what `gateway backend` runs): the admin backend."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from backend.app import create_app
from backend.db import async_url
from gateway.settings import ConfigError, Settings, load, resolve_data_key
from gateway.valkey.connect import embedded_url


def redis_url(settings: Settings) -> str:
    """The configured URL, or the embedded Valkey's that a running gateway master started."""
    if settings.redis.url != "embedded":
        return settings.redis.url
    url = embedded_url(settings.redis.data_dir)
    if not url:
        raise ConfigError(
            f"redis.url: embedded, but no running embedded Valkey under {settings.redis.data_dir}"
            " (start the gateway first)"
        )
    return url


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="gateway backend", description="the admin backend")
    top.add_argument("--config", required=True)
    args = top.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = load(args.config)
        url = redis_url(settings)
        data_key = resolve_data_key(settings)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    database = async_url(settings.backend.database_url, settings.redis.data_dir)
    app = create_app(settings, url, database, data_key=data_key)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover (uvloop is a dependency; this is a fallback)
        pass
    web.run_app(app, host=settings.backend.host, port=settings.backend.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
