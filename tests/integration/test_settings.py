"""Settings at run time: reload (in process and by SIGHUP), TLS, dev tokens, exposure warning."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rtcore import CloseCode, ConfigError, Server
from rtcore.client import HandshakeError, open_client
from rtcore.config import AppConfig, Config
from rtcore.core.auth import ApiKey
from rtcore.protocol import frames as f
from tests.integration.conftest import StartServer, url
from tests.integration.raw import RawClient

ROOT = Path(__file__).resolve().parents[2]


async def test_reload_applies_to_open_connections_and_refuses_bad_files(
    start_server: StartServer, tmp_path: Path
) -> None:
    keyed = AppConfig("a", api_keys=(ApiKey("k1"), ApiKey("k2")), api_key_required=True)
    server = await start_server(apps=(keyed, "b"))
    with trio.fail_after(15):
        on_k1 = await RawClient.connect(server.addresses[0])
        await on_k1.hello(app="a", key="k1")
        on_k2 = await RawClient.connect(server.addresses[0])
        await on_k2.hello(app="a", key="k2")
        on_b = await RawClient.connect(server.addresses[0])
        await on_b.hello(app="b")
        # revoke k1 (rotation): only its connections go
        server.reload(
            Config(
                host="127.0.0.1",
                port=0,
                apps=(
                    AppConfig("a", api_keys=(ApiKey("k2"),), api_key_required=True),
                    AppConfig("b"),
                ),
                default_app="a",
            )
        )
        assert (await on_k1.closed()).code == CloseCode.API_KEY_INVALID
        await on_k2.send(t="members", id=1, ch="x")
        assert isinstance(await on_k2.recv(), f.Ok)
        # a bad file changes nothing
        bad = tmp_path / "bad.toml"
        bad.write_text('[[apps]]\nname = "a"\nenabled = "no"\n')
        with pytest.raises(ConfigError, match="apps\\[0\\].enabled"):
            server.reload_file(bad)
        await on_b.send(t="members", id=1, ch="x")
        assert isinstance(await on_b.recv(), f.Ok)
        # disable b, remove nothing else
        server.reload(
            Config(
                host="127.0.0.1",
                port=0,
                apps=(
                    AppConfig("a", api_keys=(ApiKey("k2"),), api_key_required=True),
                    AppConfig("b", enabled=False),
                ),
                default_app="a",
            )
        )
        assert (await on_b.closed()).code == CloseCode.APP_DISABLED
        assert await closed_code(server, app="b") == CloseCode.APP_DISABLED
        await on_k2.send(t="members", id=2, ch="x")
        assert isinstance(await on_k2.recv(), f.Ok)


async def closed_code(server: Server, **hello: object) -> int:
    raw = await RawClient.connect(server.addresses[0])
    await raw.send(t="hello", v=1, **hello)
    return (await raw.closed()).code


CONFIG = """
[server]
port = 0
api_port = 0
[[apps]]
name = "a"
[[apps.api_keys]]
key_env = "TEST_KEY"
[apps.session]
secret_env = "TEST_SECRET"
"""


async def test_sighup_reloads_the_file_and_a_bad_file_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "rtcore.toml"
    path.write_text(CONFIG)
    env = {"TEST_KEY": "key-1", "TEST_SECRET": "s" * 32, "PATH": "/usr/bin:/bin"}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rtcore.cli", "serve", "--config", str(path)],
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    log = b""

    async def wait_log(pattern: bytes) -> re.Match[bytes]:
        nonlocal log
        assert proc.stderr is not None
        while (m := re.search(pattern, log)) is None:
            chunk = await proc.stderr.receive_some(4096)
            assert chunk, log
            log += chunk
        return m

    try:
        with trio.fail_after(20):
            port = int((await wait_log(rb"serving on 127\.0\.0\.1:(\d+)")).group(1))
            raw = await RawClient.connect(("127.0.0.1", port))
            assert isinstance(await raw.hello(key="key-1"), f.Welcome)
            path.write_text(CONFIG.replace('name = "a"', 'name = "a"\nenabled = false'))
            proc.send_signal(signal.SIGHUP)
            assert (await raw.closed()).code == CloseCode.APP_DISABLED
            path.write_text("[limits]\nmax_channels = -1\n")
            proc.send_signal(signal.SIGHUP)
            await wait_log(rb"limits.max_channels: must be a positive integer: the old settings")
            again = await RawClient.connect(("127.0.0.1", port))
            await again.send(t="hello", v=1, key="key-1")
            assert (await again.closed()).code == CloseCode.APP_DISABLED  # still the last good one
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_rtcore_token_mints_a_token_the_server_accepts(tmp_path: Path) -> None:
    path = tmp_path / "rtcore.toml"
    path.write_text(CONFIG)
    env = {"TEST_KEY": "key-1", "TEST_SECRET": "s" * 32, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtcore.cli",
            "token",
            "--config",
            str(path),
            "--app",
            "a",
            "--user",
            "ann",
            "--session",
            "s-1",
            "--ttl",
            "60",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()

    async def scenario() -> None:
        from rtcore import config as cfg

        server = Server(cfg.load(path, env=env))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            with trio.fail_after(10):
                raw = await RawClient.connect(server.addresses[0])
                welcome = await raw.hello(key="key-1", token=token)
                assert isinstance(welcome, f.Welcome) and welcome.user == "ann"
            server.shutdown()

    trio.run(scenario)


def self_signed(tmp_path: Path) -> tuple[str, str, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    trust = ssl.create_default_context(cafile=str(cert_path))
    return str(cert_path), str(key_path), trust


async def test_tls_serves_wss(start_server: StartServer, tmp_path: Path) -> None:
    cert, key, trust = self_signed(tmp_path)
    server = await start_server(config={"tls_cert": cert, "tls_key": key})
    host, port = server.addresses[0]
    with trio.fail_after(15):
        async with (
            open_client(f"wss://{host}:{port}/", ssl_context=trust) as a,
            open_client(f"wss://{host}:{port}/", ssl_context=trust) as b,
        ):
            await a.join("secure")
            await b.join("secure")
            payload = "x" * 60_000  # several TLS records, written by the drain task
            got = b.events()
            assert (await a.send("secure", "big", payload))["recipients"] == 2
            async for event in got:
                if isinstance(event, f.Msg):
                    assert event.data == payload
                    break
        # plain ws:// to the TLS port never gets a WebSocket
        with pytest.raises((trio.TooSlowError, OSError, HandshakeError)):
            async with open_client(url(server), reconnect=False, connect_timeout=2):
                pass


def test_serving_beyond_loopback_without_keys_is_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server(
        Config(
            api_port=None,
            apps=(
                AppConfig("open"),
                AppConfig("closed", api_keys=(ApiKey("k"),), api_key_required=True),
            ),
            default_app="open",
        )
    )
    server.addresses = [("127.0.0.1", 8765)]
    with caplog.at_level(logging.WARNING, logger="rtcore.server"):
        server._warn_if_exposed()
    assert not caplog.records
    server.addresses = [("0.0.0.0", 8765)]
    with caplog.at_level(logging.WARNING, logger="rtcore.server"):
        server._warn_if_exposed()
    (record,) = caplog.records
    assert "SECURITY" in record.getMessage() and "open" in record.getMessage()
    assert "closed" not in record.getMessage().split("app(s)")[1].split("require")[0]
