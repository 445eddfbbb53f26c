"""Helpers shared by the interop test scripts (stdlib only)."""

import ctypes
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time

KiB = 1024
MiB = 1024 * KiB


class TestFailure(Exception):
    pass


class Timeout(TestFailure):
    """A peer stopped answering; the session cannot be trusted any more."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def pattern(seed, n):
    """Same function as pattern_word() in the server."""
    words = []
    for i in range((n + 3) // 4):
        w = (seed ^ (i * 0x9E3779B1)) & 0xFFFFFFFF
        w ^= w >> 15
        w = (w * 0x85EBCA6B) & 0xFFFFFFFF
        w ^= w >> 13
        words.append(w)
    return struct.pack('<%dI' % len(words), *words)[:n]


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


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def result(self, ok, name, diag=None):
        self.n += 1
        if not ok:
            self.failed += 1
        print('%s %d - %s' % ('ok' if ok else 'not ok', self.n, name))
        if diag and not ok:
            for ln in diag.splitlines():
                print('# ' + ln)
        sys.stdout.flush()
