#!/usr/bin/env bash
# Tests of the project's own harness: the series workflow of
# scripts/qemu-tree.sh on a small stand-in for a QEMU tree, the consistency
# of patches/, and the result counting of scripts/run-tests.py.  Prints TAP.
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
fail() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; [ -f "$tmp/out" ] && sed 's/^/# /' "$tmp/out" | tail -n 15; }
check() { local what=$1; shift; if "$@" >"$tmp/out" 2>&1; then ok "$what"; else fail "$what"; fi; }
check_fails() { local what=$1; shift; if "$@" >"$tmp/out" 2>&1; then fail "$what"; else ok "$what"; fi; cp "$tmp/out" "$tmp/last"; }

G() { git -C "$1" -c safe.directory='*' "${@:2}"; }

# --- a stand-in QEMU 10.2 tree and a two-patch series for it ---------------
fake=$tmp/fake-qemu
mkdir -p "$fake/hw/vfio-user" "$fake/pc-bios"
echo 10.2.2 > "$fake/VERSION"
printf 'line one\nline two\n' > "$fake/hw/vfio-user/pci.c"
printf "fds = [\n  'edk2-x86_64-code.fd',\n]\n" > "$fake/pc-bios/meson.build"

mk_series() {   # build the patches from a throwaway clone
    local work=$tmp/mk
    rm -rf "$work" "$tmp/patches"
    mkdir -p "$tmp/patches"
    cp -r "$fake" "$work"
    G "$work" init -q
    G "$work" add -A
    G "$work" -c user.name=t -c user.email=t@t commit -q -m base
    echo "line three" >> "$work/hw/vfio-user/pci.c"
    G "$work" -c user.name=t -c user.email=t@t commit -q -a -m "first change"
    echo "${1:-line four}" >> "$work/hw/vfio-user/pci.c"
    G "$work" -c user.name=t -c user.email=t@t commit -q -a -m "second change"
    G "$work" format-patch -q --zero-commit -o "$tmp/patches" HEAD~2..HEAD
    (cd "$tmp/patches" && ls 0*.patch) > "$tmp/patches/series"
}
mk_series

export PATCHES_DIR=$tmp/patches
tree=$tmp/tree
qt() { "$top/scripts/qemu-tree.sh" "$@"; }

check "sync creates the tree from --qemu-src and applies the series" qt sync "$tree" "$fake"
check "tree is base plus one commit per patch" \
    test "$(G "$tree" rev-list --count base..HEAD)" = 2
check "base commit is the pristine tree" \
    test -z "$(G "$tree" diff base --stat -- . ':!hw/vfio-user/pci.c')"
check "edk2 placeholder exists and is ignored by git" \
    bash -c "test -e '$tree/pc-bios/edk2-x86_64-code.fd.bz2' && test -z \"\$(git -C '$tree' -c safe.directory='*' status --porcelain)\""
before=$(G "$tree" rev-parse HEAD)
check "sync with unchanged patches leaves the tree alone" \
    bash -c "'$top/scripts/qemu-tree.sh' sync '$tree' '$fake' && test \"\$(git -C '$tree' -c safe.directory='*' rev-parse HEAD)\" = '$before'"

mk_series "line four, changed"
check "changed patches are re-applied on base" qt sync "$tree" "$fake"
check "re-applied tree has the new content" grep -q "line four, changed" "$tree/hw/vfio-user/pci.c"

# Work in the tree that was not exported must never be thrown away.
echo "local edit" >> "$tree/hw/vfio-user/pci.c"
G "$tree" commit -q -a -m "local work"
mk_series "line four, third version"
check_fails "sync refuses to drop unexported commits" qt sync "$tree" "$fake"
check "the refusal says to export" grep -q "export-series" "$tmp/last"
check "the unexported commit is still there" \
    test "$(G "$tree" log -1 --format=%s)" = "local work"

# Export writes the tree's commits back, in a form that re-applies to the
# same tree and is stable when nothing changed.
check "export writes base..HEAD to patches/" qt export "$tree"
check "series lists three patches" test "$(grep -c . "$tmp/patches/series")" = 3
check "cover letter written" test -f "$tmp/patches/0000-cover-letter.patch"
cp -r "$tmp/patches" "$tmp/patches.1"
check "export of an unchanged tree is byte-identical" \
    bash -c "'$top/scripts/qemu-tree.sh' export '$tree' && diff -r '$tmp/patches.1' '$tmp/patches'"
rm -rf "$tree"
check "exported series re-applies to the base" qt sync "$tree" "$fake"
check "re-applied tree has the exported work" grep -q "local edit" "$tree/hw/vfio-user/pci.c"

