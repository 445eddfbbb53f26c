"""Helpers shared by the interop test scripts (stdlib only)."""

import os
import struct
import sys

# Failures, child processes and the qtest client live in tests/lib.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
from procs import LineProc as Proc  # noqa: E402,F401
from procs import TestFailure, Timeout, check  # noqa: E402,F401
from qemu import QTest  # noqa: E402,F401

KiB = 1024
MiB = 1024 * KiB


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

    def run_checks(self, checks, broken=None, gone=lambda e: False):
        """Run (name, fn) checks in order, one TAP line each.  Once a check
        leaves the peers unusable (a timeout, gone(e), or an unexpected
        exception), the remaining ones fail as not run instead of each
        waiting for its own timeout.  Returns why the peers are unusable,
        or None."""
        for name, fn in checks:
            if broken:
                self.result(False, name, broken)
                continue
            try:
                fn()
                self.result(True, name)
            except TestFailure as e:
                self.result(False, name, str(e))
                if isinstance(e, Timeout) or gone(e):
                    broken = 'not run: a peer is gone or stuck'
            except Exception as e:
                # a protocol surprise must not abort the whole run
                self.result(False, name, '%s: %s' % (type(e).__name__, e))
                broken = 'not run: unexpected error earlier'
        return broken
