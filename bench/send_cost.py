"""What a message costs the server in a small room, in process: ``python -m bench.send_cost``.

Microseconds of CPU (``time.process_time``) per ``send`` request through the whole sans-IO
path a chat message takes (``Session.receive``: decode, rate limits, the permission decision,
the value check, the ``msg`` frame encoded and WebSocket-framed once, queued to every other
member of the room, the ``ok`` reply encoded, framed and queued), with ``--rooms`` rooms of
``--room-size`` members and the room's first member sending (echo off, ~110-byte messages as
the ``rooms`` scenario's). After every ``--per-pass`` messages, the outboxes are emptied as a
flush pass takes them (the writes themselves are left out: they are the kernel's, and the
``rooms`` scenario counts them). No sockets, no trio: the figure is the per-message Python
work the ``rooms`` scenario's CPU per delivery is made of besides the writes and the reads,
steady enough on a busy machine to compare two trees (the median of ``--rounds``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import msgpack

from rtcore.config import AppConfig, Config
from rtcore.core.app import App, MessageIds
from rtcore.core.outbox import Pending
from rtcore.core.session.session import Session

WALL = 1_800_000_000.0
APP = AppConfig("bench")


def room_sessions(rooms: int, size: int) -> tuple[Pending, list[Session]]:
    """The app's members, joined to their rooms; returns each room's sender."""
    config = Config(apps=(APP,), default_app="bench", api_port=None)
    pending = Pending()
    apps = {"bench": App(APP, pending, MessageIds("b"))}
    senders = []
    for r in range(rooms):
        for i in range(size):
            s = Session(f"c{r}.{i}", apps, config, pending)
            assert (
                s.receive(msgpack.packb({"t": "hello", "v": 1, "echo": False}), 1.0, WALL) is None
            )
            join = {"t": "join", "id": 1, "ch": f"room.{r}"}
            assert s.receive(msgpack.packb(join), 1.0, WALL) is None
            if i == 0:
                senders.append(s)
    take(pending)
    return pending, senders


def take(pending: Pending) -> int:
    """Empty what a flush pass would write; returns how many frames it held."""
    outboxes, groups = pending.take()
    frames = 0
    for group in groups:
        for member in group.values():
            frames += len(member.outbox.items)
            member.outbox.items.clear()
    for outbox in outboxes:
        frames += len(outbox.items)
        outbox.items.clear()
    return frames


def one_round(rooms: int, size: int, messages: int, per_pass: int) -> tuple[float, int]:
    """CPU seconds of ``messages`` sends per room, and the frames queued."""
    pending, senders = room_sessions(rooms, size)
    requests = [
        msgpack.packb(
            {
                "t": "send",
                "id": k + 2,
                "ch": f"room.{r}",
                "ev": "lt",
                "data": {"t0": WALL, "p": "x" * 12},
            }
        )
        for k in range(messages)
        for r in range(rooms)
    ]
    order = [senders[r] for _ in range(messages) for r in range(rooms)]
    frames = 0
    started = time.process_time()
    for k, (s, frame) in enumerate(zip(order, requests, strict=True)):
        s.receive(frame, 2.0 + k * 1e-4, WALL)
        if k % per_pass == per_pass - 1:
            frames += take(pending)
    spent = time.process_time() - started
    return spent, frames + take(pending)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.send_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--room-size", type=int, default=50)
    parser.add_argument("-m", "--messages", type=int, default=500, help="messages per room")
    parser.add_argument("--per-pass", type=int, default=4, help="messages per flush pass")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown")
    args = parser.parse_args(argv)
    spent = []
    for _ in range(args.rounds):
        seconds, frames = one_round(args.rooms, args.room_size, args.messages, args.per_pass)
        sent = args.rooms * args.messages
        assert frames == sent * args.room_size, (frames, sent)  # each: its deliveries + its ok
        spent.append(seconds)
    sent = args.rooms * args.messages
    us = statistics.median(spent) / sent * 1e6
    print(
        f"\n## send cost: {args.rooms} rooms of {args.room_size}, {args.messages} messages a "
        f"room, {args.per_pass} a pass (median of {args.rounds} rounds)\n"
    )
    print("| µs CPU per message | µs CPU per delivery | rounds (µs per message) |")
    print("|---|---|---|")
    rounds = " / ".join(f"{s / sent * 1e6:.1f}" for s in spent)
    print(f"| {us:.1f} | {us / (args.room_size - 1):.3f} | {rounds} |")
    print(f"\nPython {sys.version.split()[0]}; in process, no sockets (see --help).")


if __name__ == "__main__":
    main()
