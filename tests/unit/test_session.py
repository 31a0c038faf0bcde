"""Session logic without any I/O: hello, every request, every refusal, presence and echo."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from rtcore.config import AppConfig, Config, Limits
from rtcore.core.app import App, MessageIds
from rtcore.core.outbox import Pending
from rtcore.core.session.session import Session
from rtcore.protocol import CloseCode, ErrorCode, codec
from rtcore.protocol import frames as f
from rtcore.protocol.close import Close
from tests.helpers import frames_of

NOW = 1_700_000_000.0
"""Wall-clock time (Unix seconds) in these tests."""
MONO = 5_000.0
"""Monotonic time in these tests: deliberately far from NOW, so a mixed-up clock shows."""


class World:
    """A server's core without a server: apps, pending record, sessions."""

    def __init__(
        self, limits: Limits | None = None, apps: tuple[str | AppConfig, ...] = ("default",)
    ) -> None:
        settings = tuple(AppConfig(a) if isinstance(a, str) else a for a in apps)
        self.config = Config(limits=limits or Limits(), apps=settings, default_app=settings[0].name)
        self.pending = Pending()
        ids = MessageIds("n1")
        self.apps = {a.name: App(a, self.pending, ids) for a in self.config.apps}
        self.count = 0

    def session(self, hello: dict[str, Any] | None = None, remote: str = "10.0.0.1") -> Session:
        self.count += 1
        s = Session(f"c{self.count}", self.apps, self.config, self.pending, remote=remote)
        assert s.receive(msgpack.packb({"t": "hello", "v": 1, **(hello or {})}), MONO, NOW) is None
        assert isinstance(take(s)[0], f.Welcome)
        return s


def take(s: Session) -> list[Any]:
    frames = frames_of(s.outbox.items)
    s.outbox.items.clear()
    return frames


def req(s: Session, **obj: Any) -> Any:
    """Send one request; return its reply, after any frames queued before it."""
    assert s.receive(msgpack.packb(obj), MONO, NOW) is None
    frames = take(s)
    assert isinstance(frames[-1], f.Ok | f.Err)
    return frames[-1]


def ok(s: Session, **obj: Any) -> Any:
    reply = req(s, **obj)
    assert isinstance(reply, f.Ok), reply
    return reply.data


def err(s: Session, code: ErrorCode, **obj: Any) -> f.Err:
    reply = req(s, **obj)
    assert isinstance(reply, f.Err), reply
    assert reply.code == code.value
    assert reply.id == obj.get("id")
    return reply


# -- hello ------------------------------------------------------------------------------------


def hello_close(world: World, data: bytes) -> Close | None:
    return Session("x", world.apps, world.config, world.pending).receive(data, MONO, NOW)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (msgpack.packb({"t": "join", "id": 1, "ch": "a"}), CloseCode.HELLO_EXPECTED),
        (msgpack.packb({"t": "hello"}), CloseCode.HELLO_EXPECTED),
        (msgpack.packb({"t": "hello", "v": 1, "echo": 3}), CloseCode.HELLO_EXPECTED),
        (msgpack.packb({"t": "nope", "v": 1}), CloseCode.HELLO_EXPECTED),
        (msgpack.packb({"t": "hello", "v": 2}), CloseCode.UNSUPPORTED_VERSION),
        (msgpack.packb({"t": "hello", "v": 1, "app": "other"}), CloseCode.UNKNOWN_APP),
        (msgpack.packb({"t": "hello", "v": 1, "profile": "x" * 5000}), CloseCode.HELLO_EXPECTED),
        (b"\x93\x01\x02\x03", CloseCode.PROTOCOL_ERROR),
    ],
)
def test_a_connection_without_a_valid_hello_is_closed(data: bytes, code: CloseCode) -> None:
    close = hello_close(World(), data)
    assert close is not None and close.code == code and close.reason


def test_welcome_carries_connection_id_time_and_limits() -> None:
    world = World(Limits(max_channels=3))
    s = Session("abc", world.apps, world.config, world.pending)
    assert s.receive(msgpack.packb({"t": "hello", "v": 1}), MONO, NOW) is None
    (welcome,) = take(s)
    assert welcome.conn == "abc" and welcome.time == int(NOW * 1000)
    assert welcome.limits["max_channels"] == 3 and welcome.heartbeat == 25000


