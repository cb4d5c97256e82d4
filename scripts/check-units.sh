#!/usr/bin/env bash
# Checks the systemd units: `systemd-analyze verify` on each (with ExecStart pointed at the built
# binary, since verify wants it to exist) and the security exposure of the daemon's unit, which
# must stay at or below 2.0. Installs Debian's systemd package if systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(pwd)/target/debug/batchmirror"
[ -x "$bin" ] || cargo build --quiet
if ! command -v systemd-analyze >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq systemd >/dev/null) || {
    echo "check-units: systemd-analyze unavailable and could not be installed" >&2; exit 1; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in systemd/*.service systemd/*.timer; do
  sed "s|/usr/local/bin/batchmirror|$bin|g" "$unit" > "$tmp/$(basename "$unit")"
done
for unit in "$tmp"/*; do
  systemd-analyze verify "$unit"
  echo "verified $(basename "$unit")"
done
exposure=$(systemd-analyze security --offline=true "$tmp/batchmirror.service" 2>/dev/null \
  | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security batchmirror.service: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }' || {
  echo "check-units: exposure $exposure is above 2.0" >&2; exit 1; }
