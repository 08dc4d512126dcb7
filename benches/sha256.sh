#!/usr/bin/env bash
# Benchmark: sha256 of a large file, `reprobox store hash` vs `sha256sum` (coreutils),
# measured in the same run on the same (page-cached) file. Prints the ratio
# (sha256sum time / reprobox time: >= 1.0 means reprobox is at least as fast).
# Usage: benches/sha256.sh [SIZE_MIB]   (default 2048)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
cargo build --release --quiet
bin=target/release/reprobox
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
f=$work/big.bin
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$f"
cat "$f" >/dev/null # into the page cache

best() { # best wall time of 3 runs, in seconds
  local b=
  for _ in 1 2 3; do
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null
    e=$(date +%s.%N)
    b=$(echo "$e - $s" | bc -l | awk -v b="$b" '{ if (b == "" || $1 < b) print $1; else print b }')
  done
  echo "$b"
}
a=$("$bin" store hash "$f" | cut -d' ' -f1)
b=$(sha256sum "$f" | cut -d' ' -f1)
[ "$a" = "$b" ] || { echo "MISMATCH: reprobox $a vs sha256sum $b" >&2; exit 1; }
t_peer=$(best sha256sum "$f")
t_ours=$(best "$bin" store hash "$f")
mibs() { echo "$size_mib / $1" | bc -l | xargs printf '%.0f'; }
echo "sha256 of ${size_mib} MiB: sha256sum ${t_peer}s ($(mibs "$t_peer") MiB/s), reprobox ${t_ours}s ($(mibs "$t_ours") MiB/s)"
printf 'ratio (sha256sum time / reprobox time): %.2f (target >= 1.00)\n' "$(echo "$t_peer / $t_ours" | bc -l)"
