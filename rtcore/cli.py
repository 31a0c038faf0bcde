"""``rtcore`` command line.

rtcore serve [--config FILE] [--host H] [--port P] [--api-host H] [--api-port P]
                                                    run the server (SIGHUP reloads FILE)
rtcore check-config FILE                            validate a config file
rtcore token --config FILE --app A --user U         mint a development session token
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from rtcore import auth, logs
from rtcore import config as cfg

if TYPE_CHECKING:
    from rtcore.server import Server

log = logging.getLogger("rtcore")


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``rtcore serve | check-config | token``."""
    parser = argparse.ArgumentParser(prog="rtcore", description="rtcore realtime server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (embedded defaults without --config)")
    serve.add_argument("--config", help="TOML config file (SIGHUP reloads it)")
    serve.add_argument("--host", help="listen address (overrides the config)")
    serve.add_argument("--port", type=int, help="listen port (overrides the config)")
    serve.add_argument("--api-host", help="server API address (overrides the config)")
    serve.add_argument("--api-port", type=int, help="server API port (overrides the config)")
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
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    token = sub.add_parser("token", help="mint a session token for development")
    token.add_argument("--config", required=True, help="the config holding the app's secret")
    token.add_argument("--app", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--session", help="session id claim")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (default 3600)")
    token.add_argument("--private-key", help="PEM file, for RS*/ES* apps")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve" and logs.level_name(args.log_level) not in logs.LEVELS:
        print(
            f"rtcore: --log-level {args.log_level!r} is not a level: "
            f"use one of {', '.join(logs.LEVELS)} (any case)",
            file=sys.stderr,
        )
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
    logs.configure(logs.level_name(args.log_level), args.log_format)
    try:
        trio.run(_serve, conf, args.config, overrides)
    except (OSError, BaseExceptionGroup) as exc:
        reason = _listen_failure(exc)
        if reason is None:
            raise
        print(f"rtcore: {reason}", file=sys.stderr)
        return 1
    return 0


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


async def _serve(conf: cfg.Config, path: str | None, overrides: dict[str, Any]) -> None:
    from rtcore.server import Server  # imported only when serving

    server = Server(conf)
    server.config_path = Path(path) if path is not None else None
    server.config_overrides = overrides
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

            nursery.start_soon(on_signals)
            await server.serve()  # returns after shutdown's going-away closes
            nursery.cancel_scope.cancel()


def _reload(server: Server) -> None:
    if server.config_path is None:
        log.warning("SIGHUP: no --config file to reload")
        return
    try:
        server.reload_file(server.config_path)
    except cfg.ConfigError as exc:
        log.error("SIGHUP: %s: the old settings stay in force", exc)


if __name__ == "__main__":
    sys.exit(main())
