"""The Redis engine: ``protocol`` (what is written to Redis: keys, envelopes, scripts; sans-IO),
``broker`` (the trio side), with its ``presence``, ``history``, ``subscriber`` and ``ops``
parts."""
