"""The sans-IO core: state machines that take frames and ``now`` and return what to do.

``session/`` (one connection's protocol: hello, requests, history), ``app`` (one tenant's
operations), ``members`` (the channel table), ``outbox``, ``presence`` (batched diffs),
``history`` (bounded streams, recovery), ``auth`` (credentials) and ``limits/`` (the token
bucket, limiter chains, admission budgets, flush policy). Nothing here imports trio, does I/O
or reads a clock (tests/unit/test_sans_io.py).
"""
