"""Operating a live server: /metrics after a scripted session, /readyz, several servers."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from rtcore import CloseCode, Server
from rtcore.client import RequestError, open_client
from rtcore.config import AppConfig
from rtcore.core.limits.limiter import Rule
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url
from tests.integration.raw import Closed, RawClient

SECRET = "s" * 32
CHAT = AppConfig(
    "chat",
    server_secret=SECRET,
    rate_limits=(Rule("sends", 2, 3600, scope="connection", operations=frozenset({"send"})),),
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def api_url(server: Server, path: str) -> str:
    host, port = server.api_addresses[0]
    return f"http://{host}:{port}{path}"


async def get(server: Server, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(api_url(server, path), **kw)


async def scrape(server: Server) -> Samples:
    """Every sample of GET /metrics, keyed by (sample name, labels)."""
    response = await get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def wait_for(server: Server, name: str, target: float, **labels: str) -> Samples:
    """Scrape until ``name{labels}`` reaches ``target`` (closes finish asynchronously)."""
    while True:
        samples = await scrape(server)
        if value(samples, name, **labels) >= target:
            return samples
        await trio.sleep(0.01)


async def test_metrics_count_a_scripted_session(start_server: StartServer) -> None:
    server = await start_server(apps=(CHAT, "other"))
    with trio.fail_after(20):
        async with (
            open_client(url(server), app="chat") as a,
            open_client(url(server), app="chat") as b,
            open_client(url(server), app="chat") as c,
            open_client(url(server), app="other"),
        ):
            for client in (a, b, c):
                await client.join("room")
            await a.send("room", "hi", 1, echo=True)  # 3 recipients
            await b.send("room", "hi", 2, echo=False)  # 2 recipients
            await a.send("room", "hi", 3, echo=True)  # 3 recipients; a's second send
            with pytest.raises(RequestError) as limited:  # a's third: the limiter refuses
                await a.send("room", "hi", 4)
            assert limited.value.code == "rate_limited"
            with pytest.raises(RequestError) as not_member:
                await c.send("elsewhere", "hi", 5)
            assert not_member.value.code == "not_member"
            server.send("chat", "room", "news", None)  # the host app: 3 recipients
            # A round trip: the pass that writes its reply writes the host's message too.
            assert await c.join("room") is False
            unauthorized = await get(server, "/v1/apps/chat/stats")
            assert unauthorized.status_code == 401
            authorized = await get(
                server, "/v1/apps/chat/stats", headers={"authorization": f"Bearer {SECRET}"}
            )
            assert authorized.status_code == 200
            live = await scrape(server)
        raw = await RawClient.connect(server.addresses[0])
        await raw.send(t="join", id=1, ch="x")  # not a hello
        assert (await raw.closed()).code == CloseCode.HELLO_EXPECTED
        done = await wait_for(server, "rtcore_connections_closed_total", 1, code="4002")
        done = await wait_for(server, "rtcore_connections_closed_total", 4, code="1000")

    assert value(live, "rtcore_connections", app="chat") == 3
    assert value(live, "rtcore_connections", app="other") == 1
    assert value(live, "rtcore_channels", app="chat") == 1
    assert value(live, "rtcore_members", app="chat") == 3
    assert value(live, "rtcore_channels", app="other") == 0
    assert value(live, "rtcore_messages_in_total", app="chat") == 4
    assert value(live, "rtcore_deliveries_total", app="chat", kind="message") == 3 + 2 + 3 + 3
    assert value(live, "rtcore_messages_in_total", app="other") == 0
    assert value(live, "rtcore_refusals_total", app="chat", code="rate_limited") == 1
    assert value(live, "rtcore_refusals_total", app="chat", code="not_member") == 1
    assert value(live, "rtcore_rate_limited_total", app="chat", limiter="sends") == 1
    assert value(live, "rtcore_api_requests_total", status="401", code="unauthorized") == 1
    assert value(live, "rtcore_api_requests_total", status="200", code="ok") == 1
    assert value(live, "rtcore_broker_up", broker="MemoryBroker") == 1
    assert value(live, "rtcore_flush_pass_seconds_count") > 0
    assert value(live, "rtcore_publish_write_latency_seconds_count") > 0
    # every delivery queued so far was counted by one flush pass or another
    delivered = sum(
        value(live, "rtcore_deliveries_total", app="chat", kind=kind)
        for kind in ("message", "presence", "user_event")
    ) + value(live, "rtcore_deliveries_total", app="other", kind="presence")
    assert value(live, "rtcore_flush_pass_deliveries_sum") == delivered
    assert value(live, "rtcore_bytes_out_total") == value(live, "rtcore_flush_pass_bytes_sum") > 0

    assert value(done, "rtcore_connections", app="chat") == 0
    assert value(done, "rtcore_connections_accepted_total") == 5
    assert value(done, "rtcore_connections_closed_total", code="1000") == 4
    assert value(done, "rtcore_connections_closed_total", code="4002") == 1
    assert value(done, "rtcore_connection_duration_seconds_count") == 5


async def test_a_slow_consumer_close_is_counted(start_server: StartServer) -> None:
    server = await start_server(outbound_buffer_bytes=64 * 1024, close_timeout=1.0)
    with trio.fail_after(30):
        stalled = await RawClient.connect(server.addresses[0], rcvbuf=4096)
        await stalled.hello()
        await stalled.send(t="join", id=1, ch="feed")
        assert isinstance(await stalled.recv(), f.MemberEvent)
        for i in range(2000):  # 32 MB at most: far past the socket buffers and the budget
            server.send("default", "feed", "tick", {"i": i, "pad": b"x" * 16384})
            await trio.sleep(0.001)  # let the flusher run
            if server.flusher.slow_consumers:
                break
        samples = await wait_for(server, "rtcore_connections_closed_total", 1, code="4008")
        with pytest.raises(Closed):
            while True:
                await stalled.recv()
    assert value(samples, "rtcore_slow_consumers_total") == 1
    assert value(samples, "rtcore_messages_in_total", app="default") == i + 1


async def test_readyz_is_200_while_serving_and_503_while_shutting_down(
    start_server: StartServer,
) -> None:
    server = await start_server(close_timeout=10.0, shutdown_grace=10.0)
    with trio.fail_after(20):
        ready = await get(server, "/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        assert (await get(server, "/healthz")).status_code == 200
        raw = await RawClient.connect(server.addresses[0])
        await raw.hello()  # and then never answers the close: the shutdown waits for it
        server.shutdown()
        await trio.sleep(0.05)
        assert server.connections, "the shutdown should still be waiting for the client"
        shutting = await get(server, "/readyz")
        assert shutting.status_code == 503
        assert shutting.json() == {"code": "not_ready", "message": "shutting down"}
        assert (await get(server, "/healthz")).status_code == 200  # alive, not ready
        await raw.aclose()


async def test_metrics_and_readyz_take_only_get(server: Server) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            for path in ("/metrics", "/readyz"):
                response = await http.post(api_url(server, path))
                assert response.status_code == 405
                assert response.json()["code"] == "method_not_allowed"


async def test_healthz_takes_only_get_as_docs_api_says(server: Server) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            assert (await http.get(api_url(server, "/healthz"))).json() == {"ok": True}
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                response = await http.request(method, api_url(server, "/healthz"))
                assert response.status_code == 405, method
                assert response.json()["code"] == "method_not_allowed"


async def test_each_server_has_its_own_registry(start_server: StartServer) -> None:
    one = await start_server()
    two = await start_server()
    with trio.fail_after(10):
        async with open_client(url(one)), open_client(url(one)), open_client(url(two)):
            assert value(await scrape(one), "rtcore_connections", app="default") == 2
            assert value(await scrape(two), "rtcore_connections", app="default") == 1


async def test_metrics_can_be_turned_off(nursery: trio.Nursery) -> None:
    from rtcore import Config

    server = Server(Config(port=0, api_port=0), metrics=False)
    await nursery.start(server.serve)
    with trio.fail_after(10):
        response = await get(server, "/metrics")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    server.shutdown()


# -- the flusher reports once per pass ------------------------------------------------------------


class FakeConn:
    """What the flusher needs of a connection: a socket that takes everything."""

    def __init__(self) -> None:
        self.blocked = False
        self.closing = False
        self.counted = self.queued = 0
        self.written: list[bytes] = []
        self.id, self.remote = "c", "10.0.0.1"

    def write_now(self, data: bytes | memoryview) -> int:
        self.written.append(bytes(data))
        return len(data)


async def test_a_flush_pass_reports_its_batch_and_its_oldest_publications_age(
    autojump_clock: trio.abc.Clock,
) -> None:
    from rtcore.core.outbox import Outbox, Pending
    from rtcore.observe import FlushPass
    from rtcore.server.flusher import Flusher
    from tests.unit.test_observe import Recorder

    pending, recorder = Pending(), Recorder()
    flusher = Flusher(pending, budget=1 << 20, observer=recorder)
    one, two = Outbox(FakeConn()), Outbox(FakeConn())
    pending.push(one, b"a" * 10)
    pending.push(one, b"b" * 20)
    flusher.poke()  # the oldest publication: now
    await trio.sleep(0.5)
    pending.push(two, b"c" * 5)
    flusher.poke()  # not older
    await trio.sleep(0.25)
    flusher.flush()
    (kind, event), *rest = recorder.calls
    assert not rest and kind == "flush_pass"
    assert isinstance(event, FlushPass) and event.duration >= 0
    assert event.connections == 2
    assert event.latency == pytest.approx(0.75)
    stats = flusher.statistics
    assert (stats.passes, stats.connections) == (1, 2)
    flusher.flush()  # nothing pending: an empty pass, no latency
    assert recorder.calls[-1][1] == FlushPass(recorder.calls[-1][1].duration, 0, None)
    assert flusher.statistics.passes == 2


# -- logs -----------------------------------------------------------------------------------------


async def test_a_connection_failure_is_logged_once_with_its_traceback(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtcore.core.session.session import Session

    caplog.set_level(logging.INFO)
    server = await start_server()

    def broken(self: Session, data: bytes, now: float, wall: float) -> None:
        raise RuntimeError("a bug")

    with trio.fail_after(10):
        raw = await RawClient.connect(server.addresses[0])
        monkeypatch.setattr(Session, "receive", broken)
        await raw.send(t="hello", v=1)
        assert (await raw.closed()).code == CloseCode.INTERNAL_ERROR
        for _ in range(1000):  # the close is recorded once the connection's task ends
            if server.statistics.closed:
                break
            await trio.sleep(0.01)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1
    traceback = logging.Formatter().formatException(with_traceback[0].exc_info)  # type: ignore[arg-type]
    assert "RuntimeError: a bug" in traceback
    closes = [r for r in caplog.records if r.name == "rtcore.connections"]
    assert [(r.code, r.exc_info) for r in closes] == [(1011, None)]  # type: ignore[attr-defined]


class JsonLines:
    """Reads a process's JSON log lines; each must parse as one JSON object."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buffer = b""
        self.lines: list[dict[str, Any]] = []

    async def until(self, text: str) -> dict[str, Any]:
        """Read lines until one whose msg contains ``text``; returns it."""
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                record = json.loads(line)
                assert isinstance(record, dict)
                self.lines.append(record)
                if text in record["msg"]:
                    return record
            chunk = await self.stream.receive_some(65536)
            assert chunk, self.lines
            self.buffer += chunk


