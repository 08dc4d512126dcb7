#!/usr/bin/env bash
# reprobox's rootfs unpacker against `tar --zstd -xf` on a tar.zst of the Debian test
# root filesystem (several hundred MB unpacked), median of N runs each, same run.
# Prints the ratio (reprobox / tar; < 1 means reprobox is faster).
# Usage: benches/unpack.sh [N]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
# REPROBOX_UNPACK overrides the unpacker binary (default: a release build made here).
if [ -z "${REPROBOX_UNPACK:-}" ]; then cargo build --release --quiet --example unpack; fi
UNPACK=${REPROBOX_UNPACK:-target/release/examples/unpack}
ROOT=$(bash scripts/debian-rootfs.sh)
cache=${REPROBOX_TEST_CACHE:-/var/cache/reprobox-tests}
ARCHIVE="$cache/bench-rootfs.tar.zst"
if [ ! -f "$ARCHIVE" ]; then
  tar --zstd --numeric-owner --xattrs -C "$ROOT" -cf "$ARCHIVE.tmp" . && mv "$ARCHIVE.tmp" "$ARCHIVE"
fi
echo "archive: $(du -h "$ARCHIVE" | cut -f1) compressed, $(du -sh "$ROOT" | cut -f1) unpacked"
work=$(mktemp -d "$cache/.bench-unpack.XXXXXX")
trap 'rm -rf "$work"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
one() { # $1 = label; rest = command writing into $work/d
  sync; local t0=$EPOCHREALTIME
  "$@" >/dev/null 2>&1
  local t1=$EPOCHREALTIME
  rm -rf "$work/d"
  echo $(( (${t1/./} - ${t0/./}) / 1000 ))
}
rb=(); tr=()
for _ in $(seq "$N"); do
  rb+=($(one "$UNPACK" "$ARCHIVE" "$work/d"))
  tr+=($(one sh -c "mkdir '$work/d' && tar --zstd --numeric-owner --xattrs -xpf '$ARCHIVE' -C '$work/d'"))
done
rbm=$(printf '%s\n' "${rb[@]}" | median)
trm=$(printf '%s\n' "${tr[@]}" | median)
echo "reprobox unpack median: ${rbm} ms"
echo "tar --zstd -xf median:  ${trm} ms"
awk -v a="$rbm" -v b="$trm" 'BEGIN {printf "ratio reprobox/tar: %.2f\n", a/b}'
