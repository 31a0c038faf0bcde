"""Error codes and close codes of the wire protocol (protocol.md §6 and §7).

Every refusal the server can answer with is an :class:`ErrorCode`; every reason it can close
a connection for is a :class:`CloseCode`. protocol.md has the same two tables; a unit test
checks that the tables and these enums agree.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``err`` reply. The connection stays open."""

    BAD_REQUEST = "bad_request"
    """A field is missing or has the wrong type or range (the message names the field)."""
    UNKNOWN_TYPE = "unknown_type"
    """The frame's ``t`` is not a request type this protocol version knows."""
    INVALID_CHANNEL = "invalid_channel"
    """The channel name breaks the charset or length rule (protocol.md §4.1)."""
    INVALID_EVENT = "invalid_event"
    """The event name breaks the length rule (protocol.md §4.1)."""
    NOT_MEMBER = "not_member"
    """The operation needs the connection to have joined the channel first."""
    TOO_MANY_CHANNELS = "too_many_channels"
    """Joining would exceed the connection's channel limit."""
    PROFILE_TOO_LARGE = "profile_too_large"
    """The encoded profile exceeds the profile size limit."""
    INVALID_DATA = "invalid_data"
    """A profile or data value breaks the rules of protocol.md §4.3.1 (the message says where)."""
    INVALID_TOKEN = "invalid_token"
    """A ``refresh`` carried a token that does not verify or has expired."""
    INVALID_CHANNEL_TOKEN = "invalid_channel_token"
    """A channel token (``join``'s or a per-channel ``refresh``'s) does not verify, has
    expired, or is for another channel, user or app (protocol.md §4.4.2)."""
    FORBIDDEN = "forbidden"
    """The app's settings or channel rules do not allow this client the operation."""
    HISTORY_UNAVAILABLE = "history_unavailable"
    """The channel keeps no history (no channel rule gives it ``history_size``)."""
    UNRECOVERABLE_POSITION = "unrecoverable_position"
    """A ``history`` request's ``since`` is not in the channel's stream: another epoch, beyond
    its top, or (forward) older than the oldest message it holds."""
    RATE_LIMITED = "rate_limited"
    """A rate limiter refused the operation; the reply names it and says when to retry."""
    INTERNAL_ERROR = "internal_error"
    """The server failed while handling the request; it was logged."""
    HOOK_UNAVAILABLE = "hook_unavailable"
    """The app's backend hook (docs/hooks.md) did not answer in time, failed, answered
    something that is not a valid answer, or its circuit breaker is open. The request had no
    effect; retry later. (A hook that refuses answers with its own code instead.)"""
    BROKER_UNAVAILABLE = "broker_unavailable"
    """The answer is the cluster's and the broker (Redis) cannot give it now: it is
    unreachable or did not answer within ``[broker] command_timeout``. The request had no
    effect (a send was not published, a join made no member): retrying is safe."""
    OUTCOME_UNKNOWN = "outcome_unknown"
    """A send to a channel with history was on its way to Redis when Redis restarted, which
    lost the record of whether it was published: it may have reached some members."""


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (protocol.md §7)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    """The server is shutting down; reconnect to another node or later."""
    UNSUPPORTED_DATA = 1003
    """A text frame was sent; the protocol is binary msgpack only."""
    MESSAGE_TOO_BIG = 1009
    """A message exceeded ``max_message_bytes``."""
    INTERNAL_ERROR = 1011
    PROTOCOL_ERROR = 4000
    """A binary message that is not a msgpack map with a string ``t``."""
    HELLO_TIMEOUT = 4001
    """No valid ``hello`` within the handshake timeout."""
    HELLO_EXPECTED = 4002
    """The first frame was not a valid ``hello``."""
    UNSUPPORTED_VERSION = 4003
    """The ``hello`` asked for a protocol version the server does not speak."""
    DUPLICATE_HELLO = 4004
    """A second ``hello`` on an established connection."""
    UNKNOWN_APP = 4005
    """The ``hello`` named an app this server does not host."""
    APP_DISABLED = 4006
    """Realtime is disabled for the app."""
    SLOW_CONSUMER = 4008
    """The connection's outbound buffer exceeded its byte budget."""
    HEARTBEAT_TIMEOUT = 4009
    """The peer stopped answering pings."""
    API_KEY_MISSING = 4010
    API_KEY_INVALID = 4011
    """Unknown (or revoked) API key."""
    API_KEY_EXPIRED = 4012
    SESSION_MISSING = 4013
    """The app requires a signed-in user and the hello had no session token."""
    SESSION_INVALID = 4014
    """The session token does not verify (signature, algorithm, claims, another app's)."""
    SESSION_EXPIRED = 4015
    SESSION_ENDED = 4016
    """The app's backend ended (signed out, revoked) the connection's session."""
    DISCONNECTED = 4017
    """The app's backend disconnected this user or connection."""
    KEY_NOT_REALTIME = 4018
    """The API key may not open realtime connections (``realtime = false``: a server key)."""
    ORIGIN_NOT_ALLOWED = 4019
    """The handshake's Origin is not one of the API key's ``allowed_origins``."""
    TOO_MANY_CONNECTIONS = 4020
    """The per-IP or per-app connection limit is reached."""
    IP_NOT_ALLOWED = 4021
    """The client's address is not in the API key's ``allowed_ips``."""
    ORIGIN_MISSING = 4022
    """The API key has ``allowed_origins`` and the handshake carried no Origin header."""
    CONNECTION_RATE_LIMITED = 4029
    """Too many new connections from this IP address in a short time."""
    RATE_LIMIT_ABUSE = 4030
    """The client kept sending after being rate limited."""
    INBOUND_FLOOD = 4031
    """The client sent frames (pings, pongs and fragments included) or bytes faster than its
    inbound budget."""
    CONNECT_REFUSED = 4040
    """The app's connect hook refused the connection; the reason is ``<code>: <message>``
    with the backend's code (docs/hooks.md)."""
    HOOK_UNAVAILABLE = 4041
    """The app's connect hook could not answer (timeout, failure, breaker open): reconnect
    later, with backoff."""
