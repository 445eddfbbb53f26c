#!/usr/bin/env bash
# README's instructions, followed on a Debian 12 made fresh for this run.
#
#   scripts/check-fresh.sh [REPO]        (as root; REPO: default this checkout)
#
# 1. debootstrap --variant=minbase bookworm into a new directory, from the
#    Debian mirror this machine's apt uses; a root that cannot be made is a
#    failure, never a reason to run on this machine instead.
# 2. Copy in this machine's apt configuration (its Debian sources and
#    apt.conf.d), so that the root reaches the same archive the same way.
# 3. In the root, only what README tells a user to install by hand:
#    apt-get update; apt-get install --no-install-recommends git make.
# 4. git clone of REPO's committed HEAD (uncommitted and untracked files are
#    not part of it), then README's two commands there: make run, make check.
#
# From this machine the root sees only: /proc, /sys and /dev (bind mounts),
# /etc/resolv.conf (copied by debootstrap), the apt configuration above,
# REPO/../shared read-only beside the clone (the project's fallback copies of
# its inputs), and the ccache directory (a cache of compiler output, not an
# install step).  debootstrap's .deb downloads are cached across runs in
# $FRESH_WORKDIR/debs (a cache too); the root itself is made anew every run
# and deleted afterwards.  Commands in the root run with an empty environment
# but for HOME, PATH and TERM.
#
# The last line is make check's "N passed, N failed, N skipped" (a failing
# make run counts as one more failure; a run that never got to the tests
# prints "0 passed, 1 failed, 0 skipped").  Every mount is undone and every
# process left in the root is killed on every way out.
#
# Environment: FRESH_WORKDIR (default /var/tmp/vfio-user-fresh),
# FRESH_TIMEOUT (minutes for the whole run, default 80), FRESH_KEEP=1 (keep
# the root, unmounted, for a look afterwards), FRESH_MIRROR (override the
# mirror found in the apt sources).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "${1:-$here/..}" && pwd) || exit 2
suite=bookworm
project_sources=vfio-user-dma.sources   # written by install-deps.sh, not copied
workdir=${FRESH_WORKDIR:-/var/tmp/vfio-user-fresh}
timeout_min=${FRESH_TIMEOUT:-80}
in_root_clone=/work/vfio-user-dma
in_root_shared=/work/shared
in_root_ccache=/root/.cache/ccache

say() { echo "check-fresh: $*"; }
t0=$(date +%s)
deadline=$((t0 + timeout_min * 60))
status=1
summary=""
run_failed=false
timings=()

# Long steps run in the background while the script waits for them: bash
# runs a trap only once the foreground command has ended, whereas `wait`
# returns at once on a signal.  The step's own process is ended on the way
# out as well (debootstrap runs outside the root).
job=""
waitfor() {
    "$@" &
    job=$!
    wait "$job"
    local s=$?
    job=""
    return "$s"
}

