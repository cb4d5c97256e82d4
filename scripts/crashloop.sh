#!/usr/bin/env bash
# The crash-loop harness of issue 7: builds the release binary, then SIGKILLs its daemon at seeded
# random moments against the bundled sandbox (200 loops over 3000 items by default), lets it
# finish, and checks that nothing was lost, corrupted or published twice. Prints the seed and a
# one-line verdict; exits non-zero on FAIL. Arguments go to `batchmirror crashloop`, e.g.
#   scripts/crashloop.sh --seed 42 --loops 50 --items 1000 --keep
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec ./target/release/batchmirror crashloop "$@"
