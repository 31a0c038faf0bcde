"""Server processes for the harness:
``python -m bench.servers {rtcore,rtcore-metrics,rtcore-history,rtcore-nofreeze,naive,raw}
--port P``.

``rtcore-metrics`` is rtcore with its Prometheus metrics on (and the server API they are served
on), ``rtcore`` without: the same invocation can compare the two. ``rtcore-history`` keeps
channel history on every channel (``history_size`` 1000, ``history_ttl`` 300 s): every
message is numbered and stored once (protocol.md §4.4.1). Each runs as ``rtcore serve`` does,
with the garbage collector's freezing on (rtcore.server.gc_policy); ``rtcore-nofreeze`` is
rtcore without it (an embedded server's default).

Prints ``PORT <n>`` once listening; runs until killed.
"""

from __future__ import annotations

import argparse
import sys

import attrs
import trio

import rtcore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "kind",
        choices=["rtcore", "rtcore-metrics", "rtcore-history", "rtcore-nofreeze", "naive", "raw"],
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--flush-window", type=float, default=0.002)
    parser.add_argument("--outbound-buffer", type=int, default=1024 * 1024)
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=600.0,
        help="rtcore's heartbeat_interval (default: past any run, for load that answers no pings)",
    )
    parser.add_argument(
        "--per-ip-limits",
        action="store_true",
        help="rtcore: keep the default per-IP connection limits (load from many 127.x IPs)",
    )
    parser.add_argument(
        "--no-presence-events",
        action="store_true",
        help="rtcore: every channel's rule has presence_events = false",
    )
    parser.add_argument(
        "--no-presence",
        action="store_true",
        help="naive: joins send no member_join (setup at large N)",
    )
    return parser


def ready(port: int) -> None:
    print(f"PORT {port}", flush=True)


def run_naive(args: argparse.Namespace) -> None:
    from bench.naive import NaiveServer

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            naive = NaiveServer(presence=not args.no_presence)
            server = await nursery.start(naive.serve, args.host, args.port)
            ready(server.port)

    trio.run(serve)


def rtcore_config(args: argparse.Namespace) -> rtcore.Config:
    """The default configuration, but for what a load generator on 127.0.0.1 needs."""
    from rtcore.config import AppConfig, ChannelRule

    # The Python load generator never answers pings (it only counts frames), so the heartbeat
    # is pushed past any run's length unless asked (--heartbeat: the C one answers them); and
    # all the load comes from 127.0.0.1, so the per-IP connection caps are lifted. Everything
    # else is the default configuration.
    per_ip = (
        {}
        if args.per_ip_limits
        else {
            "max_connections_per_ip": 1_000_000,
            "connect_rate_per_ip": 1e9,
            "connect_burst_per_ip": 1_000_000,
        }
    )
    limits = attrs.evolve(
        rtcore.Limits(),
        outbound_buffer_bytes=args.outbound_buffer,
        heartbeat_interval=args.heartbeat,
        **per_ip,
    )
    rules: tuple[ChannelRule, ...] = ()
    if args.kind == "rtcore-history":
        events = not args.no_presence_events
        rules = (ChannelRule("*", presence_events=events, history_size=1000, history_ttl=300),)
    elif args.no_presence_events:
        rules = (ChannelRule("*", presence_events=False),)
    api_port = 0 if args.kind == "rtcore-metrics" else None  # metrics: on the server-API port
    return rtcore.Config(
        host=args.host,
        port=args.port,
        limits=limits,
        api_port=api_port,
        apps=(AppConfig("default", channels=rules),),
    )


def run_rtcore(args: argparse.Namespace) -> None:
    config = rtcore_config(args)
    metrics = args.kind == "rtcore-metrics"

    async def serve() -> None:
        server = rtcore.Server(
            config,
            flush_window=args.flush_window,
            metrics=metrics,
            gc_freeze=args.kind != "rtcore-nofreeze",
        )
        async with trio.open_nursery() as nursery:
            (_, port), *_ = await nursery.start(server.serve)
            ready(port)

    trio.run(serve)


def main() -> None:
    args = build_parser().parse_args()
    if args.kind == "raw":
        from bench import rawfanout

        rawfanout.serve(args.host, args.port, ready)
    elif args.kind == "naive":
        run_naive(args)
    else:
        run_rtcore(args)


if __name__ == "__main__":
    sys.exit(main())
