"""The signature of hook and webhook requests (docs/hooks.md): ``X-Rtcore-Timestamp`` (Unix
seconds) and ``X-Rtcore-Signature: sha256=<hex HMAC-SHA256 of timestamp + "." + body>``."""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Rtcore-Timestamp"
SIGNATURE_HEADER = "X-Rtcore-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Rtcore-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, wall: float, body: bytes) -> dict[str, str]:
    """The headers of a request sent at ``wall`` (Unix seconds)."""
    timestamp = str(int(wall))
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: str, timestamp: str, body: bytes, given: str, wall: float, tolerance: float = 300
) -> bool:
    """Whether ``given`` signs ``body`` at ``timestamp``, within ``tolerance`` seconds of
    ``wall`` (what a receiver checks; rtcore's tests use it)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(wall - sent) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), given)
