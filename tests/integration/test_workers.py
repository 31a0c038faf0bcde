"""``rtcore serve --workers 2`` as a user runs it: a supervisor process and two workers that
share the client and server-API ports (SO_REUSEPORT).

Which worker accepted a connection is read from the operating system, not from rtcore: the
server side of the connection is found in /proc/net/tcp(6) and its socket in the workers'
/proc/PID/fd. (Linux only, as SO_REUSEPORT's sharing of a port is.)

The broker is Redis (``redis_url``: a private redis-server), as ``--workers`` requires; what
crosses workers through it is tested with the broker, not here. Every test bounds its time
and stops every process it started, also when it fails.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import trio

from rtcore import CloseCode, Config, Server
from rtcore.cli import main
from rtcore.protocol.frames import Msg, Ok, Welcome
from rtcore.server import ListenError
from tests.integration.raw import RawClient
from tests.integration.redisd import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT sharing: Linux")

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
START = 60
"""Seconds for the workers to start (real processes on a shared 2-core machine)."""
SERVING = re.compile(r"worker (\d+) \(pid (\d+), node \w+\) serving")
SECRET = "a-server-secret-of-at-least-32-characters"


def config(redis_url: str, port: int, api_port: int, apps: str = "") -> str:
    return (
        f"[server]\nport = {port}\napi_port = {api_port}\n\n"
        f'[broker]\nkind = "redis"\nurl = "{redis_url}"\n\n'
        + (apps or f'[[apps]]\nname = "default"\nserver_secret = "{SECRET}"\n')
    )


class Supervised:
    """A running ``rtcore serve --workers N`` and its log."""

    def __init__(self, proc: trio.Process, log_path: Path, port: int, api_port: int) -> None:
        self.proc = proc
        self.log_path = log_path
        self.port = port
        self.api_port = api_port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def serving(self) -> dict[int, int]:
        """The pid of each worker index, as the supervisor last logged it serving."""
        return {int(i): int(pid) for i, pid in SERVING.findall(self.log())}

    async def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        """Wait until the log has ``count`` matches of ``pattern`` (the caller bounds it)."""
        while len(matches := list(re.finditer(pattern, self.log()))) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"the supervisor exited:\n{self.log()}")
            await trio.sleep(0.05)
        return matches

    async def all_serving(self, workers: int = 2) -> dict[int, int]:
        await self.wait_for(rf"all {workers} workers serving")
        return self.serving()


@asynccontextmanager
async def supervised(
    tmp_path: Path, conf: str, port: int, api_port: int, workers: int = 2
) -> AsyncIterator[Supervised]:
    """Start ``rtcore serve --config FILE --workers N``; on exit make sure it and every worker
    it started are gone (SIGTERM, then SIGKILL)."""
    path = tmp_path / "rtcore.toml"
    path.write_text(conf)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "rtcore.cli", "serve", "--config", str(path)]
            + ["--workers", str(workers)],
            stderr=log,
            cwd=ROOT,
        )
    running = Supervised(proc, log_path, port, api_port)
    try:
        yield running
    finally:
        with trio.move_on_after(30) as waiting:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await proc.wait()
        if waiting.cancelled_caught:
            proc.kill()
            await proc.wait()
        for pid in map(int, re.findall(r"started \(pid (\d+)\)", running.log())):
            if is_our_worker(pid, path):  # never a process that reused the pid
                os.kill(pid, signal.SIGKILL)


def is_our_worker(pid: int, config_path: Path) -> bool:
    """Whether ``pid`` is a worker serving ``config_path`` (its command line says so)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return alive(pid) and b"--supervisor-fd" in argv and str(config_path).encode() in argv


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _server_side_inode(client: tuple[str, int], server_port: int) -> int:
    """The inode of the server's socket for the connection from ``client`` (0: not accepted
    yet, or not found)."""
    want_local = f"0100007F:{server_port:04X}"
    want_remote = f"0100007F:{client[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want_local and fields[2] == want_remote:
            return int(fields[9])
    return 0


