"""The Dockerfile and compose.yaml as written: the image installs the pinned dependencies, its
health check follows RTCORE_HEALTHZ_URL against a real server, and the compose file (Redis, two
rtcore nodes, a Caddy proxy) is consistent: it parses as YAML, its nodes' commands parse with
rtcore's own command line, their config passes check-config with the environment compose
gives them, and the proxy sends to both nodes. (Docker itself is not needed.)"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from rtcore import Config, Server
from rtcore import config as cfg
from rtcore.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text().splitlines()


def _instruction(name: str) -> list[str]:
    """The Dockerfile's ``name`` instructions, continuation lines joined."""
    text = "\n".join(DOCKERFILE).replace("\\\n", " ")
    return [line[len(name) + 1 :] for line in text.splitlines() if line.startswith(f"{name} ")]


def test_the_image_installs_the_pinned_dependencies() -> None:
    assert any("constraints.txt" in c for c in _instruction("COPY"))
    wheel = [r for r in _instruction("RUN") if "pip wheel" in r]
    assert wheel and "-c constraints.txt" in wheel[0]
    install = [r for r in _instruction("RUN") if "pip install" in r]
    assert install and "--no-index" in install[0]  # only the wheels built against the pins


async def test_the_health_check_asks_healthz_where_rtcore_healthz_url_says(
    nursery: trio.Nursery,
) -> None:
    (env,) = [e for e in _instruction("ENV") if e.startswith("RTCORE_HEALTHZ_URL=")]
    assert env == "RTCORE_HEALTHZ_URL=http://127.0.0.1:8766/healthz"  # the default api_port
    (check,) = _instruction("HEALTHCHECK")
    command = json.loads(check[check.index("CMD ") + 4 :])
    assert command[0] == "python"
    server = Server(Config(host="127.0.0.1", port=0, api_port=0))
    await nursery.start(server.serve)
    api_port = server.api_addresses[0][1]

    async def health(url: str) -> int:
        with trio.fail_after(30):
            done = await trio.run_process(
                [sys.executable, *command[1:]], env={"RTCORE_HEALTHZ_URL": url}, check=False,
                capture_stdout=True, capture_stderr=True,
            )  # fmt: skip
        return done.returncode

    assert await health(f"http://127.0.0.1:{api_port}/healthz") == 0
    assert await health(f"http://127.0.0.1:{api_port}/nope") != 0  # a 404 is unhealthy
    server.shutdown()


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_redis_two_rtcore_nodes_and_a_proxy() -> None:
    services = _compose()["services"]
    nodes = {n: s for n, s in services.items() if s.get("build") == "."}
    assert len(nodes) == 2, services.keys()
    assert services["redis"]["image"].startswith("redis:7")
    assert services["proxy"]["image"].startswith("caddy:")
    assert set(services["proxy"]["depends_on"]) == set(nodes)
    for node in nodes.values():
        assert node["depends_on"]["redis"]["condition"] == "service_healthy"
        assert node["environment"]["RTCORE_REDIS_URL"].startswith("redis://redis:")


@pytest.mark.parametrize("node", ["rtcore-1", "rtcore-2"])
def test_each_node_runs_a_command_and_config_that_rtcore_accepts(node: str) -> None:
    service = _compose()["services"][node]
    args = build_parser().parse_args(service["command"])
    source, target = next(
        v.split(":")[:2] for v in service["volumes"] if v.split(":")[1] == args.config
    )
    conf = cfg.load(ROOT / source, env=service["environment"])
    assert conf.broker.kind == "redis" and conf.broker.url == "redis://redis:6379/0"
    assert "0.0.0.0" in conf.hosts()  # reachable from the proxy's container
    healthz = service["environment"]["RTCORE_HEALTHZ_URL"]
    assert healthz == f"http://127.0.0.1:{conf.api_port}/healthz"
    caddyfile = (ROOT / "deploy/compose/Caddyfile").read_text()
    assert re.search(rf"reverse_proxy[^\n]*\b{node}:{conf.port}\b", caddyfile)
    assert f"health_port {conf.api_port}" in caddyfile
