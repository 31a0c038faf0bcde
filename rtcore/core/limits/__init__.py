"""Budgets (sans-IO: ``now`` is passed in): limiter chains, admission of connections and
inbound traffic, and when the flusher's next pass runs."""
