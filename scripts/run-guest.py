#!/usr/bin/python3
"""Boot the test guest against vfio-user-dma-server and report the DMA run.

    scripts/run-guest.py --qemu Q --server S --guest-dir D
        [--memory memfd|ram|file-private|file-shared]
        [--dma-access auto|mmap|file-io|message] [--legacy] [--net]
        [--twin-socket on|off|decline] [--spin MS] [--dma-seconds S]

Starts the server, boots the guest (TCG) with the DMA engine attached as
vfio-user-pci, and prints which access mode each DMA region got, what the
guest moved and verified, and the server's per-mode counters.  Exit status
0 means the guest verified every transfer and both sides shut down cleanly.
--net also gives the guest an e1000 NIC on user-mode networking (-netdev
user): while the DMA test runs (repeated for a few seconds), the guest
fetches a file over and over from an HTTP server this script runs on the
host's loopback, which the guest reaches at 10.0.2.2 through slirp; every
fetch must arrive intact.
--twin-socket on|off sets vfio-user-pci's x-twin-socket (QEMU with the
twin socket only); decline runs the server with --no-twin-socket.  --spin MS
(with --irq poll) makes the guest read the device's registers back to back
while its DMA runs and fail if one read takes MS or more.
--json FILE also writes everything it found, for tests/guest/boot-tests.py.
"""
import argparse
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "lib"))
import dmaserver  # noqa: E402
import procs  # noqa: E402
from qemu import machine_memory, vfio_user_device  # noqa: E402

MEMORY_ID = "guestram"      # backend id; error messages must name it
RAM_SIZE = 256 << 20
# Physically contiguous DMA memory for dmatest: kept from the guest kernel
# with memmap=, so it must lie inside RAM_SIZE.
DMA_PHYS = 0x8000000
DMA_SIZE = 16 << 20

RESULT_RE = re.compile(r"DMATEST RESULT pass=(\d+) fail=(\d+) bytes=(\d+) "
                       r"mbps=([0-9.]+) irqs=(\d+)")
COUNTERS_RE = re.compile(r"DMATEST COUNTERS (.*)")
REGREADS_RE = re.compile(r"DMATEST REGREADS n=(\d+) max_us=(\d+)")
TWIN_RE = re.compile(r"^version: .* twin-socket=(\S+)", re.M)
NET_GET_RE = re.compile(r"NETTEST GET (\d+) bytes=(\d+) sha256=([0-9a-f]+) "
                        r"dma-running=(yes|no)")
NET_PAYLOAD = 256 << 10
NET_DMA_SECONDS = 3
HOST_ADDR = "10.0.2.2"      # the host's loopback as slirp shows it to the guest


class FileServer:
    """An HTTP server on the host's loopback with one random file at a
    random path; counts the complete answers it gave."""

    def __init__(self):
        self.payload = secrets.token_bytes(NET_PAYLOAD)
        self.path = "/" + secrets.token_hex(8)
        self.served = 0
        self.refused = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 20

            def do_GET(self):
                if self.path != outer.path:
                    outer.refused += 1
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                self.wfile.write(outer.payload)
                outer.served += 1

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self):
        return f"http://{HOST_ADDR}:{self.port}{self.path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def kvm_works(qemu, guest_dir):
    """Use KVM only where a guest has been seen to boot with it: on some
    hosts /dev/kvm opens but a guest hangs in the firmware.  The probe boots
    the kernel without an initrd (it panics right away) and looks for its
    banner; the answer is cached in the guest directory."""
    cache = os.path.join(guest_dir, "kvm-probe")
    try:
        with open(cache) as f:
            return f.read().strip() == "yes"
    except OSError:
        pass
    ok = False
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        cmd = [qemu, "-accel", "kvm", "-m", "128M", "-nographic", "-no-reboot", "-nic", "none",
               "-kernel", os.path.join(guest_dir, "vmlinuz"),
               "-append", "console=ttyS0 panic=-1"]
        proc = procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            procs.stop(proc, grace=0)
            out, _ = proc.communicate()
        ok = b"Linux version" in out
    with open(cache, "w") as f:
        f.write("yes\n" if ok else "no\n")
    return ok


