"""Pieces shared by the project's Python test and benchmark scripts
(stdlib only): failures, child processes, QEMU's qtest protocol."""

import ctypes
import queue
import re
import signal
import socket
import subprocess
import threading
import time


class TestFailure(Exception):
    pass


class Timeout(TestFailure):
    """A peer stopped answering; the session cannot be trusted any more."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def die_with_parent():
    # PR_SET_PDEATHSIG: no orphaned QEMU or server if this script is killed
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Proc:
    """A child process whose stdout/stderr lines are queued by threads."""

    def __init__(self, argv, name):
        self.name = name
        self.lines = queue.Queue()
        self.log = []
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE,
                                  preexec_fn=die_with_parent)
        self.threads = [threading.Thread(target=self._pump, args=(f, tag),
                                         daemon=True)
                        for f, tag in ((self.p.stdout, ''),
                                       (self.p.stderr, 'stderr: '))]
        for t in self.threads:
            t.start()

    def _pump(self, f, tag):
        for raw in iter(f.readline, b''):
            line = raw.decode(errors='replace').rstrip('\n')
            self.log.append(tag + line)
            if not tag:
                self.lines.put(line)
        if not tag:
            self.lines.put(None)    # EOF marker

    def expect(self, regex, timeout, partner=None):
        """Next stdout line matching regex (others are skipped); gives up
        early if the partner process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if partner and partner.p.poll() is not None:
                    raise TestFailure('%s exited (rc=%s): %s'
                                      % (partner.name, partner.p.returncode,
                                         ' | '.join(partner.log[-3:])))
                if time.monotonic() > deadline:
                    raise Timeout('%s: timed out waiting for /%s/'
                                  % (self.name, regex))
                continue
            if line is None:
                raise TestFailure('%s: exited (rc=%s) while waiting for /%s/'
                                  % (self.name, self.p.poll(), regex))
            m = re.search(regex, line)
            if m:
                return m

    def stop(self, timeout=10, term=True):
        """End the process; returns its exit status (killed if it hangs)."""
        if term and self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        for t in self.threads:
            t.join(5)
        return self.p.returncode


class QTest:
    """Client side of QEMU's qtest line protocol."""

    def __init__(self, sock, slot, timeout):
        self.sock = sock
        self.slot = slot            # PCI slot on bus 0 for cfg_read/write
        self.sock.settimeout(timeout)
        self.buf = b''

    def _line(self):
        while b'\n' not in self.buf:
            data = self.sock.recv(1 << 20)
            if not data:
                raise TestFailure('qtest: QEMU closed the connection')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return line.decode()

    def cmd(self, text):
        try:
            self.sock.sendall(text.encode() + b'\n')
            while True:
                line = self._line()
                if line.startswith('IRQ'):   # asynchronous, not a reply
                    continue
                break
        except socket.timeout:
            raise Timeout('qtest: no reply to %r' % text[:60])
        words = line.split()
        check(words and words[0] == 'OK',
              'qtest: %r failed: %s' % (text[:60], line[:200]))
        return words[1:]

    def readl(self, addr):
        return int(self.cmd('readl 0x%x' % addr)[0], 16)

    def writel(self, addr, val):
        self.cmd('writel 0x%x 0x%x' % (addr, val))

    def inl(self, port):
        return int(self.cmd('inl 0x%x' % port)[0], 16)

    def outl(self, port, val):
        self.cmd('outl 0x%x 0x%x' % (port, val))

    def memread(self, addr, size):
        data = bytes.fromhex(self.cmd('read 0x%x 0x%x' % (addr, size))[0][2:])
        check(len(data) == size, 'qtest: short read')
        return data

    def memwrite(self, addr, data):
        self.cmd('write 0x%x 0x%x 0x%s' % (addr, len(data), data.hex()))

    def memset(self, addr, size, val):
        self.cmd('memset 0x%x 0x%x 0x%x' % (addr, size, val))

    def cfg_read(self, reg):
        self.outl(0xCF8, 0x80000000 | self.slot << 11 | reg)
        return self.inl(0xCFC)

    def cfg_write(self, reg, val):
        self.outl(0xCF8, 0x80000000 | self.slot << 11 | reg)
        self.outl(0xCFC, val)
