#!/usr/bin/env bash
# Measures the drop folder's end-to-end latency on the sandbox: a file written into the inbox until
# its result is in outbox/<name>.json, one file at a time, with the settle time given (default the
# config default, 2s) and `result_poll` 1s.
#
#   scripts/drop-latency.sh [files=5] [settle=2s]
set -euo pipefail
files=${1:-5}
settle=${2:-2s}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/batchmirror
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" sandbox --provider extract_page --batches 2 --items-per-batch 2 --api-key k \
    >"$work/sandbox.log" 2>&1 &
for _ in $(seq 100); do grep -q "listening on" "$work/sandbox.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/sandbox.log" | head -1)

cat >"$work/config.toml" <<TOML
[ledger]
path = "$work/ledger.sqlite3"
[storage]
root = "$work/mirror"
[schedule]
cron = "0 0 0 1 1 *"
[log]
level = "warn"
[[provider]]
name = "ep"
kind = "extract_page"
base_url = "$url"
api_key = "k"
[dropfolder]
path = "$work/drop/inbox"
provider = "ep"
settle = "$settle"
result_poll = "1s"
TOML
"$bin" run --config "$work/config.toml" 2>"$work/daemon.log" &
for _ in $(seq 100); do [ -d "$work/drop/outbox" ] && break; sleep 0.1; done
sleep 0.5

ms=()
for i in $(seq "$files"); do
    name="doc-$i.pdf"
    start=$(date +%s%N)
    head -c 20000 /dev/urandom | base64 >"$work/drop/inbox/$name"
    until [ -e "$work/drop/outbox/$name.json" ]; do sleep 0.02; done
    ms+=($(( ($(date +%s%N) - start) / 1000000 )))
done
sorted=$(printf '%s\n' "${ms[@]}" | sort -n)
echo "drop → outbox over $files files (settle $settle, result_poll 1s): ms = ${ms[*]}"
echo "min $(echo "$sorted" | head -1) ms, median $(echo "$sorted" | sed -n "$(( (files + 1) / 2 ))p") ms, max $(echo "$sorted" | tail -1) ms"
