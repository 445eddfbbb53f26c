#!/usr/bin/env bash
# The scratch QEMU git tree: its first commit (tag `base`) is the pristine
# base, then one commit per patch of patches/series.
#
#   scripts/qemu-tree.sh base   TREE [USER_SRC]  create TREE with the base commit only
#   scripts/qemu-tree.sh sync   TREE [USER_SRC]  create if needed, (re)apply the series
#                                                when patches/ changed
#   scripts/qemu-tree.sh apply  TREE             git am patches/series onto HEAD
#   scripts/qemu-tree.sh export TREE             write base..HEAD back to patches/
#   scripts/qemu-tree.sh placeholders TREE       (for worktrees) see placeholders()
#
# USER_SRC is a QEMU 10.2.x tree of the user's own (configure --qemu-src);
# without it the base is Debian's source package, fetched into
# $BUILD_DIR/download by scripts/fetch-qemu.sh.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../qemu/base.conf
. "$top/qemu/base.conf"
patches=${PATCHES_DIR:-$top/patches}
build_dir=${BUILD_DIR:-$top/build}
ident_name="vfio-user client project"
ident_email="devel@vfio-user-client.invalid"

die() { echo "qemu-tree: $*" >&2; exit 1; }

g() { git -C "$tree" -c safe.directory='*' "$@"; }

series_list() {
    [ -f "$patches/series" ] || return 0
    sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$patches/series"
}

# A hash of everything that decides the tree's content: the series file and
# the patches it names.
series_hash() {
    { cat "$patches/series" 2>/dev/null || true
      series_list | while read -r p; do cat "$patches/$p"; done
    } | sha256sum | cut -d' ' -f1
}

stamp_file() { echo "$(g rev-parse --path-format=absolute --git-dir)/vfio-user-series.stamp"; }

# The +ds tarball has no firmware blobs; QEMU's meson still wants the edk2
# images' .bz2 sources for x86_64.  Empty placeholders (untracked, excluded)
# let it configure; x86 guests here boot SeaBIOS from Debian's package.
placeholders() {
    local f list exclude
    exclude="$(g rev-parse --path-format=absolute --git-common-dir)/info/exclude"
    mkdir -p "$(dirname "$exclude")"
    list=$(sed -n "/fds = \[/,/\]/p" "$tree/pc-bios/meson.build" |
           grep -o "'edk2[^']*'" | tr -d "'") || true
    for f in $list; do
        if [ ! -e "$tree/pc-bios/$f.bz2" ]; then
            bzip2 -c </dev/null > "$tree/pc-bios/$f.bz2"
            grep -qxF "/pc-bios/$f.bz2" "$exclude" 2>/dev/null ||
                echo "/pc-bios/$f.bz2" >> "$exclude"
        fi
    done
}

# A fresh repository with the whole tree as one commit.  That commit
# leaves enough loose objects to start an automatic repack of all of QEMU
# in the background: not wanted in the middle of a build.
commit_tree() {
    g init -q
    g config gc.auto 0
    g add -A -f .
    g -c user.name="$ident_name" -c user.email="$ident_email" commit -q -m "$1"
}

create_base() {
    local user_src=${1:-}
    [ -e "$tree" ] && die "$tree exists already"
    mkdir -p "$(dirname "$tree")"
    if [ -n "$user_src" ]; then
        [ -f "$user_src/VERSION" ] || die "--qemu-src=$user_src is not a QEMU source tree"
        case "$(cat "$user_src/VERSION")" in
        10.2.*) ;;
        *) die "--qemu-src=$user_src is QEMU $(cat "$user_src/VERSION"); the series is for 10.2.x" ;;
        esac
        echo "qemu-tree: base = your tree $user_src"
        if git -C "$user_src" -c safe.directory='*' rev-parse --git-dir >/dev/null 2>&1; then
            git -c safe.directory='*' clone -q --no-hardlinks "$user_src" "$tree"
            g config gc.auto 0
            g checkout -q -B vfio-user-dma
        else
            mkdir -p "$tree"
            tar -C "$user_src" --exclude=./build -cf - . | tar -C "$tree" --no-same-owner -xf -
            commit_tree "QEMU $(cat "$user_src/VERSION") from $user_src"
        fi
    else
        local dl="$build_dir/download"
        "$top/scripts/fetch-qemu.sh" "$dl"
        echo "qemu-tree: unpacking $QEMU_ORIG_TARBALL"
        local tmp="$tree.tmp"
        rm -rf "$tmp"
        mkdir -p "$tmp"
        tar -C "$tmp" --no-same-owner -xf "$dl/$QEMU_ORIG_TARBALL"
        mv "$tmp"/qemu-* "$tree"
        rmdir "$tmp"
        commit_tree "QEMU $QEMU_UPSTREAM_VERSION (Debian $QEMU_ORIG_TARBALL)"
    fi
    g tag -f base >/dev/null
    g config user.name "$ident_name"
    g config user.email "$ident_email"
    placeholders
}