def test_a_second_hello_closes_the_connection() -> None:
    s = World().session()
    close = s.receive(msgpack.packb({"t": "hello", "v": 1}), MONO, NOW)
    assert close == Close(CloseCode.DUPLICATE_HELLO, "hello was already received")


def test_apps_are_isolated() -> None:
    world = World(apps=("one", "two"))
    a, b = world.session({"app": "one"}), world.session({"app": "two"})
    ok(a, t="join", id=1, ch="room")
    ok(b, t="join", id=1, ch="room")
    take(a)
    assert ok(b, t="send", id=2, ch="room", ev="e", data=1)["recipients"] == 1
    assert ok(b, t="broadcast", id=3, ev="e")["recipients"] == 1
    assert take(a) == []
    assert [m["id"] for m in ok(a, t="members", id=4, ch="room")["members"]] == [a.conn_id]


# -- requests ---------------------------------------------------------------------------------


def test_requests_that_break_rules_get_coded_errors_and_the_connection_stays() -> None:
    world = World(Limits(max_channels=1, max_profile_bytes=16, max_members_page=5))
    s = world.session()
    err(s, ErrorCode.UNKNOWN_TYPE, t="teleport", id=1)
    err(s, ErrorCode.BAD_REQUEST, t="join", id=2, ch=5)
    err(s, ErrorCode.INVALID_CHANNEL, t="join", id=3, ch="has space")
    err(s, ErrorCode.INVALID_CHANNEL, t="join", id=4, ch="x" * 129)
    err(s, ErrorCode.INVALID_CHANNEL, t="join", id=5, ch="")
    assert ok(s, t="join", id=6, ch="x" * 128) == {"joined": True}
    err(s, ErrorCode.TOO_MANY_CHANNELS, t="join", id=7, ch="other")
    err(s, ErrorCode.NOT_MEMBER, t="send", id=8, ch="other", ev="e")
    err(s, ErrorCode.INVALID_EVENT, t="send", id=9, ch="x" * 128, ev="")
    err(s, ErrorCode.INVALID_EVENT, t="broadcast", id=10, ev="e" * 129)
    err(s, ErrorCode.PROFILE_TOO_LARGE, t="profile", id=11, data="y" * 20)
    err(s, ErrorCode.BAD_REQUEST, t="members", id=12, ch="a", limit=6)
    err(s, ErrorCode.BAD_REQUEST, t="members", id=13, ch="a", limit=0)
    reply = req(s, t="join", ch="a")  # no id: the reply says so with id nil
    assert isinstance(reply, f.Err) and reply.id is None and reply.code == "bad_request"
    assert ok(s, t="broadcast", id=14, ev="still-served")["recipients"] == 1


def test_join_is_idempotent_and_leave_of_a_non_member_says_so() -> None:
    s = World().session()
    assert ok(s, t="join", id=1, ch="a", echo=False) == {"joined": True}
    assert ok(s, t="join", id=2, ch="a") == {"joined": False}
    assert ok(s, t="leave", id=3, ch="a", echo=False) == {"left": True}
    assert ok(s, t="leave", id=4, ch="a") == {"left": False}


def test_presence_events_carry_member_and_first_last_per_user() -> None:
    world = World()
    watcher = world.session()
    ok(watcher, t="join", id=1, ch="a")
    tab1 = world.session({"profile": {"n": 1}})
    tab2 = world.session({"profile": {"n": 2}})
    for s in (tab1, tab2):  # same user on two tabs
        s.member.user = "alice"  # type: ignore[union-attr]
    ok(tab1, t="join", id=1, ch="a")
    ok(tab2, t="join", id=1, ch="a")
    joins = take(watcher)
    assert [(e.kind, e.member["id"], e.first) for e in joins] == [
        ("member_join", tab1.conn_id, True),
        ("member_join", tab2.conn_id, False),
    ]
    assert joins[0].member == {"id": tab1.conn_id, "user": "alice", "data": {"n": 1}}
    ok(tab2, t="profile", id=2, data={"n": 22})
    (update,) = take(watcher)
    assert update.kind == "member_update" and update.member["data"] == {"n": 22}
    ok(tab1, t="leave", id=3, ch="a")
    tab2.disconnected()
    leaves = take(watcher)
    assert [(e.kind, e.member["id"], e.last) for e in leaves] == [
        ("member_leave", tab1.conn_id, False),
        ("member_leave", tab2.conn_id, True),
    ]


