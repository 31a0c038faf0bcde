"""One connection's protocol logic (sans-IO): ``session`` (hello and requests), ``history``
(joins with history, recovery, history reads) and ``deferred`` (requests whose answer needs the
broker)."""
