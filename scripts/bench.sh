#!/bin/sh
# Builds the release binary and runs `batchmirror bench` with the given options, e.g.
#   scripts/bench.sh                      # 10,000 x 20 kB, 1 x 1 GB, idle pass, status
#   scripts/bench.sh --items 2000 --skip-large --status-items 0
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec target/release/batchmirror bench "$@"
