"""When the flusher's next pass runs: the batching window follows the load (sans-IO).

Theory of operation: a flush pass costs roughly one ``write`` per pending connection,
whatever each write carries, so batching more deliveries into fewer passes saves CPU -- but
every delivery waits for its pass. A fixed window (2 ms, before this) adds up to the window
to every message at any load above idle. Instead the wait after a pass is proportional to
what that pass cost: ``wait = duration × (1 - duty) / duty``, capped at ``max_window``, so
the flusher spends at most about ``duty`` of the time flushing (the rest goes to reading,
handling requests and fan-out; messages that arrive during a pass are batched into the next
one anyway), and:

* idle or light load (passes of tens of microseconds): the next pass follows almost at once,
  and latency stays near the floor;
* heavy load (passes of a millisecond or more): the window widens, each pass carries more
  deliveries per write, up to ``max_window`` (where it was always).

A pass that starts more than the wait after the previous one ended runs at once.
"""

from __future__ import annotations

DEFAULT_DUTY = 0.8
"""The largest share of time the flusher spends in passes under sustained load: it waits a
quarter of what its previous pass took. (0.5, waiting as long as the pass took, measured
p50 1.6 ms against the raw ceiling's 0.57 at 100 × 2,000 msg/s; 0.8, 0.97 against 0.77:
bench/RESULTS.md.)"""


def flush_delay(
    now: float,
    last_end: float,
    last_duration: float,
    max_window: float,
    duty: float = DEFAULT_DUTY,
) -> float:
    """Seconds to wait, at ``now``, before the next flush pass.

    Args:
        now: the current time (monotonic seconds).
        last_end: when the previous pass ended.
        last_duration: how long the previous pass took.
        max_window: the longest the flusher may wait to batch (``flush_window``).
        duty: the share of time the flusher may spend in passes (0 < duty <= 1).
    """
    window = min(max_window, last_duration * (1.0 - duty) / duty)
    return max(0.0, last_end + window - now)
