#!/usr/bin/python3
"""What a user of the built QEMU needs besides the vfio-user device: user
networking, a display, and firmware found where Debian installs it (no -L).
Prints TAP (tests/lib).

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
import os
import re
import socket
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
import tap  # noqa: E402
from procs import check  # noqa: E402
from qemu import Qemu  # noqa: E402

TIMEOUT = 30


def read_ppm(path):
    with open(path, "rb") as f:
        data = f.read()
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    check(m, f"{path} is not a binary PPM image")
    w, h = int(m.group(1)), int(m.group(2))
    pixels = data[m.end():]
    check(len(pixels) == w * h * 3,
          f"PPM {w}x{h} has {len(pixels)} bytes of pixels, not {w * h * 3}")
    return w, h, pixels


class Features:
    """The QEMUs the cases share; each case prints what it found."""

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir
        self.vm = self.last = None

    def show(self):
        if self.last:
            print("QEMU: " + self.last.proc.tail(8))

    def start(self, name, args):
        d = os.path.join(self.workdir, name)
        os.mkdir(d)
        self.vm = self.last = Qemu(self.binary, d, ["-machine", "pc", "-no-reboot"] + args,
                                   accel="tcg", qtest=False, qmp=True, timeout=TIMEOUT)
        return d

    def stop(self):
        if self.vm:
            self.vm.close()
            self.vm = None

    def network(self):
        try:
            self.start("net", [
                "-S", "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:0-10.0.2.15:80",
                "-device", "e1000,netdev=n0",
                "-netdev", "user,id=n1", "-device", "virtio-net-pci,netdev=n1"])
            q = self.vm.qmp
            pci = q.cmd("query-pci")
            ids = {(d["id"]["vendor"], d["id"]["device"])
                   for b in pci for d in b["devices"]}
            for vendor, device, what in ((0x8086, 0x100e, "e1000"),
                                         (0x1af4, 0x1000, "virtio-net")):
                check((vendor, device) in ids, f"{what} not on the PCI bus")
            usernet = q.hmp("info usernet")
            m = re.search(r"HOST_FORWARD\]\s+\d+\s+127\.0\.0\.1\s+(\d+)", usernet)
            check(m, f"no host forward in 'info usernet': {usernet.strip()}")
            with socket.create_connection(("127.0.0.1", int(m.group(1))),
                                          timeout=TIMEOUT):
                pass                            # slirp accepted the connection
        finally:
            self.stop()

    def display(self):
        d = self.start("vga", [
            "-device", "VGA", "-vnc", "unix:" + os.path.join(self.workdir, "vnc.sock"),
            "-chardev", "file,id=dbg,path=" + os.path.join(self.workdir, "seabios.log"),
            "-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        deadline = time.monotonic() + TIMEOUT
        log = ""
        while "No bootable device" not in log:
            check(time.monotonic() < deadline, "SeaBIOS did not get to its end: "
                  + (log.strip().splitlines()[-1] if log.strip() else "no output"))
            time.sleep(0.2)
            with open(os.path.join(self.workdir, "seabios.log"), errors="replace") as f:
                log = f.read()
        check("VGA" in log or "vgabios" in log.lower(), "SeaBIOS did not run a VGA BIOS")
        shot = os.path.join(d, "screen.ppm")
        self.vm.qmp.cmd("screendump", filename=shot)
        w, h, pixels = read_ppm(shot)
        colours = len({pixels[i:i + 3] for i in range(0, len(pixels), 3)})
        check(colours >= 2, f"the {w}x{h} screen is blank")
        print(f"{w}x{h}, {colours} colours")

    def vnc(self):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            try:
                s.connect(os.path.join(self.workdir, "vnc.sock"))
                hello = s.recv(12)
            finally:
                s.close()
            check(re.match(rb"RFB \d{3}\.\d{3}\n", hello),
                  f"VNC server said {hello!r}")
            print(hello.decode(errors="replace").strip())
        finally:
            self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu", required=True)
    args = ap.parse_args()
    if not os.access(args.qemu, os.X_OK):
        print(f"Bail out! {args.qemu} is not an executable")
        return 1
    with tempfile.TemporaryDirectory(prefix="qemu-features-") as workdir:
        f = Features(args.qemu, workdir)
        seq = tap.Sequence(show=f.show)
        return tap.run(unittest.TestSuite([
            seq.case("-netdev user with e1000 and virtio-net (iPXE ROMs found), "
                     "hostfwd reachable", f.network, always=True),
            seq.case("-device VGA: SeaBIOS boots, QMP screendump shows its screen",
                     f.display, always=True),
            seq.case("-vnc answers RFB", f.vnc),
        ]))


if __name__ == "__main__":
    sys.exit(main())
