"""The Redis engine. What is written to Redis, sans-IO: ``keys`` (the key layout),
``envelopes`` (what crosses pub/sub), ``scripts`` (the Lua scripts, ``lua/*.lua`` package
data). The trio side: ``broker``, with its ``presence``, ``history``, ``connect``,
``subscriber`` and ``ops`` parts."""
