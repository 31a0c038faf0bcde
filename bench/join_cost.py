"""What private channels cost a join, in process: ``python -m bench.join_cost --help``.

Microseconds of server CPU (``time.process_time``) per join request, through the whole
sans-IO path a join takes on the server (``Session.receive``: decode, rate limits, the
permission decision, the channel table, presence, the ``ok`` reply), for three joins measured
in the same invocation:

- ``plain``: a channel whose rule says ``join = "anyone"``;
- ``channel token``: ``join = "token"``, the join carrying a channel token (an HS256 JWT the
  server verifies: signature, channel, user, expiry, ops, info);
- ``256 grants``: ``join = "granted"``, the connection's session token granting 256 patterns
  (200 exact names, 40 ``prefix*`` globs, 16 general globs), the channel matched by a
  general glob only, so every kind of pattern is consulted; each connection has its own
  compiled grants and joins a channel of its own (no cache hit).

Each connection joins one channel of its own, so presence fans out to one member and what is
measured is the join itself. Connections are opened (hello: session token verified, grants
compiled) before the clock starts; minting tokens is the backend's work and is not counted.
The modes take turns, ``--rounds`` times; the median round is shown, with the ratio to
``plain``. No sockets: the network path every join shares is left out, so the ratios are an
upper bound of what private channels add to a real join.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
import msgpack

from rtcore.config import AppConfig, ChannelRule, Config
from rtcore.core.app import App, MessageIds
from rtcore.core.auth import SessionSettings
from rtcore.core.outbox import Pending
from rtcore.core.session.session import Session

SECRET = "b" * 32
WALL = 1_800_000_000.0
MODES = ("plain", "channel token", "256 grants")
APP = AppConfig(
    "bench",
    session=SessionSettings(key=SECRET),
    channels=(
        ChannelRule("plain:*"),
        ChannelRule("room:*", join="token"),
        ChannelRule("team:*", join="granted"),
    ),
)


def grants() -> dict[str, list[str]]:
    """256 patterns; ``team:x:<anything>:v1`` matches only the general globs' last one."""
    claim = {f"team:exact:{i}": ["join"] for i in range(200)}
    claim.update({f"team:prefix:{i}:*": ["join"] for i in range(40)})
    claim.update({f"team:glob:{i}:*:v?": ["join"] for i in range(15)})
    claim["team:x:*:v?"] = ["join", "send"]
    return claim


def session_token(user: str, mode: str) -> str:
    claims: dict[str, object] = {"sub": user, "exp": WALL + 3600}
    if mode == "256 grants":
        claims["channels"] = grants()
    return jwt.encode(claims, SECRET, "HS256")


def join_frame(user: str, i: int, mode: str) -> bytes:
    if mode == "plain":
        return msgpack.packb({"t": "join", "id": 1, "ch": f"plain:{i}"})
    if mode == "channel token":
        channel = f"room:{i}"
        token = jwt.encode({"sub": user, "channel": channel, "exp": WALL + 600}, SECRET, "HS256")
        return msgpack.packb({"t": "join", "id": 1, "ch": channel, "token": token})
    return msgpack.packb({"t": "join", "id": 1, "ch": f"team:x:{i}:v1"})


def one_round(mode: str, joins: int) -> float:
    """CPU seconds of ``joins`` joins of ``mode``, each by a fresh connection."""
    config = Config(apps=(APP,), default_app="bench", api_port=None)
    pending = Pending()
    apps = {"bench": App(APP, pending, MessageIds("b"))}
    sessions: list[tuple[Session, bytes]] = []
    for i in range(joins):
        user = f"u{i}"
        s = Session(f"c{i}", apps, config, pending)
        hello = {"t": "hello", "v": 1, "token": session_token(user, mode)}
        assert s.receive(msgpack.packb(hello), 1.0, WALL) is None
        s.outbox.items.clear()
        sessions.append((s, join_frame(user, i, mode)))
    started = time.process_time()
    for s, frame in sessions:
        s.receive(frame, 2.0, WALL)
    spent = time.process_time() - started
    for s, _ in sessions:  # every join was admitted: an ok, not an err
        reply = msgpack.unpackb(s.outbox.items[-1][2:])  # (a short frame: a 2-byte header)
        assert reply["t"] == "ok", reply
    return spent


def measure(
    joins: int, rounds: int, run: Callable[[str, int], float] = one_round
) -> list[dict[str, Any]]:
    spent: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            spent[mode].append(run(mode, joins))
    base = statistics.median(spent["plain"])
    return [
        {
            "mode": mode,
            "us": statistics.median(spent[mode]) / joins * 1e6,
            "ratio": statistics.median(spent[mode]) / base,
        }
        for mode in MODES
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.join_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--joins", type=int, default=5000, help="joins per mode and round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; the median is shown")
    args = parser.parse_args(argv)
    rows = measure(args.joins, args.rounds)
    print(
        f"\n## join cost: µs of server CPU per join ({args.joins:,} joins x {args.rounds} rounds)\n"
    )
    print("| join | µs CPU per join | vs plain |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['us']:.1f} | {row['ratio']:.2f}x |")
    print(f"\nPython {sys.version.split()[0]}; in process, no sockets (see --help).")
    if args.joins < 1000:
        print("\nNOT MEANINGFUL as numbers: a smoke run (fewer than 1,000 joins).")


if __name__ == "__main__":
    main()
