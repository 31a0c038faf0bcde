"""The harness's ceiling: a minimal fan-out server with no per-message Python work.

One thread, blocking sockets, wsproto for the handshake and for parsing the publisher's
frames. Each chunk the publisher sends becomes one joined buffer of pre-framed messages,
written to every subscriber with one ``sendall``. It skips everything rtcore does per request
(validation, replies in order, presence, budgets), so it is not a server: it measures how many
deliveries per second the load generator can count on this machine.
"""

from __future__ import annotations

import selectors
import socket
import time

import wsproto
from wsproto.events import AcceptConnection, BytesMessage, Request

from rtcore.protocol import codec, wsframe
from rtcore.protocol import frames as f


# layout: longer than 40 lines because it is the raw ceiling: one flat select loop with no call
# per event, the least work a fan-out can do on this machine.
def serve(host: str, port: int, ready: object) -> None:
    listener = socket.create_server((host, port), backlog=4096)
    ready(listener.getsockname()[1])  # type: ignore[operator]
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    channels: dict[str, list[socket.socket]] = {}
    conns: dict[socket.socket, wsproto.WSConnection] = {}
    parts: dict[socket.socket, list[bytes]] = {}
    seq = 0
    while True:
        for key, _ in sel.select():
            if key.data is None:
                sock, _ = listener.accept()
                conns[sock] = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
                sel.register(sock, selectors.EVENT_READ, sock)
                continue
            sock = key.data
            data = sock.recv(262144)
            ws = conns[sock]
            if not data:
                sel.unregister(sock)
                for members in channels.values():
                    if sock in members:
                        members.remove(sock)
                del conns[sock]
                sock.close()
                continue
            ws.receive_data(data)
            out: list[bytes] = []
            fanout: dict[str, list[bytes]] = {}
            for event in ws.events():
                if isinstance(event, Request):
                    sock.sendall(ws.send(AcceptConnection()))
                elif isinstance(event, BytesMessage):
                    parts.setdefault(sock, []).append(bytes(event.data))
                    if not event.message_finished:
                        continue
                    frame = codec.decode(b"".join(parts.pop(sock)))
                    if isinstance(frame, f.Hello):
                        out.append(codec.encode(f.Welcome(1, f"r{sock.fileno()}", 0, 25000, {})))
                    elif isinstance(frame, f.Join):
                        channels.setdefault(frame.channel, []).append(sock)
                        out.append(codec.encode(f.Ok(frame.id, {"joined": True})))
                    elif isinstance(frame, f.Send):
                        seq += 1
                        msg = f.Msg(
                            frame.channel,
                            frame.event,
                            frame.data,
                            "raw",
                            int(time.time() * 1000),
                            f"raw-{seq:x}",
                        )
                        fanout.setdefault(frame.channel, []).append(
                            wsframe.binary_frame(codec.encode(msg))
                        )
                        out.append(codec.encode(f.Ok(frame.id, {})))
            for channel, frames in fanout.items():
                joined = b"".join(frames)
                for member in channels.get(channel, []):
                    if member is not sock:
                        member.sendall(joined)
            if out:
                sock.sendall(b"".join(wsframe.binary_frame(o) for o in out))
