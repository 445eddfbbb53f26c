"""The DMA engine's interface (include/dma-engine.h), mirrored for the
Python tests; test_header_matches (tests/server) keeps the two equal."""

import os

__unittest = True

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                      'include', 'dma-engine.h')

VENDOR_ID = 0x1af4
DEVICE_ID = 0x10f5
ID_VALUE = 0x31414d44
VERSION_VALUE = 1
BAR0_SIZE = 4096
BUF_SIZE = 4 << 20
MAX_BENCH_ITERS = 1000000

REG_ID = 0x00
REG_VERSION = 0x04
REG_SRC = 0x08
REG_DST = 0x10
REG_LEN = 0x18
REG_CMD = 0x1c
REG_STATUS = 0x20
REG_ERROR = 0x24
REG_IRQ_STATUS = 0x28
REG_IRQ_CTRL = 0x2c
REG_BUF_SIZE = 0x30
REG_IRQ_COUNT = 0x34
REG_CSUM = 0x38
REG_COUNTERS = 0x40
COUNTER_STRIDE = 16
NUM_MODES = 3
REG_CMD_COUNT = 0x70
REG_BENCH_ITERS = 0x74

CMD_TO_BUF = 1
CMD_FROM_BUF = 2
CMD_COPY = 3
CMD_BENCH_READ = 4
CMD_BENCH_WRITE = 5

STATUS_BUSY = 0x1
STATUS_DONE = 0x2
STATUS_ERROR = 0x4

IRQ_COMPLETION = 0x1

MODES = ('mmap', 'file-io', 'message')      # counter index order


def reg_bytes(mode):
    """Offset of the bytes counter of an access mode (name or index)."""
    m = MODES.index(mode) if isinstance(mode, str) else mode
    return REG_COUNTERS + COUNTER_STRIDE * m


def fnv1a(data):
    """What the device puts in REG_CSUM."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


class Engine:
    """Programs the device through any 32-bit register access pair
    (REGION_READ/WRITE from a raw client, or qtest on the BAR)."""

    def __init__(self, read32, write32):
        self.read32, self.write32 = read32, write32

    def read64(self, reg):
        return self.read32(reg) | self.read32(reg + 4) << 32

    def write64(self, reg, val):
        self.write32(reg, val & 0xffffffff)
        self.write32(reg + 4, val >> 32)

    def start(self, cmd, src, dst, length, iters=None):
        self.write64(REG_SRC, src)
        self.write64(REG_DST, dst)
        self.write32(REG_LEN, length)
        if iters is not None:
            self.write32(REG_BENCH_ITERS, iters)
        self.write32(REG_CMD, cmd)


def header_values():
    """NAME -> value of every plain numeric #define DMAENG_NAME in the C
    header (for the consistency test)."""
    import re
    out = {}
    with open(HEADER) as f:
        for ln in f:
            m = re.match(r'#define DMAENG_(\w+)\s+\(?(0x[0-9a-fA-F]+|\d+)u?'
                         r'(?:\s*\*\s*(\d+)\s*\*\s*(\d+))?\)?', ln)
            if m:
                v = int(m.group(2), 0)
                if m.group(3):
                    v *= int(m.group(3)) * int(m.group(4))
                out[m.group(1)] = v
    return out
