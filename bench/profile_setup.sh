#!/bin/bash
# Sample the rtcore server process with py-spy while a bench scenario runs (bench/RESULTS.md,
# "Cheaper connection setup"). Needs py-spy in the environment (pip install py-spy).
#   bench/profile_setup.sh OUT joins -n 10000 --modes "events off"
#   python bench/setup_buckets.py OUT.raw CPU_MICROSECONDS_PER_CONNECTION
# Writes OUT.raw (py-spy's raw collapsed stacks) and OUT.bench.txt (the bench's output).
set -e
out=$1; shift
cd "$(dirname "$0")/.."
python -m bench --runs 1 "$@" > "$out.bench.txt" 2>&1 &
bench=$!
pid=""
for _ in $(seq 1 200); do
  pid=$(pgrep -f "bench.servers rtcore" -P $bench | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.05
done
[ -n "$pid" ] || { echo "no server process found"; exit 1; }
py-spy record --pid "$pid" --rate 500 --format raw -o "$out.raw" > "$out.pyspy.txt" 2>&1 &
wait $bench
sleep 1
cat "$out.bench.txt"
