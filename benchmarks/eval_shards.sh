#!/usr/bin/env bash
# The evaluation grid as N processes side by side, then merged into one report.
#   benchmarks/eval_shards.sh N OUT [python -m adamas.eval flags...]
# Each process runs `--shard k/N` into OUT/shards/k (its log beside it); the merge writes
# OUT/results.json and OUT/results.md. On a GPU a decode step of a small model is bound by
# the host's kernel launches, so N processes on N cores keep one GPU busier than one can.
# They share its memory too, so too many at long contexts run out of it. A failed shard is
# named with the end of its log; rerun it alone, then merge:
#   python -m adamas.eval --merge OUT/shards/1 ... OUT/shards/N --out OUT
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 N OUT [python -m adamas.eval flags...]" >&2
  exit 2
fi
n=$1 out=$2
shift 2
python=${PYTHON:-python3}
mkdir -p "$out/shards"
pids=()
for k in $(seq 1 "$n"); do
  "$python" -m adamas.eval --threads 1 --shard "$k/$n" --out "$out/shards/$k" "$@" \
    >"$out/shards/$k.log" 2>&1 &
  pids+=($!)
done
failed=0
for k in $(seq 1 "$n"); do
  if ! wait "${pids[$((k - 1))]}"; then
    echo "shard $k/$n failed; the end of its log:" >&2
    tail -n 20 "$out/shards/$k.log" >&2
    failed=1
  fi
done
[ "$failed" -eq 0 ] || exit 1
dirs=()
for k in $(seq 1 "$n"); do dirs+=("$out/shards/$k"); done
"$python" -m adamas.eval --merge "${dirs[@]}" --out "$out"
