#!/usr/bin/python3
"""Run the project's test suites and sum up their results.

    scripts/run-tests.py [--timeout SECONDS] NAME[@SECONDS]=COMMAND ...

Each COMMAND is a shell command that prints TAP ("ok N ...", "not ok N ...",
"# SKIP" and "# TODO" directives); only lines that start with "ok"/"not ok"
count, so
TAP a suite nests in its comments is not counted twice.  As in TAP, a
"not ok ... # TODO" is a known failure: it is listed but does not fail the
run, and it counts among the skipped (an "ok ... # TODO" passed).  Its
output is
shown as it comes.  A suite that runs longer than its limit (@SECONDS, else
--timeout, default 1800) is stopped (SIGTERM to its process group, SIGKILL
10 s later) and counts as a failure.  A suite that exits non-zero without
reporting a failing test counts as one failure; a suite that reports no
test at all counts as one failure too, so that a run in which nothing was
tested cannot pass unnoticed.

The summary lists every failure with the comment lines that followed it
(the evidence), and the last line is "N passed, N failed, N skipped"; the
exit status is 0 only when nothing failed.
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

TAP_LINE = re.compile(r"^(not ok|ok)\b(.*)$")
EVIDENCE_LINES = 6
GRACE = 10


def killpg(pid, sig):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def run_suite(name, command, limit):
    passed = failed = skipped = 0
    failures = []           # [why, evidence lines]
    todos = []              # "not ok ... # TODO" lines: known failures
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
    deadline = start + limit
    termed = None
    tail = []
    collecting = None       # comment lines after the last "not ok"
    while True:
        if termed is None and time.monotonic() > deadline:
            killpg(proc.pid, signal.SIGTERM)
            termed = time.monotonic()
            failed += 1
            failures.append([f"suite timed out after {limit} s (stopped); "
                             "its last output:", tail[-EVIDENCE_LINES:]])
        if termed is not None and time.monotonic() > termed + GRACE:
            killpg(proc.pid, signal.SIGKILL)
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is None:
                continue
            # the suite is gone but something still holds its output
            killpg(proc.pid, signal.SIGKILL)
            failures.append(["suite left processes running (killed)", []])
            failed += 1
            reader.join(5)
            break
        if line is None:
            break
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()
        tail = (tail + [line.rstrip("\n")])[-EVIDENCE_LINES:]
        if line.startswith("#") and collecting is not None:
            collecting.append(line.rstrip("\n"))
        m = TAP_LINE.match(line)
        if not m:
            continue
        collecting = None
        rest = m.group(2)
        if re.search(r"#\s*SKIP", rest, re.IGNORECASE):
            skipped += 1
        elif m.group(1) == "not ok" and re.search(r"#\s*TODO", rest,
                                                  re.IGNORECASE):
            skipped += 1
            todos.append(rest.strip())
        elif m.group(1) == "ok":
            passed += 1
        else:
            failed += 1
            collecting = []
            failures.append([rest.strip(), collecting])
    status = proc.wait()
    killpg(proc.pid, signal.SIGKILL)
    if status != 0 and failed == 0:
        failed += 1
        failures.append([f"suite exited with status {status}", tail])
    if passed + failed + skipped == 0:
        failed += 1
        failures.append(["suite ran no test", tail])
    secs = time.monotonic() - start
    todo = f", {len(todos)} of them TODO" if todos else ""
    print(f"=== suite {name}: {passed} passed, {failed} failed, "
          f"{skipped} skipped{todo} ({secs:.0f} s)", flush=True)
    return passed, failed, skipped, failures, todos


def main(argv):
    limit = 1800
    if len(argv) >= 2 and argv[0] == "--timeout" and argv[1].isdigit():
        limit, argv = int(argv[1]), argv[2:]
    suites = []
    for a in argv:
        m = re.match(r"^([\w.-]+)(?:@(\d+))?=(.+)$", a, re.S)
        if not m:
            print(__doc__, file=sys.stderr)
            return 2
        suites.append((m.group(1), int(m.group(2) or limit), m.group(3)))
    if not suites:
        print(__doc__, file=sys.stderr)
        return 2
    totals = [0, 0, 0]
    report = []
    for name, secs, command in suites:
        p, f, s, failures, todos = run_suite(name, command, secs)
        totals[0] += p
        totals[1] += f
        totals[2] += s
        report.append((name, p, f, s, failures, todos))

    print()
    print("Summary")
    for name, p, f, s, failures, todos in report:
        mark = "FAIL" if f else "ok"
        print(f"  {mark:4} {name}: {p} passed, {f} failed, {s} skipped")
        for why in todos:
            print(f"         known (TODO): not ok {why[:200]}")
        for why, evidence in failures:
            print(f"         not ok {why}")
            if len(evidence) > 2 * EVIDENCE_LINES:
                evidence = (evidence[:EVIDENCE_LINES] + ["..."] +
                            evidence[-EVIDENCE_LINES:])
            for ln in evidence:
                print(f"           {ln[:200]}")
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
