#!/usr/bin/env python3
"""Run QEMU's own qtest suite for x86_64 against a build and print TAP, one
line per test program (its subtests are summed up on that line).

    scripts/run-qemu-qtests.py BUILD [--config FILE] [--only NAME,...]
                               [--excluded] [--with-slow] [--jobs N] [--kvm]

The test programs, their arguments, environment and time limits come from
the build's meson test list (suite qtest-x86_64); the programs must be built
(make qemu-qtests).  FILE (default qemu/qtest-x86_64.conf) says what differs
from meson's own run:

    NAME exclude REASON   fails for a reason outside the series: not run,
                          reported as skipped with the reason
    NAME slow REASON      passes but takes too long for `make check`: not
                          run unless --with-slow, and then without --full
                          (its quick set of subtests)

TCG: many programs boot guests with "-accel kvm -accel tcg", i.e. with KVM
whenever /dev/kvm opens.  Where KVM is nested or broken (on the 2-core test
machine SeaBIOS takes seconds and pxe-test's guest stops with a KVM
internal error) results would depend on the host, so by default every
program runs in a mount namespace of its own in which /dev/kvm is
/dev/null: QEMU's KVM set-up fails and it falls back to TCG, as the
project's other tests run.  This needs root (as `make check` has); --kvm
lets the programs use the host's KVM instead.

--excluded runs only the excluded programs, as meson would; that is how
scripts/compare-qtest-exclusions.py shows they fail the same way without the
series.  A program passes when it exits with status 0 and reports no failed
subtest within its time limit; on a failure the failing subtests and the
end of its output are printed as TAP comments.  Nothing is left running: each
program runs in a process group of its own, which is killed when it ends.
"""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "..", "qemu", "qtest-x86_64.conf")
SUITE = "qtest-x86_64"
SUBTEST = re.compile(r"^\s*(not ok|ok)\s+\d+\s*(.*)$")


def read_config(path):
    """{name: (action, reason)}; bad lines are errors, not ignored."""
    conf = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 3 or parts[1] not in ("exclude", "slow"):
                sys.exit(f"{path}:{n}: expected 'NAME exclude|slow REASON'")
            conf[parts[0]] = (parts[1], parts[2])
    return conf


def list_tests(build):
    out = subprocess.run(["meson", "introspect", "--tests", build], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    tests = []
    for t in json.loads(out):
        if SUITE in t["suite"] or "qemu:" + SUITE in t["suite"]:
            t["short"] = t["name"].split("/", 1)[-1]
            tests.append(t)
    return sorted(tests, key=lambda t: t["short"])


# Run a command with /dev/kvm replaced by /dev/null in a private mount
# namespace: QEMU's "-accel kvm" then fails to initialise and it falls back
# to TCG; nothing changes outside the namespace.
NO_KVM = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
          'mount --bind /dev/null /dev/kvm && exec "$@"', "sh"]


