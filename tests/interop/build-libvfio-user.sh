#!/bin/sh
# Build a libvfio-user source tree, the copy that ships inside QEMU's source
# tree (subprojects/libvfio-user) or current libvfio-user
# (scripts/fetch-libvfio-user.sh), and install only the shared library and
# its headers into a private prefix.  The interop servers link against them.
#
# usage: build-libvfio-user.sh SRC_DIR OUT_DIR
#   SRC_DIR  the libvfio-user source (e.g. QEMU_SRC/subprojects/libvfio-user)
#   OUT_DIR  install prefix; the meson build tree lives in OUT_DIR/_build
#
# Re-running with unchanged sources does nothing (a stamp records a hash of
# the source files and of this script).  Needs meson, ninja, pkg-config,
# libjson-c-dev and libcmocka-dev (the library's meson.build insists on
# cmocka even though we never build its unit tests).
set -eu
self=$(readlink -f "$0")

if [ $# -ne 2 ]; then
    echo "usage: $0 SRC_DIR OUT_DIR" >&2
    exit 2
fi
src=$(cd "$1" 2>/dev/null && pwd) || { echo "$0: no such directory: $1" >&2; exit 1; }
if [ ! -f "$src/include/libvfio-user.h" ] || [ ! -f "$src/meson.build" ]; then
    echo "$0: $src does not look like a libvfio-user source tree" >&2
    exit 1
fi
mkdir -p "$2"
out=$(cd "$2" && pwd)
bld="$out/_build"
stamp="$out/.build-stamp"

# Hash every file that can influence the result, so an edited or different
# source tree triggers a rebuild while an identical one is a no-op.
hash=$( (cd "$src" && find . -type f \( -name '*.c' -o -name '*.h' \
            -o -name 'meson*' \) | LC_ALL=C sort | xargs sha256sum;
         sha256sum < "$self") | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] &&
   [ -e "$out/lib/libvfio-user.so" ] &&
   [ -f "$out/include/vfio-user/libvfio-user.h" ]; then
    echo "libvfio-user: up to date in $out"
    exit 0
fi

rm -rf "$bld" "$out/lib" "$out/include" "$stamp"
# release: the library adds -Werror to any build with debug info, which would
# tie us to the warnings of one compiler version.
meson setup "$bld" "$src" --prefix="$out" --libdir=lib \
    -Dbuildtype=release -Ddebug-logs=disabled >"$out/meson-setup.log" 2>&1 || {
    cat "$out/meson-setup.log" >&2
    echo "$0: meson setup failed" >&2
    exit 1
}
# Build only the library: the samples and unit tests are not needed.
meson compile -C "$bld" vfio-user >/dev/null
meson install -C "$bld" --no-rebuild --tags runtime,devel >/dev/null
echo "$hash" > "$stamp"
echo "libvfio-user: installed in $out"
