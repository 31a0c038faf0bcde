"""The sans-IO wire protocol: frames, codec, codes and pre-framing (protocol.md). No trio here."""

from rtcore.protocol.codes import CloseCode, ErrorCode
from rtcore.protocol.errors import LocalProtocolError, RemoteProtocolError, RtcoreError
from rtcore.protocol.frames import PROTOCOL_VERSION

__all__ = [
    "PROTOCOL_VERSION",
    "CloseCode",
    "ErrorCode",
    "LocalProtocolError",
    "RemoteProtocolError",
    "RtcoreError",
]
