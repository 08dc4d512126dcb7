#!/usr/bin/env bash
# The overhead of reprobox on a warm store: `reprobox reproduce --offline` of the test world's
# sample release, start to verdict, against running the same make and podman build directly
# (bwrap, as root, host network) in an already-prepared environment — the one reprobox itself
# prepared and rolled back, kept with --keep-work. Both measured in this run; ratio printed.
#
#   benches/reproduce_overhead.sh [RUNS]     (root; REPROBOX_BENCH_WORLD=DIR to reuse a world)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release -q --bin reprobox
rb=$PWD/target/release/reprobox
command -v bwrap >/dev/null || { echo "needs bwrap (apt-get install bubblewrap)" >&2; exit 3; }
tmp=$(mktemp -d /var/tmp/reprobox-bench.XXXXXX)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

world=${REPROBOX_BENCH_WORLD:-/var/cache/reprobox-tests/world-e2e}
"$rb" world build "$world" >/dev/null
# The baseline shares the host network, so the world must be where the build expects it.
"$rb" world serve "$world" --archive-port 7878 --registry-port 7879 > "$tmp/serve.txt" &
serve_pid=$!
for _ in $(seq 50); do grep -q REPROBOX_LOCATION_GIT "$tmp/serve.txt" 2>/dev/null && break; sleep 0.2; done
eval "$(grep '^export' "$tmp/serve.txt")"
version=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["version"])' "$world/world.json")
sde=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["source_date_epoch"])' "$world/world.json")
snapshot=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["snapshot"])' "$world/world.json")

# Warm the store and keep one prepared environment for the baseline.
"$rb" reproduce test-world "$version" --store "$tmp/store" --out "$tmp/warm" --keep-work > "$tmp/warm.log" 2>&1
work=$(ls -d "$tmp"/warm/.reprobox-work-*)
root=$(find "$work/base" -mindepth 1 -maxdepth 1 -type d | head -1)

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > "$tmp/rb.times"; : > "$tmp/direct.times"
for i in $(seq "$runs"); do
  t0=$(now)
  "$rb" reproduce test-world "$version" --store "$tmp/store" --out "$tmp/out$i" --offline > "$tmp/rb$i.log" 2>&1 || { echo "reprobox run $i failed:"; tail -20 "$tmp/rb$i.log"; exit 1; }
  t1=$(now); echo "$t1 - $t0" | bc >> "$tmp/rb.times"

  ws=$tmp/ws$i
  git clone -q "$world/upstream.git" "$ws"
  rev=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["git"]["source_revision"])' "$world/world.json")
  git -C "$ws" checkout -q --detach "$rev"
  t0=$(now)
  bwrap --bind "$root" / --bind "$ws" /build --proc /proc --dev /dev --ro-bind /sys /sys \
        --tmpfs /tmp --tmpfs /run --tmpfs /dev/shm --unshare-pid --unshare-ipc --unshare-uts --chdir /build \
        --setenv SOURCE_DATE_EPOCH "$sde" --setenv TZ UTC --setenv LANG C.UTF-8 --setenv PATH /usr/sbin:/usr/bin:/sbin:/bin \
        -- sh -c "make ARCHIVE_SNAPSHOT=$snapshot SOURCE_DATE_EPOCH=$sde BUILD_VERSION=$version /build/output/Dockerfile.repro && \
                  podman --storage-driver vfs --cgroup-manager cgroupfs --events-backend file build --no-cache --timestamp $sde --isolation chroot -f output/Dockerfile.repro -t bench:$i output/" \
        > "$tmp/direct$i.log" 2>&1 || { echo "direct run $i failed:"; tail -20 "$tmp/direct$i.log"; exit 1; }
  t1=$(now); echo "$t1 - $t0" | bc >> "$tmp/direct.times"
done
r=$(median < "$tmp/rb.times"); d=$(median < "$tmp/direct.times")
echo "reprobox reproduce --offline (warm store), median of $runs: ${r}s"
echo "make + podman build directly in a prepared environment, median of $runs: ${d}s"
echo "ratio reprobox/direct: $(echo "scale=2; $r / $d" | bc)"
echo "(reprobox also unpacks the pinned base, rolls it back, records the locks, inspects and compares the image.)"
