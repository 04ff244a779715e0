"""Entry point: `python -m tracker ROLE` or the `tracker` console script.

Exit codes: 0 done, 1 failed, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import uvloop

from tracker.errors import ConfigError
from tracker.settings import MAX_SHARDS, Settings

API_SHUTDOWN_S = 5.0  # below supervisord's stopwaitsecs for the api (10 s)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tracker", description="conversation timeout tracker")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="HTTP API and the pod's /metrics")
    sub.add_parser("sweeper", help="leader candidate: holds shard leases, sweeps due timeouts")
    consumer = sub.add_parser("consumer", help="delivers notifications of its share of shards")
    consumer.add_argument("--index", type=int, default=0)
    listener = sub.add_parser("listener", help="supervisord event listener")
    listener.add_argument("kind", choices=["metrics", "fatal"])
    sub.add_parser("pod", help="run the whole pod under supervisord in the foreground")
    ctl = sub.add_parser("ctl", help="supervisorctl for this pod")
    ctl.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("status", help="shards, leases, backlog, pending, overdue, dead letters")
    dl = sub.add_parser("dead-letters", help="list, replay or purge dead letters")
    dl.add_argument("action", choices=["list", "replay", "purge"])
    dl.add_argument("ids", nargs="*", help="entry ids (default: all)")
    dl.add_argument("--limit", type=int, default=100)
    conv = sub.add_parser("conversation", help="one conversation's state and recent history")
    conv.add_argument("id")
    reshard = sub.add_parser("reshard", help="change the shard count while the pods run")
    reshard.add_argument("--to", type=shard_count, required=True, metavar="N")
    reshard.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="how long to wait for removed shards' streams to be delivered (default 300)",
    )
    return p


def shard_count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if not 1 <= value <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"expected 1..{MAX_SHARDS}, got {value}")
    return value


def prepare_metrics_dir(settings: Settings) -> None:
    """prometheus_client reads PROMETHEUS_MULTIPROC_DIR at import: set it before importing."""
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir.resolve())


def run_role(coro_factory: Any, settings: Settings) -> int:
    from tracker import metrics
    from tracker.pod import tracker_programs

    metrics.declare_known(tracker_programs(settings))

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)

    uvloop.run(runner())
    return 0


def run_cli(coro_factory: Any, settings: Settings) -> int:
    from tracker.connection import connect

    async def runner() -> int:
        redis = connect(settings)
        try:
            result: int = await coro_factory(redis)
            return result
        finally:
            await redis.aclose()

    return uvloop.run(runner())


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "pod":
        from tracker.pod import run_pod

        run_pod(settings, os.environ)
    if command == "ctl":
        from tracker.pod import run_ctl

        run_ctl(settings, os.environ, args.args)
    prepare_metrics_dir(settings)
    if command == "listener":
        from tracker import listener

        listener.serve(args.kind, settings)
    if command == "api":
        from tracker.server import serve

        return run_role(lambda stop: serve(settings, stop, API_SHUTDOWN_S), settings)
    if command == "sweeper":
        from tracker import sweeper

        return run_role(lambda stop: sweeper.main(settings, stop), settings)
    if command == "consumer":
        from tracker import consumer

        if not 0 <= args.index < settings.consumer_processes:
            raise ConfigError(
                f"--index: {args.index} is outside 0..{settings.consumer_processes - 1}"
            )
        return run_role(lambda stop: consumer.main(settings, args.index, stop), settings)
    from tracker import cli

    handlers: dict[str, Any] = {
        "status": lambda r: cli.status(r, settings),
        "conversation": lambda r: cli.conversation(r, settings, args.id),
        "reshard": lambda r: cli.reshard(r, settings, args.to, args.drain_timeout),
    }
    if command == "dead-letters":
        actions = {
            "list": lambda r: cli.dead_letters_list(r, settings, args.limit),
            "replay": lambda r: cli.dead_letters_replay(r, settings, args.ids),
            "purge": lambda r: cli.dead_letters_purge(r, settings, args.ids),
        }
        return run_cli(actions[args.action], settings)
    return run_cli(handlers[command], settings)


def role_name(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """This process's name in its log lines: supervisord's name for it (``consumer-1``,
    ``api-0``, ``metrics-listener``; it sets SUPERVISOR_PROCESS_NAME), else the command."""
    if env.get("SUPERVISOR_PROCESS_NAME"):
        return env["SUPERVISOR_PROCESS_NAME"]
    if args.command == "consumer":
        return f"consumer-{args.index}"
    return str(args.command)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        from tracker.logs import configure

        stream = sys.stderr if args.command == "listener" else sys.stdout
        role = role_name(args, os.environ)
        configure(settings.log_level, settings.log_format, role, settings.pod_id, stream)
        return dispatch(args, settings)
    except ConfigError as exc:
        print(f"tracker: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
