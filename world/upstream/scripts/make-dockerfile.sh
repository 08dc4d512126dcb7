#!/bin/bash
# Upstream-shaped make-dockerfile: ROOTFS_FILE GROUP OUTPUTDIR BUILD_VERSION SOURCE_DATE_EPOCH.
# Fills Dockerfile.template into OUTPUTDIR/Dockerfile.GROUP.
set -euo pipefail
declare -r ROOTFS_FILE="$1" GROUP="$2" OUTPUTDIR="$3" BUILD_VERSION="$4" SOURCE_DATE_EPOCH="$5"

sha256=$(cut -d' ' -f1 "$OUTPUTDIR/$ROOTFS_FILE.SHA256")
revision=$(git rev-parse HEAD)
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
extra=""
if [ "$GROUP" = repro ]; then extra=" \&\& rm -f /var/cache/ldconfig/aux-cache"; fi
sed -e "s|TEMPLATE_ROOTFS_FILE|$ROOTFS_FILE|g" \
    -e "s|TEMPLATE_ROOTFS_HASH|$sha256|g" \
    -e "s|TEMPLATE_TITLE|Arch Linux $GROUP Image|g" \
    -e "s|TEMPLATE_VERSION_ID|$BUILD_VERSION|g" \
    -e "s|TEMPLATE_REVISION|$revision|g" \
    -e "s|TEMPLATE_CREATED|$created|g" \
    -e "s|TEMPLATE_EXTRA|$extra|g" \
    Dockerfile.template > "$OUTPUTDIR/Dockerfile.$GROUP"
