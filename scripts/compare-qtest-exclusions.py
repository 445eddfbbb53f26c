#!/usr/bin/env python3
"""Show that each QEMU qtest excluded from `make check` fails the same way
without the series.  Prints TAP, one line per excluded program.

    scripts/compare-qtest-exclusions.py PATCHED_BUILD BASELINE_BUILD [--config FILE]

Each program named "exclude" in the configuration (qemu/qtest-x86_64.conf)
runs on both builds, unchanged, as scripts/run-qemu-qtests.py runs it.  A
failure's signature is the list of failed subtests plus its error lines
(assertions, "Bail out!", ACPI table mismatches), with temporary file names
and pids blanked out.  The program passes this check when it fails on both
builds with the same signature; if it passes on either build the exclusion
has become wrong, and that fails too.
"""
import argparse
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("runner", os.path.join(HERE, "run-qemu-qtests.py"))
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)

ERROR_LINE = re.compile(r"(ERROR:|Bail out!|binary file mismatch|assertion failed|"
                        r"could not load|failed to find)")


def signature(res):
    with open(res["log"], errors="replace") as f:
        text = f.read()
    lines = []
    for line in text.splitlines():
        if line.startswith("# starting QEMU") or not ERROR_LINE.search(line):
            continue
        line = re.sub(r"/tmp/[\w.-]+", "/tmp/X", line)
        line = re.sub(r"tests/[\w.-]+-[A-Za-z0-9]{6}\b", "tests/X", line)
        line = re.sub(r"\b\d{3,}\b", "N", line)
        if line not in lines:
            lines.append(line)
    return ["failed subtest: " + f for f in res["failed"]] + lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("patched")
    ap.add_argument("baseline")
    ap.add_argument("--config", default=runner.DEFAULT_CONFIG)
    ap.add_argument("--kvm", action="store_true")
    args = ap.parse_args()

    conf = runner.read_config(args.config)
    excluded = sorted(n for n, (action, _) in conf.items() if action == "exclude")
    print(f"1..{max(1, len(excluded))}")
    if not excluded:
        print("ok 1 - nothing is excluded # SKIP")
        return 0
    hide_kvm = os.path.exists("/dev/kvm") and not args.kvm
    builds = {}
    for label, build in (("patched", args.patched), ("baseline", args.baseline)):
        build = os.path.abspath(build)
        builds[label] = (build, {t["short"]: t for t in runner.list_tests(build)})
    failed = 0
    for n, name in enumerate(excluded, 1):
        results = {}
        for label, (build, tests) in builds.items():
            test = tests.get(name)
            if test is None or not os.access(test["cmd"][0], os.X_OK):
                results[label] = None
                continue
            log_dir = os.path.join(build, "qtest-exclusions-logs")
            os.makedirs(log_dir, exist_ok=True)
            res = runner.run_one(test, build, False, log_dir, 1.0, hide_kvm)
            res["signature"] = signature(res)
            res["ok"] = res["rc"] == 0 and not res["failed"] and not res["timed_out"]
            results[label] = res
        problems = []
        for label, res in results.items():
            if res is None:
                problems.append(f"{name} is not built in the {label} build")
            elif res["ok"]:
                problems.append(f"{name} passes on the {label} build: the exclusion is wrong")
        if not problems and results["patched"]["signature"] != results["baseline"]["signature"]:
            problems.append("the failures differ")
        if problems:
            failed += 1
            print(f"not ok {n} - qtest-x86_64/{name}: {'; '.join(problems)}")
        else:
            print(f"ok {n} - qtest-x86_64/{name} fails the same way with and without the series")
        for label, res in results.items():
            if res is None:
                continue
            how = ("timed out" if res["timed_out"] else f"exit status {res['rc']}")
            print(f"  # {label}: {how}, {res['passed']} subtests passed, "
                  f"{len(res['failed'])} failed, {res['secs']:.0f} s")
            for line in res["signature"][:12]:
                print(f"  #   {line}")
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