# A patch that does not apply stops everything and is named.
mk_series
sed -i 's/^ line one$/ no such line/' "$tmp/patches"/0001-*.patch
rm -rf "$tree"
check_fails "a patch that does not apply fails the sync" qt sync "$tree" "$fake"
check "the failure names the patch" grep -q "patch 1 (0001-first-change.patch) does not apply" "$tmp/last"

check_fails "--qemu-src of another QEMU version is refused" \
    bash -c "echo 9.2.0 > '$tmp/VERSION9' && mkdir -p '$tmp/q9' && cp '$tmp/VERSION9' '$tmp/q9/VERSION' && '$top/scripts/qemu-tree.sh' base '$tmp/t9' '$tmp/q9'"
unset PATCHES_DIR

# --- the real series ---------------------------------------------------------
real=$top/patches
check "every patch named in patches/series exists" \
    bash -c "cd '$real' && sed -e 's/#.*//' -e '/^\s*\$/d' series | xargs -r ls >/dev/null"
check "every patch file in patches/ is named in series" \
    bash -c "cd '$real' && for p in [0-9]*.patch; do [ \"\$p\" = 0000-cover-letter.patch ] || grep -qxF \"\$p\" series || exit 1; done"
check "the cover letter has a subject and text of its own" \
    bash -c "! grep -q '\*\*\* \(SUBJECT\|BLURB\) HERE' '$real/0000-cover-letter.patch'"
check "every patch is signed off by the project" \
    bash -c "cd '$real' && for p in \$(cat series); do grep -q '^Signed-off-by: vfio-user client project <' \"\$p\" || exit 1; done"

# --- the server's layers ------------------------------------------------------
# Each file may include only headers of the layers below it (and its own),
# and no file declares a function pointer, through which a lower layer
# could call back up at run time: no cycle, static or dynamic.
server_layers() {
    python3 - "$top/server" <<'PY'
import os, re, sys
order = [["vfio-user-dma-server"], ["commands"], ["device"], ["bench"],
         ["regions"], ["msgdma", "memguard"], ["transport", "protocol"], ["log"]]
layer = {name: i for i, names in enumerate(order) for name in names}
bad = []
for f in sorted(os.listdir(sys.argv[1])):
    base, ext = os.path.splitext(f)
    if ext not in (".c", ".h"):
        continue
    if base not in layer:
        bad.append("%s: not in the list of layers" % f)
        continue
    text = open(os.path.join(sys.argv[1], f)).read()
    for inc in re.findall(r'^#include "([\w-]+)\.h"', text, re.M):
        if inc in layer and inc != base and layer[inc] <= layer[base]:
            bad.append("%s includes %s.h, a layer above or beside it" % (f, inc))
    for fp in re.findall(r'^.*(?:\(\s*\*\s*\w+\s*\)\s*\(|typedef\s[^;{]*\w\s*\().*$', text, re.M):
        bad.append("%s declares a function pointer: %s" % (f, fp.strip()))
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}
check "server: every file includes only the layers below it" server_layers

# --- fetching current libvfio-user -------------------------------------------
# A stand-in for the library: a git repository and a `git archive` tarball of
# it, pinned by a conf of their own.
lvu=$tmp/lvu
mkdir -p "$lvu/repo/include" "$lvu/shared"
echo "/* stand-in */" > "$lvu/repo/include/libvfio-user.h"
G "$lvu/repo" init -q
G "$lvu/repo" add -A
G "$lvu/repo" -c user.name=t -c user.email=t@t commit -q -m lvu
lvu_commit=$(G "$lvu/repo" rev-parse HEAD)
G "$lvu/repo" archive --prefix=lvu-stand-in/ -o "$lvu/shared/lvu.tar.gz" HEAD
lvu_conf() {  # COMMIT: a conf pinning COMMIT, with the tarball's sums
    printf 'LVU_UPSTREAM_URL=%s\nLVU_UPSTREAM_COMMIT=%s\nLVU_UPSTREAM_TARBALL=lvu.tar.gz\nLVU_UPSTREAM_TARDIR=lvu-stand-in\n' \
        "$lvu/repo" "$1" > "$lvu/pin.conf"
    (cd "$lvu/shared" && sha256sum lvu.tar.gz) > "$lvu/pin.SHA256SUMS"
}
fetch_lvu() {  # DIR [FALLBACK_DIR]
    LVU_UPSTREAM_CONF=$lvu/pin.conf LVU_FALLBACK_DIR=${2:-$lvu/shared} \
        LVU_FETCH_TIMEOUT=20 "$top/scripts/fetch-libvfio-user.sh" "$1"
}
lvu_conf "$lvu_commit"
check "fetch-libvfio-user: the pinned commit comes from its repository" fetch_lvu "$lvu/a"
check "... checked out at that commit, no warning" bash -c \
    "test \"\$(git -C '$lvu/a/src' rev-parse HEAD)\" = '$lvu_commit' && grep -qx '$lvu_commit git' '$lvu/a/src.fetched' && ! grep -q WARNING '$tmp/out'"
