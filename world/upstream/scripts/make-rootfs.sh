#!/bin/bash
# Upstream-shaped make-rootfs: GROUP BUILDDIR OUTPUTDIR ARCHIVE_SNAPSHOT SOURCE_DATE_EPOCH.
# pacman -r into BUILDDIR from the snapshot server only, every file touched to
# SOURCE_DATE_EPOCH, a sorted clamped tar, zstd, sha256sum.
set -euo pipefail

declare -r GROUP="$1" BUILDDIR="$2" OUTPUTDIR="$3" ARCHIVE_SNAPSHOT="$4" SOURCE_DATE_EPOCH="$5"
# The archive base the world's builds see (reprobox gives every job its mirror there).
declare -r ARCHIVE_BASE="http://127.0.0.1:7878"
export TZ=UTC LANG=C.UTF-8

mkdir -vp "$BUILDDIR/alpm-hooks/usr/share/libalpm/hooks" "$BUILDDIR/var/lib/pacman" "$OUTPUTDIR"
cachedir=$(mktemp -d)
trap 'rm -rf "$cachedir"' EXIT

# devtools' pacman.conf, with the mirrorlist of this checkout and upstream's NoExtract list.
sed 's|Include = /etc/pacman.d/mirrorlist|Include = rootfs/etc/pacman.d/mirrorlist|g' \
  /usr/share/devtools/pacman.conf.d/extra.conf > pacman.conf
sed -i '/^\[options\]/a NoExtract = usr/share/help/* usr/share/info/* usr/share/locale/*' pacman.conf

# The snapshot server first; the live mirrors below it stay as fallbacks (as upstream).
sed -i "1i Server = ${ARCHIVE_BASE}/repos/${ARCHIVE_SNAPSHOT}/\$repo/os/\$arch" rootfs/etc/pacman.d/mirrorlist

# Debian's pacman 6.0.2 writes %INSTALLDATE% from the wall clock: pin it with libfaketime
# when the environment has it (pacman >= 7.1 would take SOURCE_DATE_EPOCH itself). An
# absolute FAKETIME stops the clock there; `@` would only start it there, and a pacman that
# runs longer than a second (a loaded machine) would stamp SOURCE_DATE_EPOCH+1.
faketime_lib=""
for l in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
  [ -e "$l" ] && { faketime_lib=$l; break; }
done
if [ -n "$faketime_lib" ]; then
  export FAKETIME="$(date -u -d "@$SOURCE_DATE_EPOCH" '+%Y-%m-%d %H:%M:%S')"
  export LD_PRELOAD="$faketime_lib${LD_PRELOAD:+:$LD_PRELOAD}"
fi
fakechroot -- fakeroot -- pacman -Sy -r "$BUILDDIR" \
  --noconfirm --dbpath "$BUILDDIR/var/lib/pacman" --config pacman.conf \
  --cachedir "$cachedir" --noscriptlet --logfile /dev/null \
  --hookdir "$BUILDDIR/alpm-hooks/usr/share/libalpm/hooks/" base
unset LD_PRELOAD FAKETIME
rm -rf "$BUILDDIR/alpm-hooks"

# The checkout's rootfs overlay (mirrorlist with the snapshot line) goes into the image.
cp -a rootfs/. "$BUILDDIR/"
rm -rf "$BUILDDIR/etc/pacman.d/gnupg/"*
# Lock root's password.
sed -i -e 's/^root::/root:!*:/' "$BUILDDIR/etc/shadow"

find "$BUILDDIR" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

tar --numeric-owner --xattrs --acls --exclude-from=exclude -C "$BUILDDIR" \
  --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --sort=name \
  --pax-option=delete=atime,delete=ctime -c . | zstd --long -T0 -8 > "$OUTPUTDIR/$GROUP.tar.zst"
(cd "$OUTPUTDIR" && sha256sum "$GROUP.tar.zst" > "$GROUP.tar.zst.SHA256")
