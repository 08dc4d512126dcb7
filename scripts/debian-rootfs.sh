#!/usr/bin/env bash
# Build (once) and print the path of the Debian bookworm root filesystem the tests use as a
# build environment: podman for nested builds, Debian's pacman to manage the test world's
# ALPM packages, and the tools of upstream's make-rootfs flow.
#
# Cached under $REPROBOX_TEST_CACHE (default /var/cache/reprobox-tests), keyed by the package
# list, built into a temporary directory and renamed into place, under a lock, so concurrent
# test processes build it once and never see a half-made tree.
set -euo pipefail

PACKAGES=(
  bash coreutils make git ca-certificates gnupg curl
  pacman-package-manager makepkg archlinux-keyring libarchive-tools
  fakeroot fakechroot libfaketime tar zstd gzip
  podman containernetworking-plugins
)
MIRROR=${REPROBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
cache=${REPROBOX_TEST_CACHE:-/var/cache/reprobox-tests}
key=$(printf '%s\n' "$SUITE" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
out="$cache/debian-rootfs-$key"

mkdir -p "$cache"
exec 9>"$cache/.debian-rootfs.lock"
flock 9
if [ ! -f "$out/.complete" ]; then
  command -v debootstrap >/dev/null || { echo "debian-rootfs.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 3; }
  tmp=$(mktemp -d "$cache/.debian-rootfs-tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  inc=$(IFS=,; echo "${PACKAGES[*]}")
  debootstrap --variant=minbase --include="$inc" "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/log" 2>&1 || {
    echo "debian-rootfs.sh: debootstrap failed; last lines of its log:" >&2; tail -20 "$tmp/log" >&2; exit 3; }
  rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"* 
  touch "$tmp/root/.complete"
  rm -rf "$out"
  mv "$tmp/root" "$out"
  rm -rf "$tmp"
  trap - EXIT
fi
echo "$out"
