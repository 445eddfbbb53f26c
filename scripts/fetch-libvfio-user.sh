#!/usr/bin/env bash
# Fetch current libvfio-user at the pinned commit into DIR/src.
#
#   scripts/fetch-libvfio-user.sh DIR
#
# Order: a tree already in DIR/src that was fetched for the pinned commit;
# then the library's own repository (git, bounded by LVU_FETCH_TIMEOUT
# seconds, default 60), accepted only if `git rev-parse HEAD` is the pinned
# commit; then the tarball in ../shared/libvfio-user/ (with a warning: that
# copy is a fallback for machines that cannot reach the repository), checked
# against tests/interop/libvfio-user-upstream.SHA256SUMS.  The values live in
# tests/interop/libvfio-user-upstream.conf.  Nothing here is ever committed;
# tests/interop/build-libvfio-user.sh builds the result.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
# LVU_UPSTREAM_CONF: another pin (the harness self-tests use one); its
# SHA256SUMS lies beside it.
conf="${LVU_UPSTREAM_CONF:-$top/tests/interop/libvfio-user-upstream.conf}"
# shellcheck source=../tests/interop/libvfio-user-upstream.conf
. "$conf"
sums="${conf%.conf}.SHA256SUMS"
url="${LVU_UPSTREAM_URL_OVERRIDE:-$LVU_UPSTREAM_URL}"
fallback="${LVU_FALLBACK_DIR:-$top/../shared/libvfio-user}"
timeout_s="${LVU_FETCH_TIMEOUT:-60}"
commit=$LVU_UPSTREAM_COMMIT

dir=${1:?usage: fetch-libvfio-user.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
src="$dir/src"
stamp="$dir/src.fetched"      # "COMMIT git" or "COMMIT tarball"

if [ -f "$stamp" ] && [ "$(cut -d' ' -f1 "$stamp")" = "$commit" ] &&
   [ -f "$src/include/libvfio-user.h" ]; then
    echo "fetch-libvfio-user: $commit already in $src ($(cut -d' ' -f2 "$stamp"))"
    exit 0
fi
rm -rf "$src" "$stamp" "$dir/git.tmp" "$dir/tar.tmp"

# --- the library's own repository -------------------------------------------
echo "fetch-libvfio-user: git fetch $url $commit (timeout ${timeout_s} s)"
try_git() {
    local g="$dir/git.tmp"
    git init -q "$g" &&
    # A commit by its hash first (GitHub serves that), else the whole
    # history; each attempt bounded, no credential prompts.
    { GIT_TERMINAL_PROMPT=0 timeout "$timeout_s" \
          git -C "$g" fetch -q --depth 1 "$url" "$commit" ||
      GIT_TERMINAL_PROMPT=0 timeout "$timeout_s" \
          git -C "$g" fetch -q "$url" '+refs/heads/*:refs/remotes/origin/*'; } &&
    git -C "$g" -c advice.detachedHead=false checkout -q --detach "$commit" &&
    [ "$(git -C "$g" rev-parse HEAD)" = "$commit" ]
}
if try_git >"$dir/git-fetch.log" 2>&1; then
    mv "$dir/git.tmp" "$src"
    echo "$commit git" > "$stamp"
    echo "fetch-libvfio-user: got $commit from $url; git rev-parse HEAD matches"
    exit 0
fi
rm -rf "$dir/git.tmp"

# --- the fallback copy --------------------------------------------------------
echo "fetch-libvfio-user: WARNING: could not get libvfio-user $commit from $url" >&2
echo "fetch-libvfio-user: WARNING: (see $dir/git-fetch.log); using the fallback copy in $fallback" >&2
tarball="$fallback/$LVU_UPSTREAM_TARBALL"
if [ ! -f "$tarball" ]; then
    echo "fetch-libvfio-user: $tarball is missing too: cannot get libvfio-user" >&2
    exit 1
fi
mkdir -p "$dir/tar.tmp"
cp "$tarball" "$dir/tar.tmp/"
if ! (cd "$dir/tar.tmp" && sha256sum --quiet --check "$sums" >/dev/null 2>&1); then
    echo "fetch-libvfio-user: sha256 mismatch for $tarball:" >&2
    (cd "$dir/tar.tmp" && sha256sum --check "$sums" >&2) || true
    rm -rf "$dir/tar.tmp"
    exit 1
fi
tar -xzf "$dir/tar.tmp/$LVU_UPSTREAM_TARBALL" -C "$dir/tar.tmp"
if [ ! -f "$dir/tar.tmp/$LVU_UPSTREAM_TARDIR/include/libvfio-user.h" ]; then
    echo "fetch-libvfio-user: $tarball does not unpack to $LVU_UPSTREAM_TARDIR/" >&2
    rm -rf "$dir/tar.tmp"
    exit 1
fi
mv "$dir/tar.tmp/$LVU_UPSTREAM_TARDIR" "$src"
rm -rf "$dir/tar.tmp"
echo "$commit tarball" > "$stamp"
echo "fetch-libvfio-user: fallback copy checked against $sums"