def parse_outputs(workdir):
    out = {"regions": [], "result": None, "guest_counters": None, "stats": None,
           "net_gets": [], "net_errors": []}
    with open(os.path.join(workdir, "server.log"), errors="replace") as f:
        out["server_log"] = f.read()
    # "regions": every mapping ever made, in order; "final_regions": the
    # ones still mapped when the client left.
    lines = out["server_log"].splitlines()
    out["regions"] = dmaserver.regions(lines)
    out["final_regions"] = dmaserver.live_regions(lines)
    out["server_errors"] = dmaserver.errors(lines)
    with open(os.path.join(workdir, "guest.log"), errors="replace") as f:
        guest = f.read()
    m = RESULT_RE.search(guest)
    if m:
        out["result"] = {"pass": int(m.group(1)), "fail": int(m.group(2)),
                         "bytes": int(m.group(3)), "mbps": float(m.group(4)),
                         "irqs": int(m.group(5))}
    m = REGREADS_RE.search(guest)
    out["regreads"] = ({"n": int(m.group(1)), "max_us": int(m.group(2))}
                       if m else None)
    m = TWIN_RE.search(out["server_log"])
    out["twin_socket"] = m.group(1) if m else None
    m = COUNTERS_RE.search(guest)
    if m:
        out["guest_counters"] = {k: int(v) for k, v in
                                 (kv.split("=") for kv in m.group(1).split())}
    out["guest_failures"] = [l.strip() for l in guest.splitlines()
                             if "DMATEST FAIL" in l or "DMATEST ERROR" in l]
    for m in NET_GET_RE.finditer(guest):
        out["net_gets"].append({"bytes": int(m.group(2)), "sha256": m.group(3),
                                "during_dma": m.group(4) == "yes"})
    out["net_errors"] = [l.strip() for l in guest.splitlines() if "NETTEST ERROR" in l]
    return out


def dma_region_mode(lines):
    """Mode of the last mapping that covers the guest's DMA buffer."""
    modes = dmaserver.modes_covering(lines, DMA_PHYS, DMA_SIZE)
    return modes[-1] if modes else None


def run(args, workdir):
    logs = {n: open(os.path.join(workdir, n), "w") for n in ("guest.log", "qemu.err")}
    append = (f"console=ttyS0 quiet panic=-1 memmap={DMA_SIZE >> 20}M${DMA_PHYS:#x} "
              f"iomem=relaxed dmatest.args=phys={DMA_PHYS:#x},size={DMA_SIZE},irq={args.irq}")
    if args.sizes:
        append += f",sizes={args.sizes}"
    if args.spin:
        append += f",spin={args.spin:g}"
    if args.dma_seconds and not args.net:
        append += f",seconds={args.dma_seconds:g}"
    files = None
    if args.net:
        files = FileServer()
        # DMA keeps going long enough for several fetches to overlap it
        append += f",seconds={NET_DMA_SECONDS} nettest.url={files.url()}"
        nic = ["-netdev", "user,id=net0", "-device", "e1000,netdev=net0"]
    else:
        nic = ["-nic", "none"]

    info = {"qemu_rc": None, "server_rc": None, "timed_out": False}
    server = qemu = None
    start = time.monotonic()
    try:
        try:
            server = dmaserver.DmaServer(
                args.server, workdir, (["--legacy"] if args.legacy else []) +
                (["--no-twin-socket"] if args.twin_socket == "decline" else []))
        except procs.TestFailure as e:
            raise RuntimeError(f"server did not start: {e}")
        qemu_cmd = ([args.qemu, "-accel", args.accel, "-nographic", "-no-reboot"] +
                    machine_memory(args.memory, RAM_SIZE, workdir, MEMORY_ID) + nic +
                    ["-kernel", os.path.join(args.guest_dir, "vmlinuz"),
                     "-initrd", os.path.join(args.guest_dir, "initrd.gz"),
                     "-append", append, "-device",
                     json.dumps(vfio_user_device(
                         server.sock_path, args.dma_access,
                         props={"x-twin-socket": args.twin_socket == "on"}
                         if args.twin_socket in ("on", "off") else None))])
        qemu = procs.start(qemu_cmd, stdout=logs["guest.log"], stderr=logs["qemu.err"])
        try:
            info["qemu_rc"] = qemu.wait(args.timeout)
        except subprocess.TimeoutExpired:
            info["timed_out"] = True
            procs.stop(qemu, 5)
        # The server leaves by itself once QEMU has gone; if QEMU never
        # connected (its socket is still there), there is nothing to wait for.
        if os.path.exists(server.sock_path):
            server.stop(5)
        try:
            info["server_rc"] = server.p.wait(10)
        except subprocess.TimeoutExpired:
            info["server_rc"] = "hung"
    finally:
        procs.stop(qemu, 5)
        if server:
            server.stop(5)
        if files:
            files.close()
        for f in logs.values():
            f.close()
        ram_file = os.path.join(workdir, MEMORY_ID + "-ram")
        if os.path.exists(ram_file):
            os.unlink(ram_file)
    info["seconds"] = round(time.monotonic() - start, 1)
    info.update(parse_outputs(workdir))
    info["stats"] = server.stats()
    with open(os.path.join(workdir, "qemu.err"), errors="replace") as f:
        # a client that lost its server can log thousands of lines: keep
        # the start (startup errors) and the end
        err = f.read()
        info["qemu_err"] = err if len(err) < 20000 else err[:10000] + "\n...\n" + err[-10000:]
    info["dma_region_mode"] = dma_region_mode(info["server_log"].splitlines())
    res = info["result"]
    info["pass"] = (info["qemu_rc"] == 0 and info["server_rc"] == 0 and res is not None
                    and res["fail"] == 0 and res["pass"] > 0)
    info["net"] = None
    if files:
        want = hashlib.sha256(files.payload).hexdigest()
        gets = info["net_gets"]
        info["net"] = {"served": files.served, "refused": files.refused,
                       "fetched": len(gets),
                       "intact": sum(1 for g in gets if g["sha256"] == want
                                     and g["bytes"] == len(files.payload)),
                       "during_dma": sum(1 for g in gets if g["during_dma"]),
                       "errors": info["net_errors"]}
        n = info["net"]
        n["pass"] = (n["fetched"] > 0 and n["intact"] == n["fetched"] == n["served"]
                     and n["during_dma"] > 0 and not n["errors"])
        info["pass"] = info["pass"] and n["pass"]
    return info


