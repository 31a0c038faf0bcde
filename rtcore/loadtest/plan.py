"""What a load test does, decided before it starts: the targets, who connects where and joins
what, who sends how much at what rate, and the bounds. Plain values, handed to each load
process (``agent``) and written into the JSON result.

Scenarios (docs/loadtest.md):

- ``connect``: N connections (hello only), opened at ``connect_rate`` a second, held
  ``hold`` seconds.
- ``fanout``: N subscribers spread over K channels (``lt.fanout.<k>``) and one publisher,
  joined to all K, sending ``messages`` messages round-robin over the channels at ``rate`` a
  second (0: all at once, a burst). Every subscriber of a channel gets each of its messages.
- ``chat``: N members in rooms of ``room_size`` (``lt.room.<r>``); each sends ``messages``
  messages at ``rate`` a second to its room; the room's other members get each.
- ``churn``: N members of one channel (``lt.churn``) and ``churners`` connections that join
  it, update their profile and leave it, in turn, ``messages`` operations each at ``rate``
  a second; every member gets one presence event per operation.
- ``storm``: N members of ``lt.storm``; then every connection is dropped at once and
  reconnects (jittered exponential backoff after a refusal, as the Python client does) until
  all are back.
"""

from __future__ import annotations

from typing import Any

import attrs

SCENARIOS = ("connect", "fanout", "chat", "churn", "storm")
EVENT = "lt"
"""The event name of the load test's messages (protocol.md §4.8)."""
CHURN_MARK = {"lt": "churn"}
"""The churners' profile: members count presence events of members with it."""


@attrs.frozen
class Target:
    """One server address: where to connect and what to ask for."""

    host: str
    port: int
    path: str = "/"
    host_header: str = "127.0.0.1"


@attrs.frozen
class Conn:
    """One connection of the plan."""

    index: int
    target: int
    """Index into ``Plan.targets``."""
    role: str
    """``member`` (joins ``channels``, counts what it receives), ``publisher`` (fanout),
    ``sender`` (chat: a member that also sends) or ``churner``."""
    channels: tuple[str, ...] = ()


@attrs.frozen
class Plan:
    scenario: str
    targets: tuple[Target, ...]
    conns: tuple[Conn, ...]
    hello: dict[str, Any]
    """Hello fields every connection sends (app, key, features, echo)."""
    tokens: tuple[str, ...] = ()
    """Session tokens; connection ``i`` sends ``tokens[i % len(tokens)]`` (none: no token)."""
    connect_rate: float = 500.0
    """New connections a second, over all load processes."""
    rate: float = 0.0
    """Messages (or churn operations) a second per sender; 0: all at once."""
    messages: int = 0
    """Messages (or churn operations) per sender."""
    size: int = 100
    """Bytes of padding in each message's data."""
    hold: float = 0.0
    """connect: seconds to hold the connections once all are up."""
    duration: float = 60.0
    """The whole run's bound, in seconds: the test stops then, finished or not."""
    workers: int = 1

    def share(self, worker: int) -> tuple[Conn, ...]:
        """The connections load process ``worker`` opens (the publisher is worker 0's)."""
        return tuple(c for c in self.conns if c.index % self.workers == worker)


def split_targets(n: int, targets: int) -> list[int]:
    """Which target each of ``n`` connections goes to: round-robin."""
    return [i % targets for i in range(n)]


def build_conns(
    scenario: str,
    n: int,
    targets: int,
    channels: int = 1,
    room_size: int = 10,
    churners: int = 1,
) -> tuple[Conn, ...]:
    """The connections of a scenario of ``n`` members (plus its publisher or churners)."""
    where = split_targets(n, targets)
    if scenario == "connect":
        return tuple(Conn(i, where[i], "member") for i in range(n))
    if scenario == "fanout":
        subs = [Conn(i, where[i], "member", (f"lt.fanout.{i % channels}",)) for i in range(n)]
        names = tuple(f"lt.fanout.{k}" for k in range(channels))
        return (Conn(n, 0, "publisher", names), *subs)
    if scenario == "chat":
        return tuple(Conn(i, where[i], "sender", (f"lt.room.{i // room_size}",)) for i in range(n))
    if scenario == "churn":
        members = [Conn(i, where[i], "member", ("lt.churn",)) for i in range(n)]
        extra = [Conn(n + k, k % targets, "churner", ("lt.churn",)) for k in range(churners)]
        return (*members, *extra)
    if scenario == "storm":
        return tuple(Conn(i, where[i], "member", ("lt.storm",)) for i in range(n))
    raise ValueError(f"unknown scenario {scenario!r} (of: {', '.join(SCENARIOS)})")


def receivers(conn: Conn) -> bool:
    """Whether ``conn`` counts deliveries (the publisher and churners do not)."""
    return conn.role in ("member", "sender")


def expected_deliveries(scenario: str, acked: dict[str, int], ready: dict[str, int]) -> int:
    """Deliveries owed, from what the senders had acked per channel and the receivers ready
    in each channel: a chat room's sender does not receive its own messages (echo off)."""
    if scenario == "chat":
        return sum(count * max(0, ready.get(ch, 0) - 1) for ch, count in acked.items())
    if scenario in ("fanout", "churn"):
        return sum(count * ready.get(ch, 0) for ch, count in acked.items())
    return 0
