#!/usr/bin/env bash
# Run the series' QEMU functional test (QEMU's tests/functional framework):
# Linux's NVMe driver on a vfio-user device that QEMU itself serves
# (tests/functional/x86_64/test_vfio_user_nvme.py), in three guest RAM
# configurations.  Prints TAP for scripts/run-tests.py.
#
#   scripts/run-functional.sh QEMU_SRC QEMU_BUILD CACHE_DIR [DEB_DIR...]
#
# The test's assets (Debian's kernel and busybox-static .debs, named by
# pool URL and sha256) are put into CACHE_DIR/download first with apt
# (scripts/prefill-functional-assets.py; .debs already in a DEB_DIR, such
# as the guest image's download cache, are used as they are), and the test
# runs from that cache without downloading, as `make check-functional` does.
# The test is run the way QEMU's meson registers it (func-x86_64-...): the
# same environment, the build's Python venv, QEMU's in-tree python/ for
# qemu.qmp and qemu.machine.
set -euo pipefail

src=$(cd "${1:?usage: run-functional.sh QEMU_SRC QEMU_BUILD CACHE_DIR [DEB_DIR...]}" && pwd)
build=$(cd "${2:?usage}" && pwd)
cache=${3:?usage}
shift 3
here=$(cd "$(dirname "$0")" && pwd)

test=tests/functional/x86_64/test_vfio_user_nvme.py
name=func-x86_64-vfio_user_nvme
if [ ! -f "$src/$test" ]; then
    echo "ok 1 - $name # SKIP the QEMU tree has no $test (series without it)"
    exit 0
fi

n=0
from=()
for d in "$@"; do from+=(--from "$d"); done
n=$((n + 1))
if out=$(python3 "$here/prefill-functional-assets.py" --cache "$cache" \
             "${from[@]}" "$src/$test" 2>&1); then
    echo "ok $n - assets of $name in $cache/download"
    printf '%s\n' "$out" | while IFS= read -r l; do echo "# $l"; done
else
    echo "not ok $n - assets of $name in $cache/download"
    printf '%s\n' "$out" | while IFS= read -r l; do echo "# $l"; done
    exit 1
fi

# QEMU's meson registers the test (the x86_64 thorough list and its time
# limit); a test that is not registered would not run under make
# check-functional.
n=$((n + 1))
tests=$("$build/pyvenv/bin/meson" test -C "$build" --no-rebuild \
            --suite thorough --list 2>/dev/null || true)
if printf '%s\n' "$tests" | grep -q " / $name\$"; then
    echo "ok $n - meson knows $name"
else
    echo "not ok $n - meson knows $name"
fi

# The test's own TAP lines ("ok N test_...") are renumbered after ours.
export QEMU_TEST_QEMU_BINARY=$build/qemu-system-x86_64
export QEMU_BUILD_ROOT=$build
export PYTHONPATH=$src/python:$src/tests/functional
export QEMU_TEST_CACHE_DIR=$cache
export QEMU_TEST_NO_DOWNLOAD=1
rc=0
"$build/pyvenv/bin/python3" "$src/$test" 2>&1 |
    while IFS= read -r line; do
        case "$line" in
        "ok "*|"not ok "*)
            n=$((n + 1))
            status=${line%% [0-9]*}
            echo "$status $n - ${line#"$status" [0-9]* }"
            ;;
        "TAP version"*|1..*) ;;
        *) echo "# $line" ;;
        esac
    done || rc=$?
# pipefail: the test's exit status (a failure it reported is counted above)
exit "$rc"