apply_series() {
    local p n=0
    for p in $(series_list); do
        n=$((n + 1))
        [ -f "$patches/$p" ] || die "patches/series names $p, which does not exist"
        if ! g am -q --keep-cr "$patches/$p" >/dev/null 2>"$(stamp_file).am.log"; then
            g am --abort >/dev/null 2>&1 || true
            sed 's/^/    /' "$(stamp_file).am.log" >&2
            die "patch $n ($p) does not apply"
        fi
    done
    echo "qemu-tree: applied $n patches"
    printf '%s %s\n' "$(series_hash)" "$(g rev-parse HEAD)" > "$(stamp_file)"
}

sync_tree() {
    local user_src=${1:-}
    if [ ! -d "$tree/.git" ]; then
        create_base "$user_src"
        apply_series
        return
    fi
    local want have_hash have_head=""
    want=$(series_hash)
    read -r have_hash have_head < "$(stamp_file)" 2>/dev/null || have_hash=""
    [ "$want" = "$have_hash" ] && return 0
    # patches/ changed.  Rebuild the tree from `base` only if it holds no work
    # of its own that would be lost.
    if [ -n "$have_head" ] && [ "$(g rev-parse HEAD)" != "$have_head" ]; then
        die "$tree has commits that are not in patches/: run 'make export-series' (or remove the tree)"
    fi
    if [ -n "$(g status --porcelain --untracked-files=no)" ]; then
        die "$tree has uncommitted changes: commit and 'make export-series' them, or discard them"
    fi
    echo "qemu-tree: patches/ changed; re-applying the series on base"
    g reset -q --hard base
    apply_series
}

export_series() {
    [ -d "$tree/.git" ] || die "no tree at $tree (make qemu-src)"
    [ -z "$(g status --porcelain --untracked-files=no)" ] ||
        die "$tree has uncommitted changes; commit them first"
    local n
    n=$(g rev-list --count base..HEAD)
    [ "$n" -gt 0 ] || die "no commits on top of base"

    # Keep the cover letter's subject and text across exports.
    local cover="$patches/0000-cover-letter.patch" subject="" blurb=""
    if [ -f "$cover" ]; then
        subject=$(sed -n 's/^Subject: \[PATCH [0-9]*\/[0-9]*\] //p' "$cover" | head -n1)
        blurb=$(awk '/^$/ && !body {body=1; next} body && /^[^ ].* \([0-9]+\):$/ {exit} body {print}' "$cover")
    fi

    local out
    out=$(mktemp -d)
    g format-patch -q --cover-letter --zero-commit --no-signature \
        --subject-prefix=PATCH -o "$out" base..HEAD
    # The cover letter's date is that of the newest commit, so that exporting
    # an unchanged tree gives identical files.
    python3 - "$out/0000-cover-letter.patch" "$subject" "$blurb" \
        "$(g log -1 --format=%aD HEAD)" <<'EOF'
import re, sys
path, subject, blurb, date = sys.argv[1:5]
text = open(path).read()
text = re.sub(r"^Date: .*$", "Date: " + date, text, count=1, flags=re.M)
if subject:
    text = text.replace("*** SUBJECT HERE ***", subject, 1)
    text = text.replace("*** BLURB HERE ***\n", blurb.rstrip("\n") + "\n", 1)
open(path, "w").write(text)
EOF
    rm -f "$patches"/[0-9][0-9][0-9][0-9]-*.patch
    cp "$out"/*.patch "$patches/"
    (cd "$out" && ls [0-9][0-9][0-9][0-9]-*.patch | grep -v '^0000-') > "$patches/series"
    rm -rf "$out"
    printf '%s %s\n' "$(series_hash)" "$(g rev-parse HEAD)" > "$(stamp_file)"
    echo "qemu-tree: exported $n patches to patches/"
    if grep -q '\*\*\* \(SUBJECT\|BLURB\) HERE' "$cover"; then
        echo "qemu-tree: now write the cover letter's subject and text in $cover" >&2
    fi
}

cmd=${1:-}
tree=${2:-}
[ -n "$cmd" ] && [ -n "$tree" ] || { sed -n "2,15p" "$0" >&2; exit 2; }
case "$cmd" in
base) create_base "${3:-}" ;;
sync) sync_tree "${3:-}" ;;
apply) apply_series ;;
export) export_series ;;
placeholders) placeholders ;;
*) die "unknown command $cmd" ;;
esac
