"""The DMA engine's interface for the Python tests.  Every numeric
#define DMAENG_NAME of include/dma-engine.h is the attribute NAME here
(REG_STATUS, CMD_TO_BUF, STATUS_DONE, ...), read from the header itself so
that the two cannot disagree; plus the checksum and a register driver."""

import os
import re

__unittest = True

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                      'include', 'dma-engine.h')
MODES = ('mmap', 'file-io', 'message')      # counter index order


def _header_values():
    """NAME -> value of every plain numeric #define DMAENG_NAME (a number,
    or a product such as (4u * 1024 * 1024))."""
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
    if len(out) < 30 or out.get('NUM_MODES') != len(MODES):
        raise ImportError('%s: only %d DMAENG_ values parsed, or NUM_MODES is '
                          'not %d' % (HEADER, len(out), len(MODES)))
    return out


_H = _header_values()
globals().update(_H)


def reg_bytes(mode):
    """Offset of the bytes counter of an access mode (name or index)."""
    m = MODES.index(mode) if isinstance(mode, str) else mode
    return _H['REG_COUNTERS'] + _H['COUNTER_STRIDE'] * m


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
        self.write64(_H['REG_SRC'], src)
        self.write64(_H['REG_DST'], dst)
        self.write32(_H['REG_LEN'], length)
        if iters is not None:
            self.write32(_H['REG_BENCH_ITERS'], iters)
        self.write32(_H['REG_CMD'], cmd)
