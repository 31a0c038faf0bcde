"""Common mistakes get one clear line and an exit status, never a traceback (issue: friendly
errors). Each test runs ``rtcore.cli.main`` as the ``rtcore`` command would."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import rtcore
from rtcore.cli import main


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def one_line(err: str) -> str:
    """The one line of the error (start-up log lines may come before it), no traceback."""
    lines = [line for line in err.strip().splitlines() if line.startswith("rtcore: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("flag", ["--port", "--api-port"])
def test_a_busy_port_names_the_address_and_exits_1(
    flag: str, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "--api-port" if flag == "--port" else "--port"
    assert main(["serve", flag, str(busy_port), other, "0"]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line
    assert ("WebSocket" if flag == "--port" else "server API") in line
    assert "another port" in line


@pytest.mark.parametrize("busy", ["port", "api_port"])
def test_an_embedded_server_on_a_busy_port_raises_the_same_one_line(
    busy: str, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """``Server.serve`` raises one ListenError (an OSError, not an ExceptionGroup) whose text is
    the line ``rtcore serve`` prints, and leaves no listener open behind it."""
    free = {"port": _free_port(), "api_port": 0, busy: busy_port}
    flags = ["--port", str(free["port"]), "--api-port", str(free["api_port"])]
    assert main(["serve", *flags]) == 1
    printed = one_line(capsys.readouterr().err)

    async def embed() -> None:
        server = rtcore.Server(rtcore.Config(host="127.0.0.1", **free))
        async with trio.open_nursery() as nursery:
            with pytest.raises(rtcore.ListenError) as failed:
                await nursery.start(server.serve)
        assert printed == f"rtcore: {failed.value}"
        assert isinstance(failed.value, OSError) and failed.value.errno == errno.EADDRINUSE
        assert failed.value.__cause__ is None and failed.value.__suppress_context__

    trio.run(embed)
    if busy == "api_port":  # the client port it had bound first is closed again
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", free["port"]))
            sock.listen()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_config_reports_every_error_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[server]\nport = "x"\ncolour = 3\n\n[limits]\nmax_channels = -1\n\n'
        '[[apps]]\nname = "a b"\nenabled = "yes"\n\n'
        '[[apps.rate_limits]]\nname = "r"\nrate = 0\n\n'
        '[[apps]]\nname = "ok"\nmax_connections = 0\n'
    )
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("rtcore: config error: ") for line in lines), lines
    keys = sorted(line.removeprefix("rtcore: config error: ").split(":")[0] for line in lines)
    assert keys == sorted(
        [
            "server.colour",
            "server.port",
            "limits.max_channels",
            "apps[0].name",
            "apps[0].enabled",
            "apps[0].rate_limits[0].rate",
            "apps[1].max_connections",
        ]
    )


def test_check_config_gives_the_line_of_a_toml_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nport = 1\n[limits\n")
    assert main(["check-config", str(path)]) == 2
    assert "line 3" in one_line(capsys.readouterr().err)


SESSION_APP = '[[apps]]\nname = "chat"\n[apps.session]\nsecret = "' + "s" * 32 + '"\n'


def test_token_for_an_unknown_app_names_the_apps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rtcore.toml"
    path.write_text(SESSION_APP)
    assert main(["token", "--config", str(path), "--app", "nope", "--user", "u1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "no app 'nope'" in line and "chat" in line


def test_token_with_a_missing_key_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rtcore.toml"
    path.write_text(SESSION_APP)
    missing = tmp_path / "nope.pem"
    code = main(
        ["token", "--config", str(path), "--app", "chat", "--user", "u1"]
        + ["--private-key", str(missing)]
    )
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot read --private-key {missing}" in line


def test_a_missing_secret_file_in_the_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rtcore.toml"
    path.write_text('[[apps]]\nname = "chat"\nserver_secret_file = "gone.txt"\n')
    assert main(["check-config", str(path)]) == 2
    assert "apps[0].server_secret_file: cannot read 'gone.txt'" in one_line(capsys.readouterr().err)


def test_check_config_lists_every_bad_key_of_one_limiter_and_names_bad_operations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "limiter.toml"
    path.write_text(
        '[[apps]]\nname = "chat"\n\n[[apps.rate_limits]]\nname = "r"\nrate = 0\n'
        'per_seconds = -1\nburst = 0.5\nscope = "world"\noperations = ["join", "jion"]\n'
    )
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    where = "rtcore: config error: apps[0].rate_limits[0]"
    assert lines == [
        f"{where}.rate: must be a positive number",
        f"{where}.per_seconds: must be a positive number",
        f"{where}.burst: must be at least 1",
        f"{where}.scope: must be client or connection",
        f"{where}.operations: must be some of broadcast, history, join, members, profile, "
        "refresh, send ('jion' is not one)",
    ]
