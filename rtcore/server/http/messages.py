"""What the server-API port's handlers take and give: a parsed :class:`Request`, and a
:class:`Text` body for what is not an API object (the metrics, the settings page's files)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from rtcore import operations
from rtcore.protocol import RtcoreError, codec

MSGPACK = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


@attrs.frozen
class Text:
    """A response body that is not an API object: the metrics exposition, the settings
    page's files."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    """Further response headers (e.g. the settings page's Content-Security-Policy)."""


Payload = dict[str, Any] | Text
Answer = tuple[int, Payload]
"""A handler's answer: the status and the response object."""


class Request:
    """A parsed API request."""

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        """Raises:
        operations.ApiError: 400 ``bad_request`` for a target that is not a URL path (say,
            ``//[x``, which ``urlsplit`` refuses): the client's fault, not a failure here.
        """
        self.method = method
        try:
            parts = urlsplit(target)
        except ValueError as exc:
            raise operations.ApiError(
                400, "bad_request", f"malformed request target: {exc}"
            ) from None
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = headers
        self.body = body
        self.params: dict[str, str] = {}

    def json(self) -> dict[str, Any]:
        """The body as an object, from JSON or msgpack per Content-Type."""
        kind = self.headers.get("content-type", "application/json").split(";")[0].strip()
        if not self.body:
            return {}
        if kind != "application/json" and kind not in MSGPACK:
            raise operations.ApiError(
                415, "unsupported_media_type", "send application/json or application/msgpack"
            )
        try:
            value = json.loads(self.body) if kind == "application/json" else codec.unpack(self.body)
        except RecursionError:  # json's C parser raises it for deep nesting (it is bounded)
            raise operations.ApiError(
                400, "bad_request", "the body does not parse: nested too deeply"
            ) from None
        except (ValueError, RtcoreError) as exc:  # JSON errors (incl. >4300-digit integers)
            raise operations.ApiError(
                400, "bad_request", f"the body does not parse: {exc}"
            ) from None
        if not isinstance(value, dict):
            raise operations.ApiError(400, "bad_request", "the body must be an object")
        return value


def field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
    """``body[name]``, checked to be of ``kind`` (400 if it is not, or missing and required)."""
    if name not in body:
        if required:
            raise operations.ApiError(400, "bad_request", f"missing field {name!r}")
        return None
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise operations.ApiError(400, "bad_request", f"field {name!r} has the wrong type")
    return value


_UINT_PARAM = re.compile(r"[0-9]{1,16}")
"""Query integers: ASCII digits only (``str.isdigit`` also takes '²'), below 2**53 in practice."""
MAX_INT_PARAM = 2**53 - 1


def int_param(request: Request, name: str) -> int | None:
    """The query parameter ``name`` as an integer from 0 to 2**53-1 (400 otherwise)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _UINT_PARAM.fullmatch(raw) or int(raw) > MAX_INT_PARAM:
        raise operations.ApiError(
            400, "bad_request", f"query parameter {name!r} must be an integer from 0 to 2**53-1"
        )
    return int(raw)


def error(code: str, message: str) -> dict[str, Any]:
    """The body of a refusal or failure."""
    return {"code": code, "message": message}
