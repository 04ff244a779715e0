"""Entry point: `python -m tracker ROLE` or the `tracker` console script.

Exit codes: see EXIT_CODES (`tracker --help` shows them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import uvloop

from tracker.errors import ConfigError
from tracker.ops import arguments
from tracker.settings import MAX_SHARDS, Settings

API_SHUTDOWN_S = 5.0  # below supervisord's stopwaitsecs for the api (10 s)


EXIT_CODES = """\
exit codes:
  0    done; status: healthy
  1    done, but the answer is no: status degraded (a shard without a leader, overdue
       work, dead letters waiting, a shard refusing writes, Redis loading, read-only or
       nearly full, a role backing off); an unknown conversation or dead-letter id
       (nothing done); a replay refused or raced
  2    could not run: bad usage or configuration, or Redis unreachable or refusing
  130  interrupted (Ctrl-C)
  141  output closed early (e.g. piped into head): stops quietly
Errors are one line on stderr, never a traceback."""


class Parser(argparse.ArgumentParser):
    """A usage error is one line (and exit 2), not the usage text and the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="tracker",
        description="conversation timeout tracker",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    _operator_commands(sub)
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


def _operator_commands(sub: Any) -> None:
    def command(name: str, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = parent.add_parser(
            name, help=help, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        return cmd

    status = command("status", "health: shards, leases, backlog, pending, dead letters, Redis")
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument(
        "--watch",
        nargs="?",
        type=arguments.seconds,
        const=2.0,
        metavar="S",
        help="print it again every S seconds (2) until Ctrl-C; with --json, one line each",
    )
    pending = command("pending", "entries read and not yet acknowledged: who, how long, why")
    pending.add_argument("--shard", type=arguments.count(0, MAX_SHARDS - 1), metavar="N")
    pending.add_argument(
        "--limit", type=arguments.count(1, arguments.MAX_LIMIT), default=100, metavar="N"
    )
    pending.add_argument("--json", action="store_true")
    dead = command("dead-letters", "list, replay or purge dead letters")
    actions = dead.add_subparsers(dest="action", required=True, metavar="{list,replay,purge}")
    listing = command("list", "newest first, as JSON notifications", actions)
    listing.add_argument(
        "--limit",
        type=arguments.count(1, arguments.MAX_LIMIT),
        default=100,
        metavar="N",
        help="at most N in all (100)",
    )
    listing.add_argument("--conversation", type=arguments.conversation_id, metavar="ID")
    listing.add_argument(
        "--since",
        type=arguments.since,
        metavar="WHEN",
        help="RFC 3339 time, or 30s, 15m, 2h, 7d ago",
    )
    listing.add_argument("--json", action="store_true", help="one JSON document")
    ids_help = "SHARD-MS-SEQ ids (e.g. 7-1795975119440-0) or event ids (evt_...)"
    replay = command("replay", "back onto their shard stream", actions)
    replay.add_argument("ids", nargs="*", help=ids_help)
    replay.add_argument("--all", action="store_true", help="every dead letter")
    purge = command("purge", "delete", actions)
    purge.add_argument("ids", nargs="*", help=ids_help)
    purge.add_argument("--all", action="store_true", help="every dead letter (with --yes)")
    purge.add_argument("--yes", action="store_true", help="confirm --all")
    conv = command("conversation", "one conversation: state, each level's fate, history")
    conv.add_argument("id", type=arguments.conversation_id)
    conv.add_argument("--json", action="store_true", help="one JSON document")


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
    from tracker.pod.supervisor import tracker_programs

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
    """Run an operator command; every expected failure is one line on stderr and an exit
    code (EXIT_CODES), never a traceback."""
    from tracker.ops.cli import Failed, is_redis_failure
    from tracker.redis.connection import UNAVAILABLE, close, connect

    async def runner() -> int:
        redis = connect(settings)
        try:
            result: int = await coro_factory(redis)
            return result
        finally:
            await close(redis)

    try:
        code: int = uvloop.run(runner())
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # the reader went away (| head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    except Failed as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:
        if not is_redis_failure(exc):
            raise
        where = arguments.redact(settings.redis_url)
        if isinstance(exc, UNAVAILABLE):
            print(f"tracker: cannot reach Redis at {where}: {one_line(exc)}", file=sys.stderr)
        else:
            print(f"tracker: Redis at {where} refused: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "pod":
        from tracker.pod.supervisor import run_pod

        run_pod(settings, os.environ)
    if command == "ctl":
        from tracker.pod.supervisor import run_ctl

        run_ctl(settings, os.environ, args.args)
    prepare_metrics_dir(settings)
    if command == "listener":
        from tracker.pod import listener

        listener.serve(args.kind, settings)
    if command == "api":
        from tracker.api.server import serve

        return run_role(lambda stop: serve(settings, stop, API_SHUTDOWN_S), settings)
    if command == "sweeper":
        from tracker.timing import sweeper

        return run_role(lambda stop: sweeper.main(settings, stop), settings)
    if command == "consumer":
        from tracker.delivery import consumer

        if not 0 <= args.index < settings.consumer_processes:
            raise ConfigError(
                f"--index: {args.index} is outside 0..{settings.consumer_processes - 1}"
            )
        return run_role(lambda stop: consumer.main(settings, args.index, stop), settings)
    from tracker.ops import cli

    handlers: dict[str, Any] = {
        "status": lambda r: cli.status(r, settings, as_json=args.json, watch_s=args.watch),
        "pending": lambda r: cli.pending(
            r, settings, shard=args.shard, limit=args.limit, as_json=args.json
        ),
        "conversation": lambda r: cli.conversation(r, settings, args.id, as_json=args.json),
        "reshard": lambda r: cli.reshard(r, settings, args.to, args.drain_timeout),
    }
    if command == "dead-letters":
        actions = {
            "list": lambda r: cli.dead_letters_list(
                r,
                settings,
                limit=args.limit,
                conversation=args.conversation,
                since=args.since,
                as_json=args.json,
            ),
            "replay": lambda r: cli.dead_letters_replay(r, settings, ids=args.ids, every=args.all),
            "purge": lambda r: cli.dead_letters_purge(
                r, settings, ids=args.ids, every=args.all, yes=args.yes
            ),
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
