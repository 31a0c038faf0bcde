"""``rtcore serve --workers N``: N processes on one machine sharing the listening ports.

- :mod:`rtcore.workers.policy` — the supervisor's decisions, without processes or clocks:
  which settings allow workers, when a crashed worker is restarted and when to give up.
- :mod:`rtcore.workers.supervisor` — the parent process (trio): starts the workers, restarts
  crashed ones, passes SIGTERM, SIGINT and SIGHUP on. It serves no traffic itself.
- :mod:`rtcore.workers.link` — a worker's end of its socket pair with the supervisor.
"""
