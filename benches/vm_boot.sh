#!/usr/bin/env bash
# Boot-to-first-command of the microVM backend, against a named peer measured in the same
# run: bare qemu -M microvm booting the same kernel with a one-file initramfs (busybox
# whose /init echoes a marker) — the floor any qemu+kernel backend pays. Prints the
# medians and the ratio reprobox/peer, for TCG, and for KVM where it works (on this
# project's machines it does not: qemu aborts with an MSR assertion; that is printed).
#
# Needs: qemu-system-x86, linux-image-amd64, busybox-static, e2fsprogs, cpio.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
KERNEL=${KERNEL:-$(ls /boot/vmlinuz-* | sort | tail -n1)}

cargo build --release --example vm_boot -q
bin=target/release/examples/vm_boot

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/ir/bin" "$tmp/ir/dev"
cp /usr/bin/busybox "$tmp/ir/bin/"
printf '#!/bin/busybox sh\necho peer-first\n/bin/busybox reboot -f\n' > "$tmp/ir/init"
chmod +x "$tmp/ir/init"
(cd "$tmp/ir" && find . | cpio -o -H newc --quiet > "$tmp/peer.cpio")

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "NA"; else print a[int((NR+1)/2)]}'; }

peer_once() { # $1 = accel; prints ms to the marker, or nothing
  local accel=$1 extra=() append="console=ttyS0 quiet panic=-1 reboot=t"
  # Under TCG the peer runs as reprobox runs its guests: instruction-counted (-icount
  # shift=0: the guest TSC counts virtual nanoseconds, hence 1 GHz), one vCPU.
  if [ "$accel" = tcg ]; then append="$append tsc_early_khz=1000000"; extra=(-icount shift=0,sleep=on); else extra=(-cpu host); fi
  local start; start=$(date +%s%N)
  timeout 30 qemu-system-x86_64 -M microvm -accel "$accel" "${extra[@]}" -m 512 -smp 1 \
    -nodefaults -no-user-config -no-reboot -display none -serial stdio \
    -kernel "$KERNEL" -initrd "$tmp/peer.cpio" -append "$append" 2>"$tmp/peer.err" |
    while IFS= read -r l; do
      case $l in *peer-first*) echo $(( ($(date +%s%N) - start) / 1000000 )) ;; esac
    done || true
}

for accel in tcg kvm; do
  echo "== $accel (kernel $KERNEL, $RUNS runs)"
  peer=()
  for _ in $(seq "$RUNS"); do
    ms=$(peer_once "$accel")
    if [ -z "$ms" ]; then echo "peer (bare qemu) under $accel FAILED: $(head -c 300 "$tmp/peer.err" | tr '\n' ' ')"; break; fi
    peer+=("$ms")
  done
  ours=$("$bin" "$KERNEL" "$accel" "$RUNS" || true)
  if grep -q '^failed' <<<"$ours"; then echo "reprobox under $accel FAILED: $ours"; continue; fi
  rb=$(sed -n 's/.*ms_to_first_output=\([0-9]*\).*/\1/p' <<<"$ours" | median)
  rbq=$(sed -n 's/.*ms_qemu_to_job=\([0-9]*\).*/\1/p' <<<"$ours" | median)
  pm=$(printf '%s\n' "${peer[@]}" | median)
  echo "reprobox vm::run to first output (median): ${rb} ms (qemu spawn to job start: ${rbq} ms)"
  echo "peer bare qemu+kernel to first output (median): ${pm} ms"
  if [ "$pm" != NA ] && [ "$pm" -gt 0 ]; then
    echo "ratio reprobox/peer: $(awk -v a="$rb" -v b="$pm" 'BEGIN {printf "%.2f", a/b}')"
  fi
done