def run_one(test, build, quick, log_dir, multiplier, hide_kvm):
    cmd = list(test["cmd"])
    if quick:
        cmd = [a for a in cmd if a != "--full"]
    if hide_kvm:
        cmd = NO_KVM + cmd
    env = dict(os.environ)
    env.update(test.get("env") or {})
    limit = test["timeout"] * multiplier
    log_path = os.path.join(log_dir, test["short"] + ".log")
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=test.get("workdir") or build, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log, text=True, errors="replace",
                                start_new_session=True)
        timed_out = False
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.write("\n=== stdout\n" + out)
    secs = time.monotonic() - start
    passed, failed, skipped = 0, [], 0
    for line in out.splitlines():
        m = SUBTEST.match(line)
        if not m:
            continue
        if re.search(r"#\s*(SKIP|TODO)", m.group(2), re.IGNORECASE):
            skipped += 1
        elif m.group(1) == "ok":
            passed += 1
        else:
            failed.append(m.group(2).strip())
    plan_skip = re.search(r"^1\.\.0\b(?:.*#\s*SKIP\s*(.*))?$", out, re.MULTILINE)
    if plan_skip:
        plan_skip = plan_skip.group(1) or "the program has no subtest to run here"
    return {"rc": proc.returncode, "timed_out": timed_out, "secs": secs, "limit": limit,
            "passed": passed, "failed": failed, "skipped": skipped,
            "plan_skip": plan_skip, "log": log_path}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--only", help="comma-separated program names (e.g. cdrom-test)")
    ap.add_argument("--excluded", action="store_true",
                    help="run only the excluded programs, unchanged")
    ap.add_argument("--with-slow", action="store_true",
                    help="run the slow programs too (their quick set)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout-multiplier", type=float, default=1.0)
    ap.add_argument("--kvm", action="store_true",
                    help="let the programs use the host's KVM (default: TCG only)")
    ap.add_argument("--log-dir", help="default: BUILD/qemu-qtests-logs")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    conf = read_config(args.config)
    tests = list_tests(build)
    if not tests:
        print(f"not ok 1 - no {SUITE} tests registered in {build}")
        return 1
    names = {t["short"] for t in tests}
    for name in conf:
        if name not in names:
            print(f"# note: {args.config} names {name}, which this build does not have")
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - names
        if unknown:
            print(f"not ok 1 - unknown test programs: {', '.join(sorted(unknown))}")
            return 1
        tests = [t for t in tests if t["short"] in wanted]
    if args.excluded:
        tests = [t for t in tests if conf.get(t["short"], ("",))[0] == "exclude"]
    missing = [t["short"] for t in tests if not os.access(t["cmd"][0], os.X_OK)]
    if missing:
        print(f"not ok 1 - not built: {', '.join(missing)} (make qemu-qtests)")
        return 1
    log_dir = args.log_dir or os.path.join(build, "qemu-qtests-logs")
    os.makedirs(log_dir, exist_ok=True)

    hide_kvm = os.path.exists("/dev/kvm") and not args.kvm
    if hide_kvm:
        probe = subprocess.run(NO_KVM + ["test", "/dev/kvm", "-ef", "/dev/null"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if probe.returncode != 0:
            print(f"not ok 1 - cannot hide /dev/kvm in a mount namespace "
                  f"(needs root and unshare; or pass --kvm): {probe.stderr.strip()}")
            return 1

    print(f"1..{len(tests)}", flush=True)
    lock = threading.Lock()
    counter = [0]
    failed_programs = 0
    subtests = [0, 0, 0]

    def report(test, res, how):
        nonlocal failed_programs
        with lock:
            counter[0] += 1
            n = counter[0]
            name = test["name"]
            subtests[0] += res["passed"]
            subtests[1] += len(res["failed"])
            subtests[2] += res["skipped"]
            detail = (f"{res['passed']} subtests passed, {res['skipped']} skipped, "
                      f"{res['secs']:.0f} s{how}")
            ok = res["rc"] == 0 and not res["failed"] and not res["timed_out"]
            if ok and res["plan_skip"] is not None:
                print(f"ok {n} - {name} # SKIP {res['plan_skip'] or 'skipped by the test'}")
            elif ok:
                print(f"ok {n} - {name} ({detail})")
            else:
                failed_programs += 1
                why = (f"timed out after {res['limit']:.0f} s" if res["timed_out"]
                       else f"exit status {res['rc']}")
                print(f"not ok {n} - {name} ({why}; {detail})")
                for f in res["failed"][:20]:
                    print(f"  # failed subtest: {f}")
                with open(res["log"], errors="replace") as f:
                    tail = f.read().strip().splitlines()[-15:]
                for line in tail:
                    print(f"  # {line}")
                print(f"  # full output: {res['log']}")
            sys.stdout.flush()

    todo = []
    for t in tests:
        action, reason = conf.get(t["short"], (None, None))
        if (action == "exclude" and not args.excluded) or \
           (action == "slow" and not args.with_slow and not args.only):
            with lock:
                counter[0] += 1
                print(f"ok {counter[0]} - {t['name']} # SKIP {action}: {reason}", flush=True)
            continue
        todo.append((t, action == "slow"))
    # Longest time limits first, so the slow programs do not start last.
    todo.sort(key=lambda x: -x[0]["timeout"])
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_one, t, build, quick, log_dir, args.timeout_multiplier,
                               hide_kvm):
                   (t, quick) for t, quick in todo}
        for fut in concurrent.futures.as_completed(futures):
            t, quick = futures[fut]
            report(t, fut.result(), ", quick set" if quick else "")
    print(f"# {SUITE}: {len(todo) - failed_programs} of {len(todo)} programs passed; "
          f"subtests: {subtests[0]} passed, {subtests[1]} failed, {subtests[2]} skipped; "
          f"{time.monotonic() - start:.0f} s")
    return 1 if failed_programs else 0


if __name__ == "__main__":
    sys.exit(main())