finish() {
    # Called on every way out: the summary line last.
    local s=$? i
    if [ -n "$job" ] && kill -0 "$job" 2>/dev/null; then
        kill -TERM "$job" 2>/dev/null
        for i in $(seq 50); do kill -0 "$job" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$job" 2>/dev/null
    fi
    [ -n "${run_dir:-}" ] && teardown "$run_dir/root"
    if [ ${#timings[@]} -gt 0 ]; then
        local IFS=,
        say "timings: ${timings[*]}; total $(( $(date +%s) - t0 )) s" | sed 's/,/, /g'
    fi
    if [ -z "$summary" ]; then
        say "no test ran: the fresh root or the build failed (see above)"
        summary="0 passed, 1 failed, 0 skipped"
        status=1
    fi
    echo "$summary"
    [ "$s" -ne 0 ] && [ "$status" -eq 0 ] && status=$s
    exit "$status"
}

die() { say "$*" >&2; exit 1; }

# Processes whose root directory is ROOT or below it.
procs_in() {
    local r=$1 p link
    for p in /proc/[0-9]*; do
        link=$(readlink "$p/root" 2>/dev/null) || continue
        case "$link" in "$r"|"$r"/*) echo "${p#/proc/}" ;; esac
    done
}

# Mount points at or below ROOT, deepest first.
mounts_in() {
    local r=$1
    awk -v r="$r" '{ m = $5; gsub(/\\040/, " ", m)
                     if (m == r || index(m, r "/") == 1) print length(m), m }' \
        /proc/self/mountinfo | sort -rn | cut -d' ' -f2- | uniq
}

# Kill what runs in ROOT, undo its mounts, delete it (unless FRESH_KEEP).
# Deleting only ever happens with nothing mounted below it: a bind mount of
# /dev or of the ccache would otherwise be emptied on the host.
teardown() {
    local r=$1 pids i m left
    [ -d "$r" ] || return 0
    pids=$(procs_in "$r")
    if [ -n "$pids" ]; then
        say "killing processes left in the root: $(echo $pids)"
        kill -TERM $pids 2>/dev/null
        for i in $(seq 50); do
            [ -n "$(procs_in "$r")" ] || break
            sleep 0.2
        done
        pids=$(procs_in "$r")
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
        sleep 0.5
    fi
    for i in 1 2 3 4 5; do
        left=$(mounts_in "$r")
        [ -n "$left" ] || break
        while IFS= read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done <<<"$left"
    done
    left=$(mounts_in "$r")
    if [ -n "$left" ]; then
        say "WARNING: still mounted, $r left in place: $(echo $left)" >&2
        return 1
    fi
    if [ "${FRESH_KEEP:-0}" = 1 ] && [ "$r" = "${run_dir:-}/root" ]; then
        say "root kept (unmounted) in $r$([ -f "$(dirname "$r")/root.img" ] && echo ", image $(dirname "$r")/root.img")"
    else
        rm -rf --one-file-system "$(dirname "$r")"
    fi
}

trap finish EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM HUP

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, mount, chroot)"
git -C "$repo" rev-parse --verify -q HEAD >/dev/null || die "$repo is not a git checkout with a commit"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    say "note: $repo has uncommitted changes; the fresh root gets the committed HEAD only"
fi

if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap on this machine (the tool that makes the root)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
        die "cannot install debootstrap, so no fresh root can be made"
fi

# The Debian mirror of this machine: the first deb source that serves
# bookworm itself, in one-line or deb822 form.
find_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                               if ($(i + 1) == s) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$suite" '
            function flush() { if (deb && on && has && uri != "") { print uri; found = 1 }
                               deb = 0; on = 1; has = 0; uri = "" }
            BEGIN { on = 1 }
            /^[[:space:]]*$/ { flush(); if (found) exit; next }
            /^#/ { next }
            tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) has = 1 }
            tolower($1) == "enabled:" { if (tolower($2) == "no") on = 0 }
            END { if (!found) flush() }' "$f"
    done
}
mirror=${FRESH_MIRROR:-$(find_mirror | head -n1)}
[ -n "$mirror" ] || die "no apt source of this machine serves $suite; set FRESH_MIRROR"

# apt's proxy, if any, for debootstrap's downloads too.
eval "$(apt-config shell http_proxy Acquire::http::Proxy 2>/dev/null)"
[ -n "${http_proxy:-}" ] && export http_proxy

mkdir -p "$workdir/debs" || die "cannot create $workdir"
# Roots of earlier runs that died without cleaning up (their lock is free).
for d in "$workdir"/run.*; do
    # No lock file: a run just starting or just finishing.
    [ -f "$d/lock" ] || continue
    if flock -n "$d/lock" true 2>/dev/null; then
        say "removing the root of an earlier run that did not finish: $d"
        teardown "$d/root"
    fi
done
run_dir=$(mktemp -d "$workdir/run.XXXXXX") || die "cannot create a run directory in $workdir"
exec 9>"$run_dir/lock"
flock -n 9 || die "cannot lock $run_dir/lock"
root=$run_dir/root
mkdir "$root"

# --- 1. the root -----------------------------------------------------------
t=$(date +%s)
# The root lives on a file system of its own in a sparse image file: deleting
# a root with a built QEMU file by file takes minutes on a busy disk, deleting
# one image file takes a moment.  Without loop devices, a plain directory.
if command -v mkfs.ext4 >/dev/null &&
   truncate -s "${FRESH_IMAGE_SIZE:-64G}" "$run_dir/root.img" &&
   mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1,nodiscard \
       "$run_dir/root.img" 2>"$run_dir/mkfs.log" &&
   mount -o loop,noinit_itable "$run_dir/root.img" "$root" 2>>"$run_dir/mkfs.log"; then
    rmdir "$root/lost+found"
    where="a file system of its own ($run_dir/root.img, sparse)"
else
    rm -f "$run_dir/root.img"
    where="a directory (no loop-mounted image possible: $(tail -n1 "$run_dir/mkfs.log" 2>/dev/null))"
fi
free=$(df -Pm "$run_dir" | awk 'NR == 2 { print $4 }')
[ "${free:-0}" -ge 12000 ] || say "WARNING: only ${free} MiB free in $workdir; a full run writes about 10 GiB"
say "making a fresh Debian 12 root on $where: debootstrap --variant=minbase $suite $root $mirror"
if ! waitfor timeout 900 debootstrap --variant=minbase --cache-dir="$workdir/debs" \
        "$suite" "$root" "$mirror" > "$run_dir/debootstrap.log" 2>&1; then
    tail -n 20 "$run_dir/debootstrap.log" | sed 's/^/    /' >&2
    [ -f "$root/debootstrap/debootstrap.log" ] &&
        tail -n 20 "$root/debootstrap/debootstrap.log" | sed 's/^/    /' >&2
    die "cannot make the Debian 12 root: debootstrap failed (above); not falling back to this machine"
fi
dt=$(( $(date +%s) - t ))
timings+=("root ${dt} s")
say "made the root in ${dt} s ($(du -sm "$root" | cut -f1) MiB)"

# --- 2. this machine's apt configuration ------------------------------------
# Sources whose keys a fresh Debian has (its archive keyring, or no
# Signed-By); the project's own sources file is left for install-deps.sh to
# write, as it does for a user.
copied=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    [ "$(basename "$f")" = "$project_sources" ] && continue
    grep -qvE '^[[:space:]]*(#|$)' "$f" || continue
    keys=$(grep -oiE '(signed-by[:=][[:space:]]*)[^] ]+' "$f" | sed -E 's/^[^:=]*[:=][[:space:]]*//' | sort -u)
    missing=""
    for k in $keys; do [ -e "$root$k" ] || missing="$missing $k"; done
    if [ -n "$missing" ]; then
        say "not copying $f: its key ($missing) is not part of a fresh Debian"
        continue
    fi
    mkdir -p "$root$(dirname "$f")"
    cp "$f" "$root$f"
    copied+=("$f")
done
[ ${#copied[@]} -gt 0 ] || die "no apt source of this machine can be used in the root"
# debootstrap wrote a one-line sources.list for the mirror; the copied
# sources replace it unless the machine has one itself.
[ -f /etc/apt/sources.list ] || rm -f "$root/etc/apt/sources.list"
[ -f /etc/apt/apt.conf ] && cp /etc/apt/apt.conf "$root/etc/apt/apt.conf" && copied+=(/etc/apt/apt.conf)
for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && cp "$f" "$root/etc/apt/apt.conf.d/" && copied+=("$f")
done
say "apt configuration copied in: ${copied[*]}"

# --- mounts -----------------------------------------------------------------
bind() {  # SRC DST [ro]
    mkdir -p "$2" && mount --rbind "$1" "$2" && mount --make-rslave "$2" &&
        { [ "${3:-}" != ro ] || mount -o remount,bind,ro "$2"; } ||
        die "cannot bind-mount $1 on $2"
}
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
shared=$(cd "$repo/.." && pwd)/shared
if [ -d "$shared" ]; then
    bind "$shared" "$root$in_root_shared" ro
    say "$shared is visible read-only as $in_root_shared, beside the clone"
else
    say "note: no $shared beside the checkout; the root has no fallback copies"
fi
ccache_dir=${CCACHE_DIR:-}
if [ -z "$ccache_dir" ] && command -v ccache >/dev/null; then
    ccache_dir=$(ccache -k cache_dir 2>/dev/null)
fi
ccache_dir=${ccache_dir:-$HOME/.cache/ccache}
mkdir -p "$ccache_dir" && bind "$ccache_dir" "$root$in_root_ccache"
say "compiler cache shared: $ccache_dir as $in_root_ccache"

# --- running in the root -------------------------------------------------------
# CMD runs under bash in the root with a clean environment, no stdin, and
# what is left of the overall time limit.
in_root() {
    local left=$((deadline - $(date +%s)))
    [ "$left" -gt 0 ] || { say "out of time (FRESH_TIMEOUT=$timeout_min min)"; return 124; }
    timeout --kill-after=30 "$left" chroot "$root" /usr/bin/env -i \
        HOME=/root TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash -c "$1" </dev/null
    local s=$?
    [ "$s" -ne 124 ] || say "out of time (FRESH_TIMEOUT=$timeout_min min) in: $1"
    return "$s"
}
phase() {  # NAME CMD: run and time one step; its status is returned
    local t s
    say "--- $1: $2"
    t=$(date +%s)
    waitfor in_root "$2"
    s=$?
    timings+=("$1 $(( $(date +%s) - t )) s")
    return "$s"
}

# --- 3. what README says to install by hand ---------------------------------
phase "git+make" "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git make >/dev/null && git --version && make --version | head -n1" ||
    die "installing git and make in the root failed"

# Nothing the project installs may be there yet: a root that has them is
# not the minimal Debian README speaks of.
present=$(in_root "for p in gcc python3 ninja-build meson libglib2.0-dev libfdt-dev ccache; do dpkg-query -W -f='\${db:Status-Abbrev} \${Package}\n' \$p 2>/dev/null; done | sed -n 's/^ii  *//p' | tr '\n' ' '")
[ -z "$present" ] || die "the root is not minimal, it already has: $present"
say "the root has $(in_root "dpkg-query -W -f='.' | wc -c") packages, none of the project's own dependencies"

# --- 4. a fresh clone and README's commands ---------------------------------
git -C "$repo" bundle create -q "$root/tmp/src.bundle" HEAD $(git -C "$repo" symbolic-ref -q HEAD) ||
    die "cannot bundle $repo's HEAD"
say "cloning $repo at $(git -C "$repo" log -1 --format='%h %s')"
waitfor in_root "mkdir -p $(dirname "$in_root_clone") && git clone -q /tmp/src.bundle $in_root_clone && rm /tmp/src.bundle" ||
    die "git clone in the root failed"

# Compiler cache hits and misses over README's commands, read with this
# machine's ccache if it has one (counted for the whole cache directory, so
# builds elsewhere sharing it count too).
ccache_counts() {
    command -v ccache >/dev/null || return 0
    CCACHE_DIR=$ccache_dir ccache --print-stats 2>/dev/null |
        awk '$1 ~ /^(direct|preprocessed)_cache_hit$/ { h += $2 } $1 == "cache_miss" { m = $2 }
             END { print h + 0, m + 0 }'
}
ccache_before=$(ccache_counts)

if ! phase "make run" "cd $in_root_clone && make run"; then
    run_failed=true
    say "make run FAILED in the fresh root"
fi
log=$run_dir/check.log
say "--- make check: cd $in_root_clone && make check"
t=$(date +%s)
check_and_log() {
    in_root "cd $in_root_clone && make check" 2>&1 | tee "$log"
    return "${PIPESTATUS[0]}"
}
waitfor check_and_log
status=$?
timings+=("make check $(( $(date +%s) - t )) s")
ccache_after=$(ccache_counts)
if [ -n "$ccache_before" ] && [ -n "$ccache_after" ]; then
    read -r h1 m1 <<<"$ccache_before"
    read -r h2 m2 <<<"$ccache_after"
    say "compiler cache during this run: $((h2 - h1)) hits, $((m2 - m1)) misses"
fi
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | tail -n 1)
if [ -n "$summary" ] && $run_failed; then
    read -r p _ f _ s _ <<<"$summary"
    summary="$p passed, $((f + 1)) failed, $s skipped"
    say "make run failed: counted as one more failure"
    status=1
fi
$run_failed && status=1
exit "$status"
