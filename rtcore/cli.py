"""``rtcore`` command line: ``rtcore serve [--host --port --config]``, ``rtcore check-config``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import attrs
import trio

from rtcore import config as cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtcore", description="rtcore realtime server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (embedded defaults without --config)")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--host", help="listen address (overrides the config)")
    serve.add_argument("--port", type=int, help="listen port (overrides the config)")
    serve.add_argument("--log-level", default="INFO")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")
    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            conf = cfg.load(args.file)
            print(f"{args.file}: ok ({len(conf.apps)} apps)")
            return 0
        conf = cfg.load(args.config) if args.config else cfg.Config()
    except cfg.ConfigError as exc:
        print(f"rtcore: config error: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    conf = attrs.evolve(conf, **overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    trio.run(_serve, conf)
    return 0


async def _serve(conf: cfg.Config) -> None:
    from rtcore.server import Server

    server = Server(conf)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    logging.getLogger("rtcore").info("signal %d: shutting down", signum)
                    server.shutdown()
                    return

            nursery.start_soon(stop_on_signal)
            await server.serve()  # returns after shutdown's going-away closes
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