def summarize(args, info):
    mode = args.dma_access or "(default)"
    print(f"memory={args.memory} dma-access={mode} server={'legacy' if args.legacy else 'current'}"
          f" accel={args.accel} time={info['seconds']}s")
    if info["timed_out"]:
        print(f"  guest did not finish within {args.timeout}s")
    if info["qemu_rc"] not in (0, None):
        print(f"  QEMU exited with status {info['qemu_rc']}:")
        for line in info["qemu_err"].strip().splitlines()[-5:]:
            print(f"    {line}")
    print(f"  DMA regions mapped at the end ({len(info['regions'])} maps in all, "
          "from the server log):")
    for r in info["final_regions"]:
        print(f"    iova 0x{r['iova']:x}+0x{r['size']:x} {r['mode']}"
              f"{' (fd)' if r['fd'] else ''}")
    print(f"  guest DMA buffer at 0x{DMA_PHYS:x} is served by: {info['dma_region_mode']}")
    res = info["result"]
    if res:
        print(f"  guest: {res['pass']} transfers verified, {res['fail']} failed, "
              f"{res['bytes']} bytes, {res['mbps']} MB/s, {res['irqs']} interrupts")
    else:
        print("  guest: no result line")
    for line in info["guest_failures"]:
        print(f"    {line}")
    if info["regreads"]:
        r = info["regreads"]
        print(f"  guest: {r['n']} register reads while DMA ran, slowest {r['max_us']} us")
    print(f"  twin socket: {info['twin_socket']}")
    n = info.get("net")
    if n:
        print(f"  network: the guest fetched the host's file {n['fetched']} times "
              f"({n['during_dma']} while its DMA ran), {n['intact']} intact; "
              f"the host served {n['served']}")
        for line in n["errors"]:
            print(f"    {line}")
    for line in info["server_errors"][-3:]:
        print(f"  server: {line}")
    if info["stats"]:
        s = info["stats"]
        print("  server counters: " + ", ".join(
            f"{m} {s[m]['bytes']} bytes/{s[m]['ops']} ops" for m in ("mmap", "file-io", "message")))
    print("PASS" if info["pass"] else "FAIL")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--guest-dir", required=True)
    ap.add_argument("--memory", default="memfd",
                    choices=["memfd", "ram", "file-private", "file-shared"])
    ap.add_argument("--dma-access", choices=["auto", "mmap", "file-io", "message"],
                    help="vfio-user-pci dma-access property (not passed when omitted)")
    ap.add_argument("--legacy", action="store_true", help="run the server in --legacy mode")
    ap.add_argument("--irq", default="intx", choices=["intx", "poll"])
    ap.add_argument("--sizes", help="transfer sizes, colon separated")
    ap.add_argument("--net", action="store_true",
                    help="user networking: the guest fetches a file from the host during DMA")
    ap.add_argument("--twin-socket", choices=["on", "off", "decline"],
                    help="x-twin-socket on/off, or the server declines it")
    ap.add_argument("--spin", type=float,
                    help="with --irq poll: register reads back to back during "
                    "DMA, each under this many ms")
    ap.add_argument("--dma-seconds", type=float,
                    help="repeat the sizes for this many seconds (not with --net)")
    ap.add_argument("--timeout", type=float, default=90)
    ap.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"],
                    help="auto: KVM if a probe boot works with it, else TCG")
    ap.add_argument("--workdir", help="keep logs here (default: a temporary directory)")
    ap.add_argument("--json", help="write the collected results to this file")
    args = ap.parse_args()

    for f in ("vmlinuz", "initrd.gz"):
        if not os.path.isfile(os.path.join(args.guest_dir, f)):
            sys.exit(f"error: {args.guest_dir}/{f} missing; build it with guest/build-image.sh")
    for prog in (args.qemu, args.server):
        if not os.access(prog, os.X_OK):
            sys.exit(f"error: {prog} is not an executable")

    if args.accel == "auto":
        args.accel = "kvm" if kvm_works(args.qemu, args.guest_dir) else "tcg"

    workdir = args.workdir or tempfile.mkdtemp(prefix="run-guest-")
    os.makedirs(workdir, exist_ok=True)
    try:
        info = run(args, workdir)
    except KeyboardInterrupt:
        print("interrupted; both sides stopped")
        return 130
    except RuntimeError as e:
        print(f"error: {e}")
        info = None
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if info is None:
        return 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    summarize(args, info)
    return 0 if info["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
