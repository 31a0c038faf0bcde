"""The baseline: the obvious trio-websocket server, awaiting ``send_message`` per subscriber.

It speaks the subset of protocol.md the benchmarks use (hello, join, leave, send), with the
same frames as rtcore (encoded once per message by rtcore's codec), so the same load drives
both. Only the fan-out differs: one awaited send per subscriber.
"""

from __future__ import annotations

import time
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from rtcore.protocol import codec
from rtcore.protocol import frames as f


class NaiveServer:
    def __init__(self, presence: bool = True) -> None:
        self.channels: dict[str, dict[str, WebSocketConnection]] = {}
        self.seq = 0
        self.presence = presence
        """Off, joins announce nothing: the setup of a 5,000-member channel would otherwise
        take the naive server ~20 minutes (12.5M presence deliveries at ~10k/s)."""

    async def serve(
        self, host: str, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve_websocket(
            self.handler,
            host,
            port,
            None,
            task_status=task_status,
            message_queue_size=64,
            max_message_size=1 << 20,
        )

    # layout: longer than 40 lines because it is the naive baseline: the obvious server, written
    # as one handler on purpose (what a first implementation looks like is what it measures).
    async def handler(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        conn_id = f"c{id(ws):x}"[-12:]
        joined: set[str] = set()
        try:
            await ws.get_message()  # hello
            await ws.send_message(
                codec.encode(f.Welcome(1, conn_id, int(time.time() * 1000), 25000, {}))
            )
            while True:
                frame = codec.decode(await ws.get_message())
                if isinstance(frame, f.Join):
                    await self.fanout(frame.channel, "member_join", conn_id, ws, skip=ws)
                    self.channels.setdefault(frame.channel, {})[conn_id] = ws
                    joined.add(frame.channel)
                    await ws.send_message(codec.encode(f.Ok(frame.id, {"joined": True})))
                elif isinstance(frame, f.Leave):
                    self.channels.get(frame.channel, {}).pop(conn_id, None)
                    joined.discard(frame.channel)
                    await self.fanout(frame.channel, "member_leave", conn_id, ws, skip=ws)
                    await ws.send_message(codec.encode(f.Ok(frame.id, {"left": True})))
                elif isinstance(frame, f.Send):
                    self.seq += 1
                    msg = f.Msg(
                        frame.channel,
                        frame.event,
                        frame.data,
                        conn_id,
                        int(time.time() * 1000),
                        f"naive-{self.seq:x}",
                    )
                    data = codec.encode(msg)
                    members = self.channels.get(frame.channel, {})
                    for member in list(members.values()):
                        if member is not ws:
                            try:
                                await member.send_message(data)
                            except ConnectionClosed:
                                pass
                    await ws.send_message(
                        codec.encode(f.Ok(frame.id, {"recipients": len(members) - 1}))
                    )
        except ConnectionClosed:
            pass
        finally:
            for ch in joined:
                self.channels.get(ch, {}).pop(conn_id, None)

    async def fanout(self, channel: str, kind: str, conn_id: str, ws: Any, skip: Any) -> None:
        if not self.presence:
            return
        data = codec.encode(
            f.MemberEvent(
                kind,
                channel,
                {"id": conn_id, "user": None, "data": None},
                first=True if kind == "member_join" else None,
                last=True if kind == "member_leave" else None,
            )
        )
        for member in list(self.channels.get(channel, {}).values()):
            if member is not skip:
                try:
                    await member.send_message(data)
                except ConnectionClosed:
                    pass