async def test_serve_with_json_logs_writes_connection_lines_as_json() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rtcore.cli", "serve", "--port", "0", "--api-port", "0"]
        + ["--log-format", "json", "--log-level", "debug"],
        stderr=subprocess.PIPE,
    )
    try:
        with trio.fail_after(20):
            assert proc.stderr is not None
            log = JsonLines(proc.stderr)
            started = await log.until("rtcore serving on")
            port = int(started["msg"].rsplit(":", 1)[1])
            async with open_client(f"ws://127.0.0.1:{port}/") as client:
                with pytest.raises(RequestError):
                    await client.join("bad name!")
            opened = await log.until("open")
            refused = await log.until("join refused")
            closed = await log.until("closed")
            proc.send_signal(signal.SIGTERM)
            stopped = await log.until("rtcore stopped")
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert {"ts", "level", "logger", "msg"} <= started.keys()
    assert opened["level"] == "INFO" and opened["app"] == "default"
    assert opened["remote"] == "127.0.0.1"
    assert refused["level"] == "DEBUG" and refused["code"] == "invalid_channel"
    assert refused["conn"] == opened["conn"]
    assert closed["conn"] == opened["conn"]
    assert closed["code"] == 1000 and closed["app"] == "default"
    assert isinstance(closed["duration"], float) and closed["duration"] >= 0
    assert stopped["logger"] == "rtcore.server"


