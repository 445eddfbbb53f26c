#!/usr/bin/env python3
"""Run the project's test suites and sum up their results.

    scripts/run-tests.py NAME=COMMAND [NAME=COMMAND ...]

Each COMMAND is a shell command that prints TAP ("ok N - ...",
"not ok N - ...", "# SKIP" directives).  Its output is shown as it comes.
A suite that exits non-zero without reporting a failing test counts as one
failure; a suite that reports no test at all counts as one failure too, so
that a run in which nothing was tested cannot pass unnoticed.

The last line is "N passed, N failed, N skipped"; the exit status is 0 only
when nothing failed.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import sys
import time

TAP_LINE = re.compile(r"^\s*(not ok|ok)\b(.*)$")


def run_suite(name, command):
    passed = failed = skipped = 0
    failures = []
    start = time.monotonic()
    print(f"=== suite {name}: {command}", flush=True)
    # Each suite runs in a session of its own: when it ends, whatever it
    # left running is killed, so a stray child holding the output pipe can
    # neither hang the run nor outlive it.
    proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout]
                              + [lines.put(None)], daemon=True)
    reader.start()
    while True:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is None:
                continue
            # the suite is gone but something still holds its output
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            failures.append("suite left processes running (killed)")
            failed += 1
            reader.join(5)
            break
        if line is None:
            break
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()
        m = TAP_LINE.match(line)
        if not m:
            continue
        rest = m.group(2)
        if re.search(r"#\s*SKIP", rest, re.IGNORECASE):
            skipped += 1
        elif m.group(1) == "ok":
            passed += 1
        else:
            failed += 1
            failures.append(rest.strip())
    status = proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if status != 0 and failed == 0:
        failed += 1
        failures.append(f"suite exited with status {status}")
    if passed + failed + skipped == 0:
        failed += 1
        failures.append("suite ran no test")
    secs = time.monotonic() - start
    print(f"=== suite {name}: {passed} passed, {failed} failed, "
          f"{skipped} skipped ({secs:.0f} s)", flush=True)
    return passed, failed, skipped, failures


def main(argv):
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    totals = [0, 0, 0]
    report = []
    for arg in argv:
        name, command = arg.split("=", 1)
        p, f, s, failures = run_suite(name, command)
        totals[0] += p
        totals[1] += f
        totals[2] += s
        report.append((name, p, f, s, failures))

    print()
    print("Summary")
    for name, p, f, s, failures in report:
        mark = "FAIL" if f else "ok"
        print(f"  {mark:4} {name}: {p} passed, {f} failed, {s} skipped")
        for why in failures:
            print(f"         not ok {why}")
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
