#!/usr/bin/env bash
# Start-to-exit time of `reprobox run --rootfs DIR -- /bin/true` against Debian's bwrap
# doing the same with the same namespaces (user with uid 0, mount, pid, net, uts, ipc,
# cgroup; bwrap has no time namespace), median of N runs each, measured in the same run.
# Prints the ratio (reprobox / bwrap; < 1 means reprobox is faster) and reprobox's peak RSS.
# Usage: benches/run_vs_bwrap.sh [N]   (default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
command -v bwrap >/dev/null || { echo "bwrap is not installed (apt-get install bubblewrap)" >&2; exit 3; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is not installed (apt-get install time)" >&2; exit 3; }
# REPROBOX_BIN overrides the binary (default: a release build made here).
if [ -z "${REPROBOX_BIN:-}" ]; then cargo build --release --quiet --bin reprobox; fi
RB=${REPROBOX_BIN:-target/release/reprobox}
ROOT=$(bash scripts/debian-rootfs.sh)

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
timeit() { # prints microseconds per run, one per line
  for _ in $(seq "$N"); do
    local t0=$EPOCHREALTIME
    "$@" >/dev/null
    local t1=$EPOCHREALTIME
    echo $(( (${t1/./} - ${t0/./}) ))
  done
}
RB_CMD=("$RB" run --rootfs "$ROOT" --read-only -- /bin/true)
BW_CMD=(bwrap --unshare-user --uid 0 --gid 0 --unshare-pid --unshare-net --unshare-uts
        --unshare-ipc --unshare-cgroup --die-with-parent --new-session
        --ro-bind "$ROOT" / --proc /proc --dev /dev --tmpfs /tmp --tmpfs /run -- /bin/true)
"${RB_CMD[@]}"; "${BW_CMD[@]}"   # warm up, and fail loudly if either cannot run
# Alternate the two run by run so that machine noise (other builds on a 2-core machine)
# hits both alike, and which of a pair runs first alternates too (reprobox first in odd
# pairs, bwrap first in even ones): the second of a pair runs while the first one's
# background teardown is still going, and no side should always be the one that pays it.
rb=(); bw=()
for i in $(seq "$N"); do
  if (( i % 2 )); then
    rb+=($(N=1 timeit "${RB_CMD[@]}"))
    bw+=($(N=1 timeit "${BW_CMD[@]}"))
  else
    bw+=($(N=1 timeit "${BW_CMD[@]}"))
    rb+=($(N=1 timeit "${RB_CMD[@]}"))
  fi
done
rbm=$(printf '%s\n' "${rb[@]}" | median)
bwm=$(printf '%s\n' "${bw[@]}" | median)
rss=$(/usr/bin/time -v "${RB_CMD[@]}" 2>&1 >/dev/null | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}')
bwrss=$(/usr/bin/time -v "${BW_CMD[@]}" 2>&1 >/dev/null | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}')
echo "runs: $N each (alternating, each side first in half of the pairs)"
echo "reprobox run median: ${rbm} us"
echo "bwrap median:        ${bwm} us"
awk -v a="$rbm" -v b="$bwm" 'BEGIN {printf "ratio reprobox/bwrap: %.2f (target <= 1.00)\n", a/b}'
echo "reprobox peak RSS: ${rss} KiB (bwrap: ${bwrss} KiB)"
