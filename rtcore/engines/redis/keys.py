"""Where the Redis engine keeps things: the key layout (sans-IO; docs/scaling.md repeats it).

``P`` is ``[broker] prefix``. Every key of a channel and its pub/sub channel share the hash
tag ``{app:channel}``, so each script touches one Redis Cluster slot; the app-wide keys share
``{app}``::

    P:{app:ch}            pub/sub: the channel's messages and presence events
    P:{app:ch}:m          hash   connection id -> member (envelopes.member_blob: user, info)
    P:{app:ch}:o          zset   connection id -> join sequence number (listing order)
    P:{app:ch}:u          hash   user -> connections of that user in the channel
    P:{app:ch}:n          zset   node -> presence deadline (ms, Redis clock)
    P:{app:ch}:c:<node>   set    the connection ids that node holds in the channel
    P:{app:ch}:seq        string the channel's join sequence counter
    P:{app:ch}:h          stream the channel's history: entry id ``<offset>-0``, fields ``f``
                                 (the framed msg) and ``t`` (its time, ms)
    P:{app:ch}:hm         hash   the history's ``epoch`` and ``top``
    P:{app:ch}:p:<id>     string a history publish was applied ("<epoch> <offset>", for 5 min)
    P:{app}               pub/sub: broadcasts and control (user events, disconnects)
    P:{app}:revoked       zset   "user\\0session" -> until (ms, Unix time)
    P:{app:rl:<key>}:<rule>   hash   a shared token bucket {tokens, stamp} (lua/bucket.lua)
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Keys:
    """Key and pub/sub channel names under one prefix."""

    prefix: str

    def channel_tag(self, app: str, channel: str) -> str:
        return f"{self.prefix}:{{{app}:{channel}}}"

    def channel_pubsub(self, app: str, channel: str) -> bytes:
        return self.channel_tag(app, channel).encode()

    def presence(self, app: str, channel: str) -> list[bytes]:
        """The keys the presence scripts take, in their KEYS order: m, o, u, n, seq, pubsub."""
        tag = self.channel_tag(app, channel)
        return [f"{tag}:{suffix}".encode() for suffix in ("m", "o", "u", "n", "seq")] + [
            tag.encode()
        ]

    def history(self, app: str, channel: str) -> list[bytes]:
        """The keys the history scripts take, in their KEYS order: stream, meta, pubsub."""
        tag = self.channel_tag(app, channel)
        return [f"{tag}:h".encode(), f"{tag}:hm".encode(), tag.encode()]

    def published(self, app: str, channel: str, pid: str) -> bytes:
        """The marker a history publish's script sets when it applies it (settling)."""
        return f"{self.channel_tag(app, channel)}:p:{pid}".encode()

    def app_pubsub(self, app: str) -> bytes:
        return f"{self.prefix}:{{{app}}}".encode()

    def revoked(self, app: str) -> bytes:
        return f"{self.prefix}:{{{app}}}:revoked".encode()

    def bucket(self, app: str, client_key: str, rule: str) -> bytes:
        """A shared token bucket: every rule of one client in one slot (hash tag)."""
        return f"{self.prefix}:{{{app}:rl:{client_key}}}:{rule}".encode()
