#!/usr/bin/env bash
# Benchmark: sha256 of a large file, `reprobox store hash` vs `sha256sum` (coreutils),
# measured in the same run on the same (page-cached) file: RUNS runs of each, alternating
# which side goes first, median of each side. Prints the ratio (sha256sum time / reprobox
# time: >= 1.0 means reprobox is at least as fast).
# Usage: benches/sha256.sh [SIZE_MIB] [RUNS]   (default 1024 MiB, 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-5}
cargo build --release --quiet
bin=target/release/reprobox
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
f=$work/big.bin
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$f"
cat "$f" >/dev/null # into the page cache

wall() { # wall time of one run, in seconds
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
a=$("$bin" store hash "$f" | cut -d' ' -f1)
b=$(sha256sum "$f" | cut -d' ' -f1)
[ "$a" = "$b" ] || { echo "MISMATCH: reprobox $a vs sha256sum $b" >&2; exit 1; }
: >"$work/peer"; : >"$work/ours"
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then
    wall sha256sum "$f" >>"$work/peer"; wall "$bin" store hash "$f" >>"$work/ours"
  else
    wall "$bin" store hash "$f" >>"$work/ours"; wall sha256sum "$f" >>"$work/peer"
  fi
done
t_peer=$(median <"$work/peer")
t_ours=$(median <"$work/ours")
mibs() { echo "$size_mib / $1" | bc -l | xargs printf '%.0f'; }
echo "sha256 of ${size_mib} MiB, median of $runs alternating runs: sha256sum ${t_peer}s ($(mibs "$t_peer") MiB/s), reprobox ${t_ours}s ($(mibs "$t_ours") MiB/s)"
printf 'ratio (sha256sum time / reprobox time): %.2f (target >= 1.00)\n' "$(echo "$t_peer / $t_ours" | bc -l)"
