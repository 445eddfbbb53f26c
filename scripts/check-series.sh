#!/usr/bin/env bash
# Check the series the way a QEMU maintainer would before taking it: every
# patch applies in order to the pristine base, passes QEMU's checkpatch.pl,
# and the tree builds at every patch (bisectable).  Where the tree at a patch
# has the vfio-user qtest, it is run too; where it sends the DMA_MAP access
# mode bits, the client is also run against the libvfio-user copy bundled
# with QEMU, which predates them (every patch must keep old servers
# working).  Prints TAP, the plan at the end.
#
#   scripts/check-series.sh MAIN_TREE WORK_DIR [INTEROP_SERVER]
#
# INTEROP_SERVER is tests/interop's server built on that libvfio-user copy;
# without it the legacy interop check is reported as skipped.
# MAIN_TREE is the scratch tree (for its `base` tag); WORK_DIR gets a git
# worktree (WORK_DIR/src) and a build directory (WORK_DIR/build).
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
main=${1:?usage: check-series.sh MAIN_TREE WORK_DIR}
work=${2:?usage: check-series.sh MAIN_TREE WORK_DIR}
patches="$top/patches"
src="$work/src"
build="$work/build"

g() { git -C "$src" -c safe.directory='*' "$@"; }

interop_server=${3:-}

mapfile -t list < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$patches/series")
total=$(( ${#list[@]} * 3 ))
trap 'echo "1..$total"' EXIT

mkdir -p "$work"
if [ ! -e "$src/.git" ]; then
    git -C "$main" -c safe.directory='*' worktree prune
    git -C "$main" -c safe.directory='*' worktree add -q --detach "$src" base || exit 1
fi
g am --abort >/dev/null 2>&1
g reset -q --hard base
g clean -q -fdx -e '/pc-bios/edk2-*.fd.bz2'
"$top/scripts/qemu-tree.sh" placeholders "$src"

# The client at this patch against a server that predates the mode bits:
# tests/interop's memfd cases (mmap refused with the bit, taken without it)
# and, once the tree has dma-access=file-io, its file-io memfd cases (file
# I/O falling back to messages).  Numbered after the 3 checks per patch.
extra=0
legacy_interop() {
    local num want log=$work/interop.log
    extra=$((extra + 1))
    total=$((total + 1))
    num=$(( ${#list[@]} * 3 + extra ))
    if [ -z "$interop_server" ] || [ ! -x "$interop_server" ]; then
        echo "ok $num - tree at $1: legacy libvfio-user interop # SKIP no interop server built"
        return
    fi
    # the configurations this tree can run ("memfd" also picks "file-io memfd")
    want=' memfd: '
    if grep -q "'file-io'" "$src/qapi/vfio.json" 2>/dev/null; then
        want=' (file-io )?memfd: '
    fi
    "$top/tests/interop/qemu-tests.py" --only memfd \
        --qemu "$build/qemu-system-x86_64" --server "$interop_server" \
        > "$log" 2>&1
    if ! grep -Eq "^ok [0-9]+$want" "$log"; then
        echo "not ok $num - tree at $1: legacy libvfio-user interop ran no check"
        tail -n 20 "$log" | sed 's/^/# interop: /'
        failed=1
    elif grep -Eq "^not ok [0-9]+$want" "$log"; then
        echo "not ok $num - tree at $1: legacy libvfio-user interop fails"
        grep -E "^not ok [0-9]+$want" "$log" | head -n 20 | sed 's/^/# interop: /'
        failed=1
    else
        echo "ok $num - tree at $1: legacy libvfio-user interop passes" \
             "($(grep -Ec "^ok [0-9]+$want" "$log") checks)"
    fi
}

n=0 failed=0
for p in "${list[@]}"; do
    n=$((n + 1))
    t=$(( (n - 1) * 3 ))
    if g am -q "$patches/$p" > "$work/am.log" 2>&1; then
        echo "ok $((t + 1)) - $p applies"
    else
        echo "not ok $((t + 1)) - $p does not apply"
        sed 's/^/# /' "$work/am.log"
        g am --abort >/dev/null 2>&1
        # Nothing after a patch that does not apply can be checked.
        for ((i = t + 2; i <= total; i++)); do
            echo "not ok $i - not checked: patch $n does not apply"
        done
        exit 1
    fi

    if (cd "$src" && ./scripts/checkpatch.pl -q "$patches/$p") > "$work/checkpatch.log" 2>&1; then
        echo "ok $((t + 2)) - $p passes checkpatch.pl"
    else
        echo "not ok $((t + 2)) - $p fails checkpatch.pl"
        sed 's/^/# /' "$work/checkpatch.log"
        failed=1
    fi

    if "$top/scripts/build-qemu.sh" "$src" "$build" qemu-system-x86_64 \
            tests/qtest/vfio-user-test > "$work/build.log" 2>&1; then
        what="builds"
        if [ -x "$build/tests/qtest/vfio-user-test" ]; then
            if "$top/scripts/run-qtest.sh" "$build" > "$work/qtest.log" 2>&1; then
                what="builds, vfio-user qtest passes"
            else
                echo "not ok $((t + 3)) - tree at $p: vfio-user qtest fails"
                # nested TAP, as comments: counted once, by the line above
                grep -E '^(not ok|# )' "$work/qtest.log" | head -n 40 | sed 's/^/# qtest: /'
                failed=1
                continue
            fi
        fi
        echo "ok $((t + 3)) - tree at $p $what"
        if grep -q VFIO_USER_DMA_MAP_FLAG_MMAP "$src/hw/vfio-user/protocol.h"; then
            legacy_interop "$p"
        fi
    else
        echo "not ok $((t + 3)) - tree at $p does not build"
        sed 's/^/# /' "$work/build.log" | tail -n 40
        failed=1
    fi
done
exit $failed