check "a second fetch is a no-op" bash -c "LVU_UPSTREAM_CONF='$lvu/pin.conf' '$top/scripts/fetch-libvfio-user.sh' '$lvu/a' | grep -q 'already in'"
lvu_conf 0123456789abcdef0123456789abcdef01234567
check "a repository without the pinned commit: the fallback copy" fetch_lvu "$lvu/b"
cp "$tmp/out" "$lvu/b.out"
check "... with a WARNING" grep -q "WARNING: could not get libvfio-user" "$lvu/b.out"
check "... unpacked from the tarball" bash -c \
    "test -f '$lvu/b/src/include/libvfio-user.h' && grep -q ' tarball\$' '$lvu/b/src.fetched'"
echo "tampered" >> "$lvu/shared/lvu.tar.gz"
check_fails "a fallback tarball whose sha256 differs is refused" fetch_lvu "$lvu/c"
check "the refusal says sha256 mismatch" grep -q "sha256 mismatch" "$tmp/last"
check_fails "no repository and no fallback copy: fails" fetch_lvu "$lvu/d" "$lvu/none"

# --- the result counting ------------------------------------------------------
rt() { python3 "$top/scripts/run-tests.py" "$@"; }
check "runner passes a passing suite" rt "a=printf 'ok 1 - x\nok 2 - y\n'"
check "runner's last line is the N passed, N failed summary" \
    bash -c "python3 '$top/scripts/run-tests.py' \"a=printf 'ok 1\nnot ok 2\n'\" | tail -n1 | grep -qx '1 passed, 1 failed, 0 skipped'"
check_fails "runner fails a suite with a failing test" rt "a=printf 'ok 1\nnot ok 2\n'"
check_fails "runner fails a suite that ran no test" rt "a=true"
check_fails "runner fails a suite that crashed after passing tests" rt "a=printf 'ok 1\n'; exit 3"
check_fails "runner kills and fails a suite that leaves a child holding its output" \
    timeout 30 python3 "$top/scripts/run-tests.py" "a=printf 'ok 1\n'; sleep 300.$$ &"
# (sleep's argument carries this run's pid: other harness runs on the
# machine must not count)
check "that child is gone" bash -c "! pgrep -f 'slee[p] 300\.$$\$' >/dev/null"
check_fails "runner stops and fails a suite that runs past its limit" \
    timeout 60 python3 "$top/scripts/run-tests.py" "a@2=printf 'ok 1\n'; sleep 301.$$"
check "the failure names the limit" grep -q "timed out after 2 s" "$tmp/last"
check "the stopped suite's process is gone" bash -c "! pgrep -f 'slee[p] 301\.$$\$' >/dev/null"
check "runner counts only top-level TAP lines, not nested ones" \
    bash -c "python3 '$top/scripts/run-tests.py' \"a=printf 'ok 1\n# not ok 1 - nested\n  not ok 2 - indented\n'\" | tail -n1 | grep -qx '1 passed, 0 failed, 0 skipped'"
summary_evidence() {
    local out
    out=$(python3 "$top/scripts/run-tests.py" "a=printf 'not ok 1 - x\n# because y\n'")
    sed -n '/^Summary/,$p' <<<"$out" | grep -q '# because y'
}
check "a failing case's comment lines appear in the summary" summary_evidence
check "runner does not fail a suite for a '# TODO' known failure" \
    rt "a=printf 'ok 1\nnot ok 2 - x # TODO known: bug 7\n'"
check "... counts it as skipped and lists it in the summary" \
    bash -c "python3 '$top/scripts/run-tests.py' \"a=printf 'ok 1\nnot ok 2 - x # TODO known: bug 7\n'\" > '$tmp/todo' && tail -n1 '$tmp/todo' | grep -qx '1 passed, 0 failed, 1 skipped' && grep -q 'known (TODO): .*bug 7' '$tmp/todo'"
check_fails "runner still fails a suite with a failure beside a TODO one" \
    rt "a=printf 'not ok 1 - x # TODO known: bug 7\nnot ok 2 - y\n'"
check_fails "runner fails a suite of TODO lines that exits non-zero" \
    rt "a=printf 'not ok 1 - x # TODO known\n'; exit 1"

echo "1..$n"
exit $failed
