"""The `gateway` command: serve, demo, check-config, events tail, preflight, supplier-sim,
backend. Every command ends with one line and a non-zero exit on a known failure (a config
error, a port or data directory taken, a closed pipe): never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway.ops.host import StartError
from gateway.settings import ConfigError, load


def _serve(args: argparse.Namespace) -> int:
    from gateway.ops.server import Master
    from gateway.telemetry import logs

    logs.configure()
    settings = load(args.config)
    return Master(settings, workers=args.workers).run()


def _check_config(args: argparse.Namespace) -> int:
    settings = load(args.config)
    rules = ", ".join(f"{r.id} ({r.kind}, {r.mode})" for r in settings.risk_rules)
    print(f"{args.config}: ok")
    print(f"  clients: {len(settings.clients)}  suppliers: {len(settings.suppliers)}")
    print(f"  risk rules in force: {rules}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.ops.demo import run_demo

    return run_demo(args.config, workers=args.workers)


def _events_tail(args: argparse.Namespace) -> int:
    from gateway.ops.events_tail import tail

    return tail(
        args.config,
        group=args.group,
        consumer=args.consumer,
        from_start=args.from_start,
        count=args.count,
        follow=not args.no_follow,
    )


def _preflight(args: argparse.Namespace) -> int:
    from gateway.ops.preflight import run_preflight

    return run_preflight(args.campaign)


def _supplier_sim(argv: Sequence[str]) -> int:
    from supplier_pool.simulator import main as sim_main

    return sim_main(list(argv))


def _backend(argv: Sequence[str]) -> int:
    # A new interpreter, so the gateway never imports the backend (they share only settings).
    os.execv(sys.executable, [sys.executable, "-m", "backend", *argv])
    return 0  # pragma: no cover (execv does not return)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gateway", description="Benefits gateway")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (N worker processes)")
    serve.add_argument("--config", required=True, help="the gateway's TOML file")
    serve.add_argument("--workers", type=int, default=None, help="overrides server.workers")
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="embedded Valkey + supplier simulator + demo campaigns")
    demo.add_argument(
        "--config", default="config/demo.toml", help="demo TOML (default config/demo.toml)"
    )
    demo.add_argument("--workers", type=int, default=None, help="overrides server.workers")
    demo.set_defaults(func=_demo)

    check = sub.add_parser("check-config", help="validate a config file offline")
    check.add_argument("config", help="the TOML file to validate")
    check.set_defaults(func=_check_config)

    events = sub.add_parser("events", help="the event stream")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail = events_sub.add_parser(
        "tail", help="print events as JSON lines; follows new ones until Ctrl-C (--no-follow)"
    )
    tail.add_argument(
        "--config", default="config/demo.toml", help="the gateway's TOML (finds its Valkey)"
    )
    tail.add_argument("--group", default=None, help="read through this consumer group (and ack)")
    tail.add_argument("--consumer", default="tail", help="consumer name within --group")
    tail.add_argument("--from-start", action="store_true", help="from the oldest event kept")
    tail.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    tail.add_argument("--no-follow", action="store_true", help="stop when caught up")
    tail.set_defaults(func=_events_tail)

    preflight = sub.add_parser("preflight", help="rehearse a campaign's spike on a scratch copy")
    preflight.add_argument("campaign", help="campaign file, e.g. config/demo-campaign.toml")
    preflight.set_defaults(func=_preflight)

    sub.add_parser("supplier-sim", help="run the supplier simulator", add_help=False)
    sub.add_parser("backend", help="run the admin backend (ledger, reports)", add_help=False)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["supplier-sim"]:
        return _supplier_sim(argv[1:])
    if argv[:1] == ["backend"]:
        return _backend(argv[1:])
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    except StartError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, and keep Python's exit-time
        # flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
