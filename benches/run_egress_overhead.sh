#!/usr/bin/env bash
# What configuring the egress costs a job that never uses it: start-to-exit time of
# `reprobox run --rootfs DIR --read-only -- /bin/true` with `--egress HOST=file:///…` (the
# run's CA and a leaf certificate made, the CA bundle and hosts file written and bound, the
# proxy/TLS/HTTP listeners served, the loopback catch-all route) against the same command
# without, median of N runs each, alternating run by run and which side runs first.
# Prints both medians and the difference (target <= +5 ms).
# Usage: benches/run_egress_overhead.sh [N]   (default 100). Run as root (the sandbox).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
# REPROBOX_BIN overrides the binary (default: a release build made here).
if [ -z "${REPROBOX_BIN:-}" ]; then cargo build --release --quiet --bin reprobox; fi
RB=${REPROBOX_BIN:-target/release/reprobox}
ROOT=$(bash scripts/debian-rootfs.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/up" "$work/store"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
once() { # microseconds of one run
  local t0=$EPOCHREALTIME
  "$@" >/dev/null
  local t1=$EPOCHREALTIME
  echo $(( (${t1/./} - ${t0/./}) ))
}
PLAIN=("$RB" run --rootfs "$ROOT" --read-only --store "$work/store" -- /bin/true)
EGRESS=("$RB" run --rootfs "$ROOT" --read-only --store "$work/store"
        --egress "archive.archlinux.org=file://$work/up" -- /bin/true)
"${PLAIN[@]}"; "${EGRESS[@]}"   # warm up, and fail loudly if either cannot run
plain=(); eg=()
for i in $(seq "$N"); do
  if (( i % 2 )); then
    plain+=($(once "${PLAIN[@]}")); eg+=($(once "${EGRESS[@]}"))
  else
    eg+=($(once "${EGRESS[@]}")); plain+=($(once "${PLAIN[@]}"))
  fi
done
pm=$(printf '%s\n' "${plain[@]}" | median)
em=$(printf '%s\n' "${eg[@]}" | median)
echo "runs: $N each (alternating, each side first in half of the pairs)"
echo "run -- /bin/true without egress, median: ${pm} us"
echo "run -- /bin/true with egress, median:    ${em} us"
awk -v a="$em" -v b="$pm" 'BEGIN {printf "difference: %+.2f ms (target <= +5 ms)\n", (a-b)/1000}'