@pytest.mark.parametrize("level", ["loud", "Verbose"])
def test_a_bad_log_level_is_one_clear_error_and_exit_2(level: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rtcore.cli", "serve", "--log-level", level],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()  # one clear line, not argparse's usage too
    assert line.startswith(f"rtcore: --log-level {level!r} is not a level")
    assert "DEBUG" in line and "CRITICAL" in line


class DownBroker:
    """A networked broker that has lost its backend (the hook a Redis broker fills)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def register(self, app: str, table: Any) -> None:
        self.inner.register(app, table)

    def publish(self, publication: Any) -> int:
        return int(self.inner.publish(publication))

    def health(self) -> str | None:
        return "redis at 127.0.0.1:6379: connection refused"


async def test_readyz_and_broker_up_report_an_unreachable_broker(server: Server) -> None:
    with trio.fail_after(10):
        assert value(await scrape(server), "rtcore_broker_up", broker="MemoryBroker") == 1
        server.broker = DownBroker(server.broker)  # type: ignore[assignment]
        down = await get(server, "/readyz")
        assert down.status_code == 503
        assert down.json() == {
            "code": "not_ready",
            "message": "broker unavailable: redis at 127.0.0.1:6379: connection refused",
        }
        assert value(await scrape(server), "rtcore_broker_up", broker="DownBroker") == 0


def test_a_server_that_is_not_listening_yet_is_not_ready() -> None:
    from rtcore import Config
    from rtcore.server.http.operating import readiness

    server = Server(Config(port=0, api_port=0))
    assert readiness(server) == "not listening yet"
    server.shutdown()
    assert readiness(server) == "shutting down"


async def test_an_embedders_observer_hears_connections_and_passes(nursery: trio.Nursery) -> None:
    from rtcore import Config
    from rtcore.observe import Closed as ClosedEvent
    from rtcore.observe import Connected
    from tests.unit.test_observe import Recorder

    recorder = Recorder()
    server = Server(Config(host="127.0.0.1", port=0, api_port=None), observer=recorder)
    await nursery.start(server.serve)
    with trio.fail_after(10):
        async with open_client(url(server)) as client:
            await client.join("room")
        for _ in range(1000):  # the close is reported once the connection's task ends
            if any(call[0] == "closed" for call in recorder.calls):
                break
            await trio.sleep(0.01)
    server.shutdown()
    kinds = [call[0] for call in recorder.calls]
    assert kinds.count("connected") == 1 and kinds.count("closed") == 1
    assert "flush_pass" in kinds
    (opened,) = [c[1] for c in recorder.calls if c[0] == "connected"]
    (ended,) = [c[1] for c in recorder.calls if c[0] == "closed"]
    assert isinstance(opened, Connected) and isinstance(ended, ClosedEvent)
    assert opened.conn == ended.conn == client.id
    assert (opened.app, ended.app, ended.code) == ("default", "default", 1000)
    assert ended.duration >= 0
    assert server.metrics is None  # no server API, so no metrics by default


@pytest.mark.parametrize("admin", [False, True])
async def test_start_up_names_the_demo_url_and_the_settings_page(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, admin: bool
) -> None:
    caplog.set_level(logging.INFO, logger="rtcore.server")
    config = {"admin_secret": "an-admin-secret-of-at-least-32-characters"} if admin else {}
    server = await start_server(config=config)
    (line,) = [r.getMessage() for r in caplog.records if "demo chat" in r.getMessage()]
    host, port = server.addresses[0]
    api_host, api_port = server.api_addresses[0]
    assert line.startswith(f"the demo chat: http://{host}:{port}/; ")
    if admin:
        assert line.endswith(f"the settings page: http://{api_host}:{api_port}/admin")
    else:
        assert line.endswith("the settings page is off (set server.admin_secret_env to turn it on)")
