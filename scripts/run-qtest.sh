#!/usr/bin/env bash
# Run QEMU's vfio-user qtest through QEMU's own meson test runner and print
# its TAP stream, so scripts/run-tests.py can count the individual cases.
#
#   scripts/run-qtest.sh QEMU_BUILD_DIR [TEST_NAME]
set -uo pipefail

build=${1:?usage: run-qtest.sh QEMU_BUILD_DIR [TEST_NAME]}
name=${2:-qtest-x86_64/vfio-user-test}

tests=$(meson test -C "$build" --list 2>/dev/null)
if ! grep -q -- " / $name\$" <<<"$tests"; then
    # A series without its qtest is a failure, not a skip.
    echo "not ok 1 - $name is not registered in $build (is the series applied?)"
    exit 1
fi

meson test -C "$build" --no-rebuild --print-errorlogs "$name" >"$build/qtest-run.log" 2>&1
status=$?
python3 - "$build/meson-logs/testlog.json" "$name" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
for line in open(path):
    rec = json.loads(line)
    if rec.get("name", "").endswith("/ " + name):
        sys.stdout.write(rec.get("stdout") or "")
        if rec.get("stderr"):
            for l in rec["stderr"].splitlines():
                print("# " + l)
PY
if [ $status -ne 0 ]; then
    sed 's/^/# /' "$build/qtest-run.log" | tail -n 40
fi
exit $status
