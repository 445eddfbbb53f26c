#!/usr/bin/env python3
"""What a user of the built QEMU needs besides the vfio-user device: user
networking, a display, and firmware found where Debian installs it (no -L).
Prints TAP.

    tests/qemu/features-test.py --qemu QEMU

1. A PC with an e1000 and a virtio-net NIC on -netdev user starts: their
   option ROMs (iPXE) come from the firmware path.  Slirp forwards a host
   port (hostfwd): the host can connect to it.
2. A PC with -device VGA boots SeaBIOS (BIOS and VGA BIOS from the firmware
   path) to its end; a QMP screendump is a PPM image of the text screen with
   something drawn on it.
3. The VNC server answers with the RFB protocol version.

The guest-boot tests (tests/guest, "+net" cases) show a guest moving data
over -netdev user next to vfio-user DMA.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT = 30


class QMP:
    """A minimal QMP client over a unix socket; every read has a deadline."""

    def __init__(self, path, deadline):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"QMP socket {path} did not appear")
                time.sleep(0.05)
        self.sock.settimeout(TIMEOUT)
        self.buf = b""
        self.read()                             # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **arguments):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self.read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error'].get('desc')}")

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})


class Qemu:
    def __init__(self, qemu, workdir, name, args):
        self.qmp_path = os.path.join(workdir, name + ".qmp")
        self.err_path = os.path.join(workdir, name + ".err")
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [qemu, "-nodefaults", "-display", "none", "-no-reboot",
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off"] + args,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err,
            start_new_session=True)
        self.qmp = None

    def connect(self):
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(self.qmp_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"QEMU exited ({self.proc.returncode}): {self.stderr()}")
            if time.monotonic() > deadline:
                raise TimeoutError("QEMU did not open its QMP socket")
            time.sleep(0.05)
        self.qmp = QMP(self.qmp_path, deadline)
        return self.qmp

    def stderr(self):
        self.err.flush()
        with open(self.err_path, errors="replace") as f:
            return f.read().strip()[-500:]

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.err.close()


def test_network(qemu, workdir):
    vm = Qemu(qemu, workdir, "net", [
        "-machine", "pc", "-accel", "tcg", "-S",
        "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:0-10.0.2.15:80",
        "-device", "e1000,netdev=n0",
        "-netdev", "user,id=n1", "-device", "virtio-net-pci,netdev=n1"])
    try:
        q = vm.connect()
        problems = []
        pci = q.cmd("query-pci")
        ids = {(d["id"]["vendor"], d["id"]["device"]) for b in pci for d in b["devices"]}
        for vendor, device, what in ((0x8086, 0x100e, "e1000"), (0x1af4, 0x1000, "virtio-net")):
            if (vendor, device) not in ids:
                problems.append(f"{what} not on the PCI bus")
        usernet = q.hmp("info usernet")
        m = re.search(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)", usernet)
        if not m:
            problems.append(f"no host forward in 'info usernet': {usernet.strip()}")
        else:
            with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=TIMEOUT):
                pass                            # slirp accepted the connection
        return problems
    except (OSError, RuntimeError, TimeoutError, ValueError) as e:
        return [f"{e}; QEMU: {vm.stderr()}"]
    finally:
        vm.close()


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    if not m:
        raise ValueError(f"{path} is not a binary PPM image")
    w, h = int(m.group(1)), int(m.group(2))
    pixels = data[m.end():]
    if len(pixels) != w * h * 3:
        raise ValueError(f"PPM {w}x{h} has {len(pixels)} bytes of pixels, not {w * h * 3}")
    return w, h, pixels


def test_display(qemu, workdir):
    debugcon = os.path.join(workdir, "seabios.log")
    vnc = os.path.join(workdir, "vnc.sock")
    vm = Qemu(qemu, workdir, "vga", [
        "-machine", "pc", "-accel", "tcg", "-device", "VGA",
        "-vnc", f"unix:{vnc}",
        "-chardev", f"file,id=dbg,path={debugcon}",
        "-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
    results = {}
    try:
        q = vm.connect()
        deadline = time.monotonic() + TIMEOUT
        log = ""
        while "No bootable device" not in log:
            if time.monotonic() > deadline:
                raise TimeoutError("SeaBIOS did not get to its end: "
                                   + log.strip().splitlines()[-1:][0] if log.strip() else "")
            time.sleep(0.2)
            with open(debugcon, errors="replace") as f:
                log = f.read()
        problems = []
        if "VGA" not in log and "vgabios" not in log.lower():
            problems.append("SeaBIOS did not run a VGA BIOS")
        shot = os.path.join(workdir, "screen.ppm")
        q.cmd("screendump", filename=shot)
        w, h, pixels = read_ppm(shot)
        colours = len({pixels[i:i + 3] for i in range(0, len(pixels), 3)})
        if colours < 2:
            problems.append(f"the {w}x{h} screen is blank")
        results["display"] = (problems, f"{w}x{h}, {colours} colours")

        problems = []
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        try:
            s.connect(vnc)
            hello = s.recv(12)
        finally:
            s.close()
        if not re.match(rb"RFB \d{3}\.\d{3}\n", hello):
            problems.append(f"VNC server said {hello!r}")
        results["vnc"] = (problems, hello.decode(errors="replace").strip())
    except (OSError, RuntimeError, TimeoutError, ValueError) as e:
        err = f"{e}; QEMU: {vm.stderr()}"
        results.setdefault("display", ([err], ""))
        results.setdefault("vnc", ([err], ""))
    finally:
        vm.close()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu", required=True)
    args = ap.parse_args()
    if not os.access(args.qemu, os.X_OK):
        print(f"1..1\nnot ok 1 - {args.qemu} is not an executable")
        return 1

    workdir = tempfile.mkdtemp(prefix="qemu-features-")
    try:
        print("1..3")
        failed = 0
        problems = test_network(args.qemu, workdir)
        name = "-netdev user with e1000 and virtio-net (iPXE ROMs found), hostfwd reachable"
        failed += report(1, name, problems, "")
        display = test_display(args.qemu, workdir)
        for n, key, name in ((2, "display", "-device VGA: SeaBIOS boots, QMP screendump shows its screen"),
                             (3, "vnc", "-vnc answers RFB")):
            problems, detail = display[key]
            failed += report(n, name, problems, detail)
        return 1 if failed else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(n, name, problems, detail):
    if problems:
        print(f"not ok {n} - {name}")
        for p in problems:
            print(f"  # {p}")
        return 1
    print(f"ok {n} - {name}{f' ({detail})' if detail else ''}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
