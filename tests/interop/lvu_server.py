"""lvu-interop-server (lvu-interop-server.c) as both interop suites run
it, and the data pattern its command 1 fills the buffer with."""

import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
from procs import LineProc, TestFailure  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
START_TIMEOUT = 20


def start(binary, sock_path, lifetime):
    """The server on sock_path, ready (it printed 'ready') to accept one
    client; it gives up after lifetime seconds without one."""
    server = LineProc([binary, sock_path, str(lifetime)], 'server')
    try:
        server.expect(r'^ready$', START_TIMEOUT)
    except TestFailure:
        server.stop()
        raise
    return server


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
