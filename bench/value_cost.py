"""What checking a message's value costs, in process: ``python -m bench.value_cost --help``.

Decodes a ``send`` frame (``codec.decode_client_frame``) and checks its ``data``
(``values.check``, refusals included) for 60 KB messages of different shapes, and prints the
median time of each and its ratio to a 60 KB binary value's (issue 20: 60,000 empty arrays
cost ~150 ms, a 60 KB binary ~2.5 ms, with the rest of a message's path). Run it on a quiet
machine; no timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgpack

from rtcore.protocol import RemoteProtocolError, codec, values

SIZE = 60_000


def cases(size: int) -> dict[str, Any]:
    return {
        "60 KB binary": b"x" * size,
        "60K empty arrays (refused)": [[] for _ in range(size)],
        "60K small integers": [7] * size,
        "costliest accepted: 1,023 arrays + small integers": [[] for _ in range(1023)]
        + [7] * (size - 1023),
        "1,000 maps of 3 fields": [{"a": i, "b": "text", "c": 1.5} for i in range(1000)],
    }


def intake(raw: bytes) -> Callable[[], None]:
    def run() -> None:
        frame = codec.decode_client_frame(raw)
        try:
            values.check(getattr(frame, "data", None), "data")
        except RemoteProtocolError:
            pass

    return run


def median_seconds(run: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.value_cost", description=__doc__)
    parser.add_argument("--size", type=int, default=SIZE, help="elements per value")
    parser.add_argument("--repeat", type=int, default=50, help="runs per case (the median)")
    args = parser.parse_args(argv)
    rows = []
    for name, value in cases(args.size).items():
        raw = msgpack.packb({"t": "send", "id": 1, "ch": "c", "ev": "e", "data": value})
        rows.append((name, len(raw), median_seconds(intake(raw), args.repeat)))
    base = rows[0][2]
    print("| value | bytes | decode + check, ms | vs binary |\n|---|---|---|---|")
    for name, size, seconds in rows:
        print(f"| {name} | {size:,} | {seconds * 1000:.3f} | {seconds / base:,.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
