#!/usr/bin/env bash
# Fetch the QEMU base (Debian's source package of QEMU 10.2.2) into DIR and
# check it against qemu/SHA256SUMS.
#
#   scripts/fetch-qemu.sh DIR
#
# Order: files already in DIR (if they check out), then `apt-get source
# --download-only` from the Debian archive, then the copy in ../shared/qemu/
# (with a warning: that copy is a fallback for when the archive stops serving
# this version).  Nothing is unpacked here.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../qemu/base.conf
. "$top/qemu/base.conf"
sums="$top/qemu/SHA256SUMS"
fallback="${QEMU_FALLBACK_DIR:-$top/../shared/qemu}"

dir=${1:?usage: fetch-qemu.sh DIR}
mkdir -p "$dir"
cd "$dir"

verify() {
    sha256sum --quiet --check "$sums" >/dev/null 2>&1
}

if verify; then
    exit 0
fi

echo "fetch-qemu: apt-get source --download-only $QEMU_SRC_PACKAGE=$QEMU_SRC_VERSION"
if apt-get source --download-only "$QEMU_SRC_PACKAGE=$QEMU_SRC_VERSION" \
        >apt-source.log 2>&1 && verify; then
    echo "fetch-qemu: got the source package from the Debian archive; sha256 OK"
    exit 0
fi

echo "fetch-qemu: WARNING: the Debian archive did not serve $QEMU_SRC_PACKAGE $QEMU_SRC_VERSION" >&2
echo "fetch-qemu: WARNING: (see $dir/apt-source.log); using the fallback copy in $fallback" >&2
for f in $(awk '{print $2}' "$sums"); do
    if [ ! -e "$fallback/$f" ]; then
        echo "fetch-qemu: $fallback/$f is missing too: cannot get the QEMU base" >&2
        exit 1
    fi
    cp "$fallback/$f" .
done
if ! verify; then
    echo "fetch-qemu: sha256 mismatch for the files in $dir:" >&2
    sha256sum --check "$sums" >&2 || true
    exit 1
fi
echo "fetch-qemu: fallback copy checked against qemu/SHA256SUMS"
