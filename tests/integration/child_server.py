"""A server in a child process, for tests that need it alone under an open-files limit:

    python -m tests.integration.child_server CONFIG.toml NOFILE

Sets the soft RLIMIT_NOFILE to NOFILE, serves CONFIG (ports 0 allowed), logs to stderr and
prints one JSON line ``{"ws": [host, port], "api": [host, port]}`` on stdout once listening.
SIGTERM (or SIGINT) shuts it down gracefully.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import sys

import trio

from rtcore import Server
from rtcore.config import load


async def main(path: str) -> None:
    server = Server(load(path))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            print(json.dumps({"ws": server.addresses[0], "api": server.api_addresses[0]}))
            sys.stdout.flush()
            async for _ in signals:
                server.shutdown()
                break


if __name__ == "__main__":
    nofile = int(sys.argv[2])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    trio.run(main, sys.argv[1])
