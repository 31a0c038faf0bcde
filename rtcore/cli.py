"""``rtcore`` command line.

rtcore serve [--config FILE] [--host H] [--port P] [--api-host H] [--api-port P]
             [--workers N]                          run the server (SIGHUP reloads FILE)
rtcore check-config FILE                            validate a config file
rtcore token --config FILE --app A --user U         mint a development session token
rtcore loadtest URL --scenario S [options]          load-test a deployment (docs/loadtest.md)

``--workers N`` (N > 1; Linux) runs N worker processes that share the client and server-API
ports (SO_REUSEPORT), each a node of the Redis broker (``[broker] kind = "redis"`` is
required), under a supervisor that serves nothing itself: it restarts a crashed worker,
passes SIGTERM, SIGINT and SIGHUP on to every worker, and stops them all (exit 1) after too
many crashes (rtcore.workers). The ports must be fixed (not 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtcore import config as cfg
from rtcore.core import auth
from rtcore.observe import log_config as logs
from rtcore.workers import policy
from rtcore.workers.link import SupervisorLink

if TYPE_CHECKING:
    from rtcore.server import Server  # imported only when serving

log = logging.getLogger("rtcore")


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``rtcore serve | check-config | token | loadtest``."""
    parser = argparse.ArgumentParser(prog="rtcore", description="rtcore realtime server")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub.add_parser("serve", help="run the server (embedded defaults without --config)"))
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    token = sub.add_parser("token", help="mint a session token for development")
    token.add_argument("--config", required=True, help="the config holding the app's secret")
    token.add_argument("--app", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--session", help="session id claim")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (default 3600)")
    token.add_argument("--private-key", help="PEM file, for RS*/ES* apps")
    loadtest = sub.add_parser(  # main() hands its arguments to rtcore.loadtest.cli
        "loadtest", help="load-test a deployment: rtcore loadtest --help", add_help=False
    )
    loadtest.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def _add_serve(serve: argparse.ArgumentParser) -> None:
    """``rtcore serve``'s options."""
    serve.add_argument("--config", help="TOML config file (SIGHUP reloads it)")
    serve.add_argument("--host", help="listen address (overrides the config)")
    serve.add_argument("--port", type=int, help="listen port (overrides the config)")
    serve.add_argument("--api-host", help="server API address (overrides the config)")
    serve.add_argument("--api-port", type=int, help="server API port (overrides the config)")
    serve.add_argument(
        "--workers",
        default="1",  # checked in main(), like --log-level
        metavar="N",
        help="worker processes sharing the ports (SO_REUSEPORT, Linux; default 1: this "
        'process serves). N > 1 needs [broker] kind = "redis" and fixed ports; a supervisor '
        "restarts crashed workers and passes SIGTERM, SIGINT and SIGHUP on to them",
    )
    # How the supervisor starts a worker (rtcore.workers): not for people.
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave Python's garbage collector as it is (default: collections are kept short "
        "by freezing what survived them, see docs/deploy.md)",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",  # checked in main(): one line, not argparse's usage and error
        help="DEBUG adds refusals; INFO (default) connections, start and stop",
    )
    serve.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="text (default), or json: one JSON object per line",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:  # its own parser: URLs, and combine / report / compare
        return _loadtest(argv[1:])
    return _command(build_parser().parse_args(argv))


def _command(args: argparse.Namespace) -> int:
    """serve, check-config or token."""
    workers = _worker_count(args)
    if workers is None:
        return 2
    try:
        if args.command == "check-config":
            conf = cfg.load(args.file)
            print(f"{args.file}: ok ({len(conf.apps)} apps)")
            return 0
        if args.command == "token":
            return _token(args)
        conf = cfg.load(args.config) if args.config else cfg.Config()
    except cfg.ConfigError as exc:
        for line in exc.errors:
            print(f"rtcore: config error: {line}", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in (
            ("host", args.host),
            ("port", args.port),
            ("api_host", args.api_host),
            ("api_port", args.api_port),
        )
        if v is not None
    }
    conf = attrs.evolve(conf, **overrides)
    if workers > 1:
        return _supervise(conf, args, workers)
    logs.configure(logs.level_name(args.log_level), args.log_format, worker=args.worker)
    try:
        trio.run(_serve, conf, args.config, overrides, args.supervisor_fd, args)
    except (OSError, BaseExceptionGroup) as exc:
        reason = _listen_failure(exc)
        if reason is None:
            raise
        print(f"rtcore: {reason}", file=sys.stderr)
        return 1
    return 0


def _loadtest(argv: list[str]) -> int:
    from rtcore.loadtest.cli import main as loadtest

    return loadtest(argv)


def _worker_count(args: argparse.Namespace) -> int | None:
    """How many worker processes to run (1 but for ``serve --workers N``); None, with the
    reason printed, when ``--log-level`` or ``--workers`` is not valid."""
    if args.command == "serve" and logs.level_name(args.log_level) not in logs.LEVELS:
        print(
            f"rtcore: --log-level {args.log_level!r} is not a level: "
            f"use one of {', '.join(logs.LEVELS)} (any case)",
            file=sys.stderr,
        )
        return None
    workers = policy.parse_count(args.workers) if args.command == "serve" else 1
    if workers is None:
        print(
            f"rtcore: --workers {args.workers!r} is not a number of processes: use 1 (this "
            f"process serves, the default) up to {policy.MAX_WORKERS}",
            file=sys.stderr,
        )
    return workers


