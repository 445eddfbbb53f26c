#!/bin/sh
# Build the test guest: a Debian kernel plus a small busybox initramfs that
# runs the DMA test program once (optionally next to network traffic, see
# init.sh) and powers off.
#
#   guest/build-image.sh OUTDIR DMATEST_BINARY
#
# Outputs OUTDIR/vmlinuz and OUTDIR/initrd.gz.  Downloaded packages are kept
# in OUTDIR/cache; the image is rebuilt only when the kernel package, the
# test program, the init script or this script changed (a stamp file records
# their hashes).
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 OUTDIR DMATEST_BINARY" >&2
    exit 2
fi
out=$1
dmatest=$2
here=$(cd "$(dirname "$0")" && pwd)
init_script=$here/init.sh

[ -f "$dmatest" ] || { echo "error: test program '$dmatest' not found" >&2; exit 1; }
if ! file_type=$(od -An -c -N4 "$dmatest" | tr -d ' '); then
    exit 1
fi
[ "$file_type" = "177ELF" ] || { echo "error: '$dmatest' is not an ELF binary" >&2; exit 1; }

mkdir -p "$out/cache"
out=$(cd "$out" && pwd)
cache=$out/cache

# The metapackage names the current bookworm kernel; fall back to what is
# already cached when apt cannot answer (e.g. no package lists yet).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
       sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1)
if [ -z "$kpkg" ]; then
    kpkg=$(ls "$cache" 2>/dev/null | sed -n 's/^\(linux-image-6\.1\.0-[0-9]*-amd64\)_.*\.deb$/\1/p' | tail -n1)
fi
[ -n "$kpkg" ] || { echo "error: cannot resolve the kernel package (run apt-get update)" >&2; exit 1; }

stamp_want=$(printf '%s\n%s\n%s\n%s\n' "$kpkg" "$(sha256sum < "$dmatest")" \
             "$(sha256sum < "$init_script")" "$(sha256sum < "$0")" |
             sha256sum | cut -c1-64)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp_want" ] &&
   [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.gz" ]; then
    echo "guest image up to date in $out"
    exit 0
fi

fetch() {
    # apt-get download writes into the current directory.  It runs as root
    # here, which apt warns about but handles.
    if ! ls "$cache/$1"_*.deb >/dev/null 2>&1; then
        (cd "$cache" && apt-get download "$1" >/dev/null 2>&1) ||
            { echo "error: apt-get download $1 failed" >&2; exit 1; }
    fi
    ls "$cache/$1"_*.deb | tail -n1
}
kdeb=$(fetch "$kpkg")
bdeb=$(fetch busybox-static)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
dpkg-deb -x "$kdeb" "$work/k"
dpkg-deb -x "$bdeb" "$work/b"

kver=${kpkg#linux-image-}
root=$work/root
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/lib/modules"
cp "$work/b/bin/busybox" "$root/bin/busybox"
# uio for the DMA test; e1000 (a module in Debian's kernel, with no
# dependencies) for the network test's NIC.
for m in drivers/uio/uio.ko drivers/uio/uio_pci_generic.ko \
         drivers/net/ethernet/intel/e1000/e1000.ko; do
    cp "$work/k/lib/modules/$kver/kernel/$m" "$root/lib/modules/"
done
cp "$dmatest" "$root/bin/dmatest"
chmod 755 "$root/bin/dmatest"
cp "$init_script" "$root/init"
chmod 755 "$root/init"

(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initrd.gz.tmp"
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz.tmp"
mv "$out/initrd.gz.tmp" "$out/initrd.gz"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$stamp_want" > "$out/stamp"
echo "guest image built in $out (kernel $kver)"
