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

# BAR0 registers of the server's device and its commands
REG_ADDR_LO, REG_ADDR_HI, REG_LEN, REG_SEED = 0x00, 0x04, 0x08, 0x0C
REG_CMD, REG_STATUS, REG_ERRNO, REG_CRC, REG_SEQ = 0x10, 0x14, 0x18, 0x1C, 0x20
OP_PATTERN, OP_TO_GUEST, OP_FROM_GUEST = 1, 2, 3
METHOD_MSG, METHOD_MAP = 0, 1       # DMA by messages / through the mapping
ST_DONE, ST_FAILED = 2, 3           # REG_STATUS


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
