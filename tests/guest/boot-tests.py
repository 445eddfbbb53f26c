#!/usr/bin/python3
"""Guest-boot tests: a real guest drives the DMA engine through QEMU's
vfio-user client, for each memory backend x dma-access mode and against a
legacy server.  Prints TAP.

    tests/guest/boot-tests.py --qemu QEMU --server SERVER --guest-dir DIR [--filter STR]

Each case runs scripts/run-guest.py in its own session (process group) and
checks: the guest verified every byte, the DMA region holding the guest's
buffer was mapped in the expected mode, the server's counters show that mode
carried all the traffic (and no other mode any), and the counters the guest
read from the device equal the ones the server wrote on exit.  The "+net"
cases also give the guest a NIC on user networking (-netdev user) and check
that the guest fetched a file from the host, intact, while its DMA ran.
The "twin" cases (issue 12) have the guest read the device's registers back
to back while its message DMA runs, with the twin socket negotiated or
declined by the server: the data must be exact and no register read may
take 100 ms or more.  With a QEMU that has no x-twin-socket property the
negotiated case is skipped.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import procs  # noqa: E402
import tap  # noqa: E402
from qemu import device_has_property  # noqa: E402
RUN_GUEST = os.path.join(HERE, "..", "..", "scripts", "run-guest.py")
CASE_TIMEOUT = 90
MODES = ("mmap", "file-io", "message")

# (memory, dma-access, legacy server, expectation)
# expectation: a mode name, or "refused" (QEMU must not start).
CASES = [
    ("memfd", "auto", False, "mmap"),
    ("memfd", "mmap", False, "mmap"),
    ("memfd", "file-io", False, "file-io"),
    ("memfd", "message", False, "message"),
    ("file-shared", "auto", False, "mmap"),
    ("ram", "auto", False, "message"),
    ("ram", "mmap", False, "refused"),
    ("ram", "file-io", False, "file-io"),
    ("ram", "message", False, "message"),
    ("file-private", "auto", False, "message"),
    ("file-private", "mmap", False, "refused"),
    ("file-private", "file-io", False, "file-io"),
    ("file-private", "message", False, "message"),
    # A pre-revision server refuses the new bits; the client must retry in
    # the old form: mmap -> fd without a bit, file-io -> messages.
    ("memfd", "auto", True, "mmap"),
    ("memfd", "mmap", True, "mmap"),
    ("memfd", "file-io", True, "message"),
    ("ram", "file-io", True, "message"),
]
# --baseline: unpatched QEMU, which has no dma-access property.  Besides the
# working default (fd without a mode bit -> mmap), these pin down the two
# bugs the series fixes, so a "before" run shows them instead of hiding them:
# the fd of private file RAM is passed and the server maps stale file
# content, and message DMA uses a layout the specification does not.
BASELINE_CASES = [
    ("memfd", None, False, "mmap"),
    ("file-shared", None, False, "mmap"),
    ("file-private", None, False, "stale-mmap"),
    ("ram", None, False, "broken-messages"),
]
# Cases that poll the status register instead of sleeping on the interrupt:
# the guest then reads device registers while the server waits for the
# client to answer its DMA messages.
POLL_CASES = [
    ("memfd", "message", False, "message"),
    ("memfd", "file-io", False, "file-io"),
]
# Cases with network traffic (slirp, e1000) next to the DMA: mmap, and
# messages, which share QEMU's main loop with slirp.
NET_CASES = [
    ("memfd", "auto", False, "mmap"),
    ("ram", "auto", False, "message"),
]


# Register reads while message DMA runs: (twin socket, expected server log)
# twin: "on" (x-twin-socket=on, the server accepts), "decline" (the
# server runs with --no-twin-socket) or "off" (x-twin-socket=off).
TWIN_CASES = [
    ("on", "on"),
    ("decline", "declined"),
    ("off", "not-offered"),     # x-twin-socket=off: the client does not offer
]
SPIN_MS = 100           # no register read may take this long
TWIN_SIZES = "4096:65536:1048576:2097152"
TWIN_SECONDS = 5        # the sizes again and again for this long


def run_case(args, memory, mode, legacy, irq, workdir, net=False, extra=()):
    out_json = os.path.join(workdir, "result.json")
    cmd = [sys.executable, RUN_GUEST, "--qemu", args.qemu, "--server", args.server,
           "--guest-dir", args.guest_dir, "--memory", memory,
           "--workdir", workdir, "--json", out_json, "--timeout", str(CASE_TIMEOUT - 20),
           "--irq", irq]
    if legacy:
        cmd.append("--legacy")
    if net:
        cmd.append("--net")
    if mode:
        cmd += ["--dma-access", mode]
    cmd += list(extra)
    proc = procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text, _ = proc.communicate(timeout=CASE_TIMEOUT)
    except subprocess.TimeoutExpired:
        text = f"case timed out after {CASE_TIMEOUT} s"
    finally:
        # Whatever is left of the case (driver, QEMU, server) goes.
        procs.stop(proc, grace=10)
    try:
        with open(out_json) as f:
            return json.load(f), text
    except (OSError, ValueError):
        return None, text


def problems_of(info, expect):
    """Return a list of problems (empty: the case passed)."""
    if info is None:
        return ["run-guest.py wrote no result (its output is below)"]
    if expect == "refused":
        problems = []
        if info["qemu_rc"] in (0, None):
            problems.append(f"QEMU started (exit status {info['qemu_rc']})")
        if info["result"] is not None:
            problems.append("the guest ran")
        if "guestram" not in info["qemu_err"]:
            problems.append("QEMU's error does not name the memory backend 'guestram': "
                            + info["qemu_err"].strip()[-300:])
        return problems

    if expect == "stale-mmap":
        # The server mapped the private file and saw its content, not the
        # guest's: every transfer must be caught by the guest's checks.
        problems = []
        if info["dma_region_mode"] != "mmap":
            problems.append(f"buffer region mapped as {info['dma_region_mode']}, not mmap")
        res = info["result"]
        if not res or res["pass"] != 0 or res["fail"] == 0:
            problems.append(f"expected every transfer to see stale data, got {res}")
        return problems
    if expect == "broken-messages":
        problems = []
        if info["dma_region_mode"] != "message":
            problems.append(f"buffer region mapped as {info['dma_region_mode']}, not message")
        if "DMA reply names" not in info["server_log"] and \
           "reply has" not in info["server_log"]:
            problems.append("server did not see malformed DMA replies")
        if info["pass"]:
            problems.append("message DMA worked; the baseline bug is gone?")
        return problems

    problems = []
    net = info.get("net")
    if net and not net["pass"]:
        problems.append(f"network: {net['fetched']} fetches ({net['intact']} intact, "
                        f"{net['during_dma']} during DMA), host served {net['served']}")
        problems += [f"guest: {l}" for l in net["errors"][:2]]
    if not info["pass"]:
        problems.append(f"run failed: qemu_rc={info['qemu_rc']} server_rc={info['server_rc']} "
                        f"timed_out={info['timed_out']} result={info['result']}")
        problems += [f"server: {l}" for l in info["server_errors"][:2]]
        problems += [f"guest: {l}" for l in info["guest_failures"][:2]]
        problems += [f"qemu: {l}" for l in info["qemu_err"].strip().splitlines()[-2:]]
    if info["dma_region_mode"] != expect:
        problems.append(f"guest buffer region mapped as {info['dma_region_mode']}, "
                        f"expected {expect}")
    stats = info["stats"]
    if not stats:
        problems.append("server wrote no statistics")
        return problems
    for m in MODES:
        b = stats[m]["bytes"]
        if m == expect and b == 0:
            problems.append(f"no bytes moved via {m}")
        if m != expect and b != 0:
            problems.append(f"{b} bytes moved via {m}, expected none")
    res = info["result"]
    if res and stats[expect]["bytes"] != res["bytes"]:
        problems.append(f"server moved {stats[expect]['bytes']} bytes via {expect}, "
                        f"guest verified {res['bytes']}")
    gc = info["guest_counters"]
    if gc and info["pass"]:
        for m in MODES:
            key = m.replace("-", "_")
            if gc[f"{key}_bytes"] != stats[m]["bytes"] or gc[f"{key}_ops"] != stats[m]["ops"]:
                problems.append(f"device counters for {m} read by the guest differ "
                                "from the server's")
    if res and res["irqs"] and stats["irqs"] != res["irqs"]:
        problems.append(f"server raised {stats['irqs']} interrupts, guest saw {res['irqs']}")
    return problems


def case(args, n, name, memory, mode, legacy, irq, net, expect):
    def run():
        with tempfile.TemporaryDirectory(prefix="guest-test-") as tmp:
            workdir = tmp
            if args.keep:
                workdir = os.path.join(args.keep, f"{n:02d}-{memory}-{mode or 'none'}"
                                       f"{'-legacy' if legacy else ''}-{irq}"
                                       f"{'-net' if net else ''}")
                os.makedirs(workdir, exist_ok=True)
            info, text = run_case(args, memory, mode, legacy, irq, workdir, net)
            problems = problems_of(info, expect)
            sock = os.path.join(workdir, "dma.sock")
            if os.path.exists(sock):
                problems.append(f"socket {sock} left behind")
        if problems:
            # the evidence: what run-guest.py printed (it names the
            # server's and the guest's errors)
            print("\n".join(text.strip().splitlines()[-25:]))
            raise AssertionError("; ".join(problems))
        if info["result"]:
            print(f"{info['result']['bytes']} bytes verified, {info['result']['mbps']} MB/s")
        if info.get("net"):
            print(f"{info['net']['intact']} intact fetches over the network")
    return tap.FunctionCase(name, run)


def twin_case(args, name, twin, want, has_twin):
    def run():
        if twin != "decline" and not has_twin:
            raise tap.unittest.SkipTest("this QEMU has no x-twin-socket "
                                        "property: it never offers the twin socket")
        extra = ["--twin-socket", twin, "--spin", str(SPIN_MS),
                 "--sizes", TWIN_SIZES, "--dma-seconds", str(TWIN_SECONDS)]
        with tempfile.TemporaryDirectory(prefix="guest-test-") as workdir:
            info, text = run_case(args, "ram", "message", False, "poll",
                                  workdir, extra=extra)
        problems = problems_of(info, "message")
        if info:
            if has_twin and info["twin_socket"] != want:
                problems.append(f"server says twin-socket={info['twin_socket']}, "
                                f"expected {want}")
            r = info["regreads"]
            if not r or r["n"] < 100:
                problems.append(f"too few register reads while DMA ran: {r}")
            elif r["max_us"] >= SPIN_MS * 1000:
                problems.append(f"a register read took {r['max_us']} us")
        if problems:
            print("\n".join(text.strip().splitlines()[-25:]))
            raise AssertionError("; ".join(problems))
        r = info["regreads"]
        print(f"{info['result']['bytes']} bytes verified; {r['n']} register reads "
              f"during DMA, slowest {r['max_us']} us")
    return tap.FunctionCase(name, run)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qemu", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--guest-dir", required=True)
    ap.add_argument("--filter", default="", help="run only cases whose name contains this")
    ap.add_argument("--keep", help="keep each case's logs under this directory")
    ap.add_argument("--baseline", action="store_true",
                    help="QEMU is the unpatched build: run the baseline cases instead")
    args = ap.parse_args()

    suite = tap.unittest.TestSuite()
    tables = ((("intx", False, BASELINE_CASES),) if args.baseline
              else (("intx", False, CASES), ("poll", False, POLL_CASES),
                    ("intx", True, NET_CASES)))
    for irq, net, table in tables:
        for memory, mode, legacy, expect in table:
            name = (f"{memory} dma-access={mode or '(none)'}{' legacy-server' if legacy else ''}"
                    f"{' irq=poll' if irq == 'poll' else ''}{' +net' if net else ''} -> {expect}")
            if args.filter in name:
                suite.addTest(case(args, suite.countTestCases() + 1, name, memory, mode,
                                   legacy, irq, net, expect))
    if not args.baseline:
        has_twin = device_has_property(args.qemu, "vfio-user-pci", "x-twin-socket")
        for twin, want in TWIN_CASES:
            name = (f"ram dma-access=message irq=poll twin-socket={twin}: register "
                    f"reads during DMA under {SPIN_MS} ms")
            if args.filter in name:
                suite.addTest(twin_case(args, name, twin, want, has_twin))
    return tap.run(suite)


if __name__ == "__main__":
    sys.exit(main())