def _owner(inode: int, pids: set[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue  # gone meanwhile
        if stat and int(stat.rpartition(")")[2].split()[1]) == pid:
            found.add(int(entry.name))
    return found


async def served_by(
    sock: trio.socket.SocketType, server_port: int, pids: set[int], parent: int | None = None
) -> int:
    """Which of ``pids`` (or else of ``parent``'s children) holds the server side of
    ``sock``'s connection (the caller bounds the time; the connection must have been
    answered, so accepted)."""
    client = sock.getsockname()
    while True:
        inode = _server_side_inode(client, server_port)
        candidates = pids | (children(parent) if parent is not None else set())
        owner = _owner(inode, candidates) if inode else None
        if owner is not None:
            return owner
        await trio.sleep(0.02)


async def client_on(running: Supervised, pids: set[int] | None) -> tuple[RawClient, int]:
    """A client connected (hello answered) to the shared port, and the worker serving it:
    one of ``pids``, or (None) any child of the supervisor."""
    raw = await RawClient.connect(("127.0.0.1", running.port))
    assert isinstance(await raw.hello(), Welcome)
    parent = running.proc.pid if pids is None else None
    return raw, await served_by(raw.stream.socket, running.port, pids or set(), parent)


async def clients_on_every_worker(
    running: Supervised, pids: set[int], tries: int = 64
) -> dict[int, RawClient]:
    """One open client per worker in ``pids`` (connections beyond that are closed). The
    kernel spreads connections by a hash of their addresses, so 64 tries miss a worker of two
    with probability 2^-63."""
    found: dict[int, RawClient] = {}
    for _ in range(tries):
        raw, pid = await client_on(running, pids)
        if pid in found:
            await raw.aclose()
        else:
            found[pid] = raw
        if set(found) == pids:
            return found
    raise AssertionError(f"{tries} connections reached only workers {sorted(found)} of {pids}")


async def next_of(raw: RawClient, kind: type[T]) -> T:
    """The client's next frame of type ``kind`` (presence events before it are skipped)."""
    while not isinstance(frame := await raw.recv(), kind):
        pass
    return frame


async def api_served_by(running: Supervised, pids: set[int]) -> int:
    """Ask GET /healthz on the shared server-API port; the worker that answered."""
    stream = await trio.open_tcp_stream("127.0.0.1", running.api_port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = await stream.receive_some(4096)
            assert chunk, response
            response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response
        return await served_by(stream.socket, running.api_port, pids)


# -- the tests --------------------------------------------------------------------------------


async def test_two_workers_serve_the_client_port_and_the_api_port(
    tmp_path: Path, redis_url: str
) -> None:
    port, api_port = free_port(), free_port()
    async with supervised(tmp_path, config(redis_url, port, api_port), port, api_port) as running:
        with trio.fail_after(START):
            workers = await running.all_serving()
        pids = set(workers.values())
        assert len(pids) == 2 and running.proc.pid not in pids
        with trio.fail_after(60):
            clients = await clients_on_every_worker(running, pids)
            assert set(clients) == pids
            answered = {await api_served_by(running, pids) for _ in range(64)}
            assert answered == pids
            for raw in clients.values():
                await raw.aclose()


async def test_a_message_reaches_a_member_served_by_the_other_worker(
    tmp_path: Path, redis_url: str
) -> None:
    """The workers are nodes of one cluster (through Redis): which worker a client landed on
    does not matter."""
    port, api_port = free_port(), free_port()
    async with supervised(tmp_path, config(redis_url, port, api_port), port, api_port) as running:
        with trio.fail_after(START):
            workers = await running.all_serving()
        with trio.fail_after(60):
            one, two = (await clients_on_every_worker(running, set(workers.values()))).values()
            for raw in (one, two):
                await raw.send(t="join", id=1, ch="room")
                assert await next_of(raw, Ok) == Ok(1, {"joined": True})
            await one.send(t="send", id=2, ch="room", ev="chat", data={"text": "hi"})
            assert isinstance(await next_of(one, Ok), Ok)
            msg = await next_of(two, Msg)
            assert (msg.channel, msg.event, msg.data) == ("room", "chat", {"text": "hi"})
            for raw in (one, two):
                await raw.aclose()


async def test_a_killed_worker_is_restarted_and_the_port_serves_throughout(
    tmp_path: Path, redis_url: str
) -> None:
    port, api_port = free_port(), free_port()
    async with supervised(tmp_path, config(redis_url, port, api_port), port, api_port) as running:
        with trio.fail_after(START):
            workers = await running.all_serving()
        killed, survivor = workers[1], workers[2]
        os.kill(killed, signal.SIGKILL)
        with trio.fail_after(30):
            await running.wait_for(
                rf"worker 1 \(pid {killed}\) exited unasked \(killed by SIGKILL\): restarting"
            )
            for _ in range(8):  # the port serves while worker 1 is down (or restarting)
                raw, pid = await client_on(running, None)
                assert pid != killed and pid in children(running.proc.pid)
                await raw.aclose()
        with trio.fail_after(START):
            await running.wait_for(SERVING.pattern, count=3)
        restarted = running.serving()[1]
        assert restarted not in (killed, survivor) and not alive(killed)
        with trio.fail_after(60):
            clients = await clients_on_every_worker(running, {restarted, survivor})
            for raw in clients.values():
                await raw.aclose()


async def test_sigterm_stops_every_worker_gracefully_and_exits_0(
    tmp_path: Path, redis_url: str
) -> None:
    port, api_port = free_port(), free_port()
    async with supervised(tmp_path, config(redis_url, port, api_port), port, api_port) as running:
        with trio.fail_after(START):
            workers = await running.all_serving()
        with trio.fail_after(60):
            clients = await clients_on_every_worker(running, set(workers.values()))
        running.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):  # shutdown_grace 5 s + close_timeout 2 s + margin 5 s
            for raw in clients.values():
                assert (await raw.closed()).code == CloseCode.GOING_AWAY
            assert await running.proc.wait() == 0
        log = running.log()
        for index, pid in workers.items():
            assert f"worker {index} (pid {pid}) stopped (exit status 0)" in log, log
            assert not alive(pid)
        assert "all workers stopped (exit status 0)" in log


async def test_sighup_makes_every_worker_reload_the_file(tmp_path: Path, redis_url: str) -> None:
    port, api_port = free_port(), free_port()
    conf = config(redis_url, port, api_port)
    async with supervised(tmp_path, conf, port, api_port) as running:
        with trio.fail_after(START):
            workers = await running.all_serving()
        with trio.fail_after(60):
            clients = await clients_on_every_worker(running, set(workers.values()))
        (tmp_path / "rtcore.toml").write_text(conf + "enabled = false\n")
        running.proc.send_signal(signal.SIGHUP)
        with trio.fail_after(30):  # a disabled app's connections close: on both workers
            for raw in clients.values():
                assert (await raw.closed()).code == CloseCode.APP_DISABLED
        assert running.proc.poll() is None  # the supervisor goes on


async def test_a_change_saved_on_the_settings_page_reaches_every_worker(
    tmp_path: Path, redis_url: str
) -> None:
    """The page is served by whichever worker took the request; the supervisor has the others
    reload the file it saved."""
    port, api_port = free_port(), free_port()
    admin = "an-admin-secret-of-at-least-32-characters"
    conf = config(redis_url, port, api_port).replace(
        "[server]\n", f'[server]\nadmin_secret = "{admin}"\n'
    )
    async with supervised(tmp_path, conf, port, api_port) as running:
        with trio.fail_after(START):
            workers = await running.all_serving()
        with trio.fail_after(60):
            clients = await clients_on_every_worker(running, set(workers.values()))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
                auth = {"Authorization": f"Bearer {admin}"}
                version = (await http.get("/admin/api/state", headers=auth)).json()["version"]
                saved = await http.put(
                    "/admin/api/apps/default/settings",
                    json={"enabled": False, "version": version},
                    headers=auth,
                )
            assert saved.status_code == 200, saved.text
        with trio.fail_after(30):
            for raw in clients.values():
                assert (await raw.closed()).code == CloseCode.APP_DISABLED
        assert "saved the settings: the other workers reload them" in running.log()


async def test_concurrent_saves_on_two_workers_never_lose_an_acknowledged_change(
    tmp_path: Path, redis_url: str
) -> None:
    """Two saves from the same version of the file, sent at once (each to whichever worker
    the kernel picks): one is saved, the other refused as stale (409), never both "saved"
    with one change lost -- the version is the file's hash, checked under the file's lock."""
    port, api_port = free_port(), free_port()
    admin = "an-admin-secret-of-at-least-32-characters"
    conf = config(redis_url, port, api_port).replace(
        "[server]\n", f'[server]\nadmin_secret = "{admin}"\n'
    )
    auth = {"Authorization": f"Bearer {admin}"}
    async with supervised(tmp_path, conf, port, api_port) as running:
        with trio.fail_after(START):
            await running.all_serving()
        for round_ in range(6):
            with trio.fail_after(30):
                statuses: dict[str, int] = {}
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
                    version = (await http.get("/admin/api/state", headers=auth)).json()["version"]
                    async with trio.open_nursery() as nursery:
                        for name in (f"a{round_}", f"b{round_}"):
                            nursery.start_soon(save_limiter, http, auth, name, version, statuses)
            assert sorted(statuses.values()) == [200, 409], statuses
            (won,) = [name for name, status in statuses.items() if status == 200]
            assert f'name = "{won}"' in (tmp_path / "rtcore.toml").read_text()


async def save_limiter(
    http: httpx.AsyncClient, auth: dict[str, str], name: str, version: str, out: dict[str, int]
) -> None:
    change = {"rate_limits": [{"name": name, "rate": 5}], "version": version}
    response = await http.put("/admin/api/apps/default/settings", json=change, headers=auth)
    out[name] = response.status_code


async def test_the_supervisor_gone_the_workers_stop(tmp_path: Path, redis_url: str) -> None:
    port, api_port = free_port(), free_port()
    async with supervised(tmp_path, config(redis_url, port, api_port), port, api_port) as running:
        with trio.fail_after(START):
            workers = await running.all_serving()
        running.proc.kill()
        await running.proc.wait()
        with trio.fail_after(30):
            while True:  # polled: they are no children of this process
                config_path = tmp_path / "rtcore.toml"
                if not any(is_our_worker(pid, config_path) for pid in workers.values()):
                    break
                await trio.sleep(0.05)


async def test_a_worker_that_cannot_start_stops_everything_with_exit_1(
    tmp_path: Path, redis_url: str
) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    port, api_port = free_port(), free_port()
    conf = config(redis_url, port, api_port).replace(
        "[server]\n", '[server]\ntls_cert = "cert.pem"\ntls_key = "cert.pem"\n'
    )
    async with supervised(tmp_path, conf, port, api_port) as running:
        with trio.fail_after(START):
            assert await running.proc.wait() == 1
        log = running.log()
        assert re.search(r"exited unasked \(exit status 1\); it exited before serving", log), log
        assert "restarting" not in log


async def test_servers_with_reuse_port_share_both_ports_and_others_are_refused() -> None:
    """The Server option the workers use; without it, as before, a taken port is an error."""
    port, api_port = free_port(), free_port()
    conf = Config(port=port, api_port=api_port)
    sharing = [Server(conf, reuse_port=True), Server(conf, reuse_port=True)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for server in sharing:
                assert await nursery.start(server.serve) == [("127.0.0.1", port)]
                assert server.api_addresses == [("127.0.0.1", api_port)]
            with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
                await Server(conf).serve()
            for server in sharing:
                server.shutdown()


# -- refusals: one line on stderr, no process started ------------------------------------------


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("rtcore: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_workers_without_the_redis_broker_exit_2_saying_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--workers", "2"]) == 2  # the embedded default: memory
    line = one_line(capsys.readouterr().err)
    assert '--workers 2 needs [broker] kind = "redis"' in line and "'memory'" in line
    path = tmp_path / "memory.toml"
    path.write_text('[broker]\nkind = "memory"\n\n[[apps]]\nname = "default"\n')
    assert main(["serve", "--config", str(path), "--workers", "3"]) == 2
    assert '--workers 3 needs [broker] kind = "redis"' in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("count", ["0", "-1", "x", "1.5", "257"])
def test_a_bad_worker_count_exits_2(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--workers", count]) == 2
    assert f"--workers {count!r} is not a number of processes" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("flag", ["--port", "--api-port"])
def test_workers_refuse_port_0(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "redis.toml"
    path.write_text(config("redis://127.0.0.1:1/0", free_port(), free_port()))
    assert main(["serve", "--config", str(path), "--workers", "2", flag, "0"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "needs fixed ports" in line and ("api_port 0" if "api" in flag else "port 0") in line


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "another-workers-group"])
def test_workers_refuse_a_port_another_process_listens_on(
    reuse_port: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even a listener with SO_REUSEPORT (another ``--workers`` rtcore), which the workers'
    sockets would silently join, counts as taken."""
    with socket.socket() as busy:
        if reuse_port:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        path = tmp_path / "redis.toml"
        path.write_text(config("redis://127.0.0.1:1/0", taken, free_port()))
        assert main(["serve", "--config", str(path), "--workers", "2"]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"cannot listen on 127.0.0.1:{taken} (WebSocket)" in line and "another port" in line
