"""lvu-interop-server (lvu-interop-server.c) as the interop suites run
it, the data pattern its command 1 fills the buffer with, and one such
server with QEMU (under -accel qtest) as its client."""

import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
from procs import LineProc, TestFailure, check  # noqa: E402
from qemu import Qemu, vfio_user_device  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
START_TIMEOUT = 20

# BAR0 registers of the server's device and its commands
REG_ADDR_LO, REG_ADDR_HI, REG_LEN, REG_SEED = 0x00, 0x04, 0x08, 0x0C
REG_CMD, REG_STATUS, REG_ERRNO, REG_CRC, REG_SEQ = 0x10, 0x14, 0x18, 0x1C, 0x20
OP_PATTERN, OP_TO_GUEST, OP_FROM_GUEST = 1, 2, 3
# DMA by messages / through the mapping / vfu_sgl_read/write with
# VFU_SGL_DIRECT_ACCESS (upstream library only)
METHOD_MSG, METHOD_MAP, METHOD_DIRECT = 0, 1, 2
ST_DONE, ST_FAILED = 2, 3           # REG_STATUS


def bail_out_unless_executable(*paths):
    """TAP's bail-out for the first path that is not a program; returns
    whether the suite can run."""
    for path in paths:
        if not os.access(path, os.X_OK):
            print('Bail out! not executable: %s' % path)
            return False
    return True


def start(binary, sock_path, lifetime, options=()):
    """The server on sock_path, ready (it printed 'ready') to accept one
    client; it gives up after lifetime seconds without one.  options: e.g.
    ['-d'] for the library's debug log."""
    server = LineProc([binary] + list(options) + [sock_path, str(lifetime)],
                      'server')
    try:
        server.expect(r'^ready$', START_TIMEOUT)
    except TestFailure:
        server.stop()
        raise
    return server


def start_command(write32, op, method, addr, length, seed=0):
    """Program a command through a 32-bit BAR0 register write function."""
    for reg, val in ((REG_ADDR_LO, addr & 0xFFFFFFFF), (REG_ADDR_HI, addr >> 32),
                     (REG_LEN, length), (REG_SEED, seed),
                     (REG_CMD, op | method << 8)):
        write32(reg, val)


def server_pattern(seed, n):
    """n bytes of the server's pattern for seed (pattern_word() there)."""
    words = []
    for i in range((n + 3) // 4):
        w = (seed ^ (i * 0x9E3779B1)) & 0xFFFFFFFF
        w ^= w >> 15
        w = (w * 0x85EBCA6B) & 0xFFFFFFFF
        w ^= w >> 13
        words.append(w)
    return struct.pack('<%dI' % len(words), *words)[:n]


# ---- the server with QEMU as its client -------------------------------------

GUEST_MEM = 64 * MiB
SLOT = 4                    # PCI slot of the device on bus 0
BAR0_GPA = 0xE0000000       # inside the PCI hole of a 64 MiB pc machine
VENDOR_DEVICE = 0x11E51234  # set by the server (vfu_pci_set_id)
CMD_TIMEOUT = 15            # seconds for any single qtest command or transfer
XFER_LINE = (r'^xfer seq=(\d+) .* errno=(\d+) crc=0x(\w+)$')


class QemuSession:
    """One interop server plus one QEMU connected to it."""

    def __init__(self, qemu, server, qemu_args=(), server_options=(),
                 device_props=None):
        self.qemu_bin, self.server_bin = qemu, server
        self.qemu_args, self.server_options = list(qemu_args), server_options
        self.device_props = device_props    # more vfio-user-pci properties
        self.server = self.vm = self.qemu = self.qt = None
        self.seq = 0
        self.attached = False
        self.last = None            # the server's line for the last command

    def launch(self, tmp, machine_args, dma_access):
        """Start the server, then QEMU with guest RAM from machine_args and
        the device; returns once QEMU's qtest socket is connected."""
        sock_path = os.path.join(tmp, 'vfio-user.sock')
        self.server = start(self.server_bin, sock_path, START_TIMEOUT * 3,
                            self.server_options)
        self.vm = Qemu(self.qemu_bin, tmp, list(machine_args) + [
            '-device', json.dumps(vfio_user_device(
                sock_path, dma_access, SLOT, 'lvu', self.device_props))]
            + self.qemu_args,
            slot=SLOT, timeout=CMD_TIMEOUT)
        self.qemu, self.qt = self.vm.proc, self.vm.qt

    def start(self, tmp, machine_args, dma_access):
        """launch(), then program the device as firmware would."""
        self.launch(tmp, machine_args, dma_access)
        self.server.expect(r'^attached$', START_TIMEOUT, self.qemu)
        self.attached = True
        ids = self.qt.cfg_read(0x00)
        check(ids == VENDOR_DEVICE,
              'PCI ids 0x%08x, expected 0x%08x' % (ids, VENDOR_DEVICE))
        self.qt.setup_pci(BAR0_GPA)
        # a first command orders the output: every dma-map line the server
        # printed for QEMU's initial maps is in our log once it completes
        st, err, _ = self.command(OP_PATTERN, METHOD_MSG, 0, 16, 1)
        check(st == ST_DONE, 'first command failed: errno %d' % err)

    def command(self, op, method, addr, length, seed=0):
        """Run one server command; returns (status, errno, crc); the
        server's whole line is in self.last."""
        qt = self.qt
        start_command(lambda r, v: qt.writel(BAR0_GPA + r, v),
                      op, method, addr, length, seed)
        self.seq += 1
        m = self.server.expect(XFER_LINE, CMD_TIMEOUT, self.qemu)
        self.last = m.group(0)
        check(int(m.group(1)) == self.seq,
              'server finished command %s, expected %d'
              % (m.group(1), self.seq))
        # the registers must agree with what the server printed: this also
        # exercises REGION_READ after the DMA traffic
        status = qt.readl(BAR0_GPA + REG_STATUS)
        err = qt.readl(BAR0_GPA + REG_ERRNO)
        crc = qt.readl(BAR0_GPA + REG_CRC)
        seq = qt.readl(BAR0_GPA + REG_SEQ)
        check(seq == self.seq and err == int(m.group(2)) and
              crc == int(m.group(3), 16),
              'registers (seq %d errno %d crc 0x%08x) disagree with the '
              'server log: %s' % (seq, err, crc, m.group(0)))
        return status, err, crc

    def dead(self):
        """True if the pair can no longer run commands."""
        return ((self.qemu is not None and self.qemu.p.poll() is not None) or
                (self.server is not None and self.server.p.poll() is not None))

    def server_lines(self, regex):
        return [ln for ln in self.server.log if re.search(regex, ln)]

    def show(self):
        """The peers' last lines (a failing case's evidence)."""
        for p in (self.server, self.qemu):
            for ln in (p.log[-30:] if p else []):
                print('[%s] %s' % (p.name, ln[:300]))

    def close(self):
        """Stop QEMU, then expect the server to notice and exit cleanly."""
        rc_server = None
        if self.vm:
            self.vm.close()
        if self.server:
            # the server exits by itself on disconnect; force it only if
            # QEMU never connected to it
            rc_server = self.server.stop(timeout=10, term=not self.attached)
        return rc_server


def fields(line):
    """key=value words of a server line as a dict (values as strings)."""
    return dict(w.split('=', 1) for w in line.split() if '=' in w)