def test_echo_defaults_to_the_hello_option_and_can_be_overridden_per_call() -> None:
    world = World()
    quiet = world.session({"echo": False})
    loud = world.session()
    ok(quiet, t="join", id=1, ch="a")
    ok(loud, t="join", id=1, ch="a")
    take(quiet)
    take(loud)

    def send(s: Session, data: int, **echo: bool) -> None:
        assert (
            s.receive(
                msgpack.packb(
                    {"t": "send", "id": data, "ch": "a", "ev": "e", "data": data, **echo}
                ),
                MONO,
                NOW,
            )
            is None
        )

    send(quiet, 1)  # quiet's default: no echo
    send(quiet, 2, echo=True)  # overridden
    send(loud, 3)  # loud's default: echo
    send(loud, 4, echo=False)  # overridden
    assert [m.data for m in take(quiet) if isinstance(m, f.Msg)] == [2, 3, 4]
    assert [m.data for m in take(loud) if isinstance(m, f.Msg)] == [1, 2, 3]


def test_a_send_reaches_members_once_with_sender_timestamp_and_unique_id() -> None:
    world = World()
    a, b, outsider = world.session(), world.session(), world.session()
    ok(a, t="join", id=1, ch="a")
    ok(b, t="join", id=1, ch="a")
    take(a)
    r1 = ok(a, t="send", id=2, ch="a", ev="chat", data={"x": 1})
    r2 = ok(a, t="send", id=3, ch="a", ev="chat", data={"x": 2}, echo=False)
    assert r1["recipients"] == 2 and r2["recipients"] == 1 and r1["mid"] != r2["mid"]
    msgs = [m for m in take(b) if isinstance(m, f.Msg)]
    assert [(m.channel, m.event, m.data, m.sender, m.ts) for m in msgs] == [
        ("a", "chat", {"x": 1}, a.conn_id, int(NOW * 1000)),
        ("a", "chat", {"x": 2}, a.conn_id, int(NOW * 1000)),
    ]
    assert [m.mid for m in msgs] == [r1["mid"], r2["mid"]]
    assert take(outsider) == []


def test_broadcast_reaches_every_connection_of_the_app() -> None:
    world = World()
    a, b, c = world.session(), world.session(), world.session()
    assert ok(a, t="broadcast", id=1, ev="news", data="hi", echo=False)["recipients"] == 2
    for s in (b, c):
        (m,) = take(s)
        assert (m.channel, m.event, m.data, m.sender) == (None, "news", "hi", a.conn_id)


def test_members_are_paged_in_join_order() -> None:
    world = World()
    sessions = [world.session({"profile": i}) for i in range(7)]
    for s in sessions:
        ok(s, t="join", id=1, ch="big", echo=False)
    seen, after = [], None
    while True:
        page = ok(
            sessions[0], t="members", id=2, ch="big", limit=3, **({"after": after} if after else {})
        )
        seen += [(m["id"], m["data"]) for m in page["members"]]
        after = page["next"]
        if after is None:
            break
    assert seen == [(s.conn_id, i) for i, s in enumerate(sessions)]


def test_disconnect_is_a_leave_from_every_channel_and_idempotent() -> None:
    world = World()
    a, b = world.session(), world.session()
    for ch in ("x", "y"):
        ok(a, t="join", id=1, ch=ch)
        ok(b, t="join", id=1, ch=ch)
    take(a)
    b.disconnected()
    b.disconnected()
    assert [(e.kind, e.channel) for e in take(a)] == [("member_leave", "x"), ("member_leave", "y")]
    assert world.apps["default"].table.everyone.keys() == {a.conn_id}


def test_codec_errors_never_escape_receive() -> None:
    s = World().session()
    for data in (b"", b"\xc1", msgpack.packb([]), codec.encode(f.Ok(1))):
        result = s.receive(data, MONO, NOW)
        assert result is None or result.code == CloseCode.PROTOCOL_ERROR
