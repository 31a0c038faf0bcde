"""The raw test client itself: it must behave as a WebSocket endpoint after a close."""

from __future__ import annotations

import trio
import trio.testing
import wsproto
from wsproto.events import AcceptConnection, CloseConnection, Request

from tests.integration.raw import RawClient


async def test_the_raw_client_answers_no_ping_after_its_close() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    client = RawClient(ours, answer_pings=True)  # type: ignore[arg-type]
    server = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    server.receive_data(client.ws.send(Request(host="x", target="/")))
    assert any(isinstance(e, Request) for e in server.events())
    client.ws.receive_data(server.send(AcceptConnection()))
    assert any(isinstance(e, AcceptConnection) for e in client.ws.events())
    with trio.fail_after(5):
        await client.close(1000, "done")
        server.receive_data(await theirs.receive_some(4096))
        (close,) = server.events()
        assert isinstance(close, CloseConnection)
        # a ping the server sent before it read our close, then its answer to the close
        await theirs.send_all(b"\x89\x02hb" + server.send(close.response()))
        assert (await client.closed()).code == 1000
        assert client.pings == 1
        await client.aclose()
        sent = await theirs.receive_some(4096)
    assert sent == b""  # nothing after our close: no pong, no second close
