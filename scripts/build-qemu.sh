#!/usr/bin/env bash
# Configure (once) and build QEMU for what this project needs.
#
#   scripts/build-qemu.sh SRC BUILD [NINJA_TARGET...]
#
# Default target: qemu-system-x86_64.  The configuration is the x86_64 system
# emulator with default devices (vfio-user-pci among them) and no optional
# features: no docs, no Rust, no UI, no tools.  That keeps a clean build near
# four minutes on two cores.  ccache is used when installed; CCACHE_BASEDIR
# (set by the Makefile) lets the patched, baseline and series-check trees
# share cache entries.
set -euo pipefail

src=$(cd "${1:?usage: build-qemu.sh SRC BUILD [TARGET...]}" && pwd)
build=${2:?usage: build-qemu.sh SRC BUILD [TARGET...]}
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(qemu-system-x86_64)

[ -d /usr/lib/ccache ] && export PATH=/usr/lib/ccache:$PATH

config_args=(--python=/usr/bin/python3 --target-list=x86_64-softmmu
             --without-default-features --enable-kvm --enable-tcg
             --disable-rust --disable-docs --disable-werror
             --disable-install-blobs)
want="$src ${config_args[*]}"

mkdir -p "$build"
build=$(cd "$build" && pwd)
if [ ! -f "$build/build.ninja" ] || [ "$(cat "$build/.configured-with" 2>/dev/null)" != "$want" ]; then
    echo "build-qemu: configuring $build"
    rm -rf "${build:?}"/*
    if ! (cd "$build" && "$src/configure" "${config_args[@]}") > "$build/configure.log" 2>&1; then
        tail -n 30 "$build/configure.log" >&2
        echo "build-qemu: configure failed (log: $build/configure.log)" >&2
        exit 1
    fi
    echo "$want" > "$build/.configured-with"
fi

# Regenerate build.ninja first if meson files changed (a new patch may add
# targets), then ask ninja only for targets this tree defines: the
# vfio-user qtest exists only once the series adds it.
if ! ninja -C "$build" build.ninja > "$build/ninja.log" 2>&1; then
    tail -n 30 "$build/ninja.log" >&2
    echo "build-qemu: meson reconfiguration failed (log: $build/ninja.log)" >&2
    exit 1
fi
have=()
for t in "${targets[@]}"; do
    if ninja -C "$build" -t query "$t" >/dev/null 2>&1; then
        have+=("$t")
    else
        echo "build-qemu: no target $t in this tree; skipped"
    fi
done
[ ${#have[@]} -gt 0 ] || exit 0
echo "build-qemu: ninja ${have[*]} in $build"
if ! ninja -C "$build" -j"${JOBS:-$(nproc)}" "${have[@]}" > "$build/ninja.log" 2>&1; then
    grep -a -E 'error|FAILED' -A3 "$build/ninja.log" | head -n 60 >&2
    echo "build-qemu: build failed (log: $build/ninja.log)" >&2
    exit 1
fi
