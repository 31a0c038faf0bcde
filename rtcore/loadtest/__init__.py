"""``rtcore loadtest``: load-test an rtcore deployment (docs/loadtest.md).

The load clients live here, and ``python -m bench`` drives the same ones: ``wire`` (just
enough WebSocket and protocol.md to drive a server fast), ``counting`` (bench's counting
subscribers and publisher), ``native`` (the C clients in ``csrc/``, compiled on demand), and
``agent`` (the loadtest's load process). Imports nothing heavy: matplotlib is imported only
by ``report`` when a report is drawn.
"""