def _supervise(conf: cfg.Config, args: argparse.Namespace, count: int) -> int:
    """``serve --workers N``: check what the workers need, then supervise them."""
    from rtcore.server.listen import port_taken
    from rtcore.workers.supervisor import Supervisor

    reason = policy.refusal(conf, count)
    if reason is not None:
        print(f"rtcore: {reason}", file=sys.stderr)
        return 2
    ports = [(conf.port, host, "WebSocket") for host in conf.hosts()]
    if conf.api_port is not None:
        ports.append((conf.api_port, conf.api_host, "server API"))
    taken = [r for r in (port_taken(*p) for p in ports) if r is not None]
    if taken:
        print(f"rtcore: {'; '.join(taken)}", file=sys.stderr)
        return 1
    logs.configure(logs.level_name(args.log_level), args.log_format)
    options = _worker_options(args)

    def command(index: int, fd: int) -> list[str]:
        worker = ["--worker", str(index), "--supervisor-fd", str(fd)]
        return [sys.executable, "-m", "rtcore.cli", "serve", *options, *worker]

    def stop_bound() -> float:  # the file as a SIGHUP left it, for a changed shutdown_grace
        try:
            limits = cfg.load(args.config).limits if args.config else conf.limits
        except cfg.ConfigError:
            limits = conf.limits
        return policy.stop_bound(limits)

    log.info("rtcore supervisor (pid %d): starting %d workers", os.getpid(), count)
    return trio.run(Supervisor(count, command, stop_bound).run)


def _worker_options(args: argparse.Namespace) -> list[str]:
    """The options of ``serve`` that each worker gets as given (--workers aside)."""
    options: list[str] = []
    for flag, value in (
        ("--config", args.config),
        ("--host", args.host),
        ("--port", args.port),
        ("--api-host", args.api_host),
        ("--api-port", args.api_port),
        ("--log-level", args.log_level),
        ("--log-format", args.log_format),
    ):
        if value is not None:
            options += [flag, str(value)]
    return options + ["--no-gc-freeze"] * args.no_gc_freeze


def _listen_failure(exc: BaseException) -> str | None:
    """The reason, if ``exc`` is (a group of) failures to listen; else None (a bug: re-raise)."""
    from rtcore.server import ListenError

    if isinstance(exc, BaseExceptionGroup):
        reasons = [_listen_failure(inner) for inner in exc.exceptions]
        return None if None in reasons else "; ".join(r for r in reasons if r)
    return str(exc.args[1]) if isinstance(exc, ListenError) else None


def _token(args: argparse.Namespace) -> int:
    conf = cfg.load(args.config)
    app = next((a for a in conf.apps if a.name == args.app), None)
    if app is None:
        names = ", ".join(conf.app_names())
        print(f"rtcore: {args.config} has no app {args.app!r} (its apps: {names})", file=sys.stderr)
        return 2
    if app.session is None:
        print(
            f"rtcore: app {args.app!r} has no [apps.session] settings in {args.config}",
            file=sys.stderr,
        )
        return 2
    try:
        private = Path(args.private_key).read_text() if args.private_key else None
    except OSError as exc:
        print(
            f"rtcore: cannot read --private-key {args.private_key}: {exc.strerror}", file=sys.stderr
        )
        return 2
    try:
        print(
            auth.mint_token(
                app.session,
                args.user,
                time.time(),
                args.ttl,
                private_key=private,
                session=args.session,
            )
        )
    except ValueError as exc:
        print(f"rtcore: {exc} (--private-key)", file=sys.stderr)
        return 2
    return 0


async def _serve(
    conf: cfg.Config,
    path: str | None,
    overrides: dict[str, Any],
    supervisor_fd: int | None,
    args: argparse.Namespace,
) -> None:
    """Serve until SIGINT or SIGTERM; as a worker (``supervisor_fd``), also until the
    supervisor is gone, and tell it when serving starts. A worker listens with SO_REUSEPORT;
    the collector is frozen unless ``--no-gc-freeze``."""
    from rtcore.server import Server  # imported only when serving

    reuse_port = args.worker is not None
    server = Server(conf, reuse_port=reuse_port, gc_freeze=not args.no_gc_freeze)
    server.config_path = Path(path) if path is not None else None
    server.config_overrides = overrides
    supervisor = SupervisorLink(supervisor_fd) if supervisor_fd is not None else None
    signals = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:

            async def on_signals() -> None:
                async for signum in received:
                    if signum == signal.SIGHUP:
                        _reload(server)
                        continue
                    log.info("signal %d: shutting down", signum)
                    server.shutdown()
                    return

            async def serving(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                await server.serve(task_status=task_status)  # returns after the 1001 closes
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_signals)
            await nursery.start(serving)
            if supervisor is not None:
                server.on_settings_saved = supervisor.request_reload
                await supervisor.ready(server.node)
                nursery.start_soon(_until_gone, supervisor, server)


async def _until_gone(supervisor: SupervisorLink, server: Server) -> None:
    await supervisor.supervisor_gone()
    if not server.stopping:
        log.warning("the supervisor is gone: shutting down")
        server.shutdown()


def _reload(server: Server) -> None:
    if server.config_path is None:
        log.warning("SIGHUP: no --config file to reload")
        return
    try:
        server.reload_file(server.config_path)
    except cfg.ConfigError as exc:
        log.error("SIGHUP: %s: the old settings stay in force", exc)
    except Exception:  # a bug of ours: logged, and the server goes on with the old settings
        log.exception("SIGHUP: reloading failed; the old settings stay in force")


if __name__ == "__main__":
    sys.exit(main())
