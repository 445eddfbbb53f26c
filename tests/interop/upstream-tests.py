#!/usr/bin/python3
"""Interop tests: QEMU's client against current libvfio-user, the server
library that implements the DMA_MAP access modes.

Every memory backend x every dma-access value, each in a fresh QEMU (under
-accel qtest) and a fresh lvu-interop-server-upstream.  For each:

* the DMA_MAP of each guest RAM section carries exactly the flags, the kind
  of fd and the offset that the user documentation promises (the library's
  own log gives the flags and offset it received, the server reports the
  access mode, fd and offset the library keeps), firmware ROM goes by
  messages, and the library accepts every map;
* the device moves 4 KiB, exactly max_data_xfer_size and more than that in
  both directions, with vfu_sgl_read/write with and without
  VFU_SGL_DIRECT_ACCESS, and the promised path moves the bytes: mmap sends
  no message and calls no pread/pwrite, file I/O only pread/pwrite, messages
  only DMA_READ/WRITE requests, split at max_data_xfer_size, each with the
  spec's size;
* every byte is checked from QEMU's side (qtest memory accesses).

dma-access=mmap with RAM that cannot be mapped must stop QEMU with an error
naming the backend.  The hugetlb configurations need 2 MiB huge pages; as
root the script reserves them (and gives them back), otherwise they are
skipped with the reason.  Output is TAP; the exit status is non-zero if any
test failed.

usage: upstream-tests.py --qemu QEMU --server SERVER [--only TEXT]
"""

import argparse
import os
import re
import sys
import tempfile
import unittest
import zlib

sys.dont_write_bytecode = True     # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import hugepages  # noqa: E402
import lvu_server  # noqa: E402
import tap  # noqa: E402
from lvu_server import (GUEST_MEM, KiB, METHOD_DIRECT,  # noqa: E402
                        METHOD_MSG, MiB, OP_FROM_GUEST, OP_PATTERN,
                        OP_TO_GUEST, START_TIMEOUT, ST_DONE, fields,
                        server_pattern)
from procs import TestFailure, check  # noqa: E402
from qemu import memory_backend  # noqa: E402

MAX_XFER = 1 * MiB          # the max_data_xfer_size QEMU advertises
GUARD = 64                  # bytes checked after every written range

# Guest RAM of a 64 MiB pc machine under qtest reaches the server as two
# sections, [0, 0xc0000) and [1 MiB, 64 MiB); everything else it maps
# (0xc0000-0x100000, the BIOS at 4 GiB - 256 KiB) is firmware ROM.
RAM_SECTIONS = (0, 0x100000)
# Transfers go inside the second section, away from its start, so that an
# offset lost on any path shows.
XFER_ADDR = 0x100000 + 0x201000
SIZES = (4 * KiB, MAX_XFER, 2 * MAX_XFER + 4 * KiB)
FILE_OFFSET = 2 * MiB       # of the memory-backend-file,offset= backend
HUGE_PAGES = GUEST_MEM // hugepages.PAGE + 1

# DMA_MAP flags
R, W, MMAP, FILE_IO = 0x1, 0x2, 0x4, 0x8
MODE_BITS = {'mmap': MMAP, 'file-io': FILE_IO, 'msg': 0}


class Backend:
    """A kind of guest RAM: its QEMU arguments and what the docs promise
    for it.  own_fd: kind of the RAM's own fd ('memfd', 'file') or None;
    shared: the server may map that fd; writable: file I/O may use it
    (hugetlbfs takes no write())."""

    def __init__(self, name, own_fd=None, shared=False, writable=False,
                 file_offset=0, blksize=4 * KiB, backend_id='mem',
                 huge=False, readonly=False):
        self.name, self.own_fd, self.shared = name, own_fd, shared
        self.writable, self.file_offset = writable, file_offset
        self.blksize, self.backend_id, self.huge = blksize, backend_id, huge
        self.readonly = readonly

    def args(self, tmp):
        size = GUEST_MEM
        m = ['-machine', 'pc', '-m', '%dM' % (size >> 20)]
        if self.name == '-m':
            return m                # the machine makes its own RAM backend
        m[1] += ',memory-backend=mem'
        obj = {
            'memory-backend-ram': lambda: memory_backend('ram', size),
            'memory-backend-memfd': lambda: memory_backend('memfd', size),
            'file share=on': lambda: memory_backend('file-shared', size,
                                                    workdir=tmp),
            'file share=off': lambda: memory_backend('file-private', size,
                                                     workdir=tmp),
            'file share=on,offset': lambda: memory_backend(
                'file-shared', size, workdir=tmp) + ',offset=%d' % FILE_OFFSET,
            'hugetlb memfd': lambda: memory_backend('memfd', size) +
            ',hugetlb=on,hugetlbsize=2M',
            'file share=on,readonly': lambda: memory_backend(
                'file-shared', size, workdir=tmp) + ',readonly=on,rom=on',
            'file share=off,readonly': lambda: memory_backend(
                'file-private', size, workdir=tmp) + ',readonly=on,rom=on',
        }[self.name]()
        if self.readonly:
            # QEMU opens a read-only backend's file, it does not make it
            with open(self.ram_file(tmp), 'wb') as f:
                f.truncate(size)
        return m + ['-object', obj]

    def ram_file(self, tmp):
        return os.path.join(tmp, 'mem-ram') if self.own_fd == 'file' else None

    def expect(self, access):
        """(mode, fd kind) the docs promise for guest RAM with dma-access
        = access; mode None: QEMU must refuse to start."""
        if access == 'message':
            return 'msg', None
        if access in ('auto', 'mmap'):
            if self.shared:
                return 'mmap', self.own_fd
            return (None if access == 'mmap' else 'msg'), None
        assert access == 'file-io'
        if self.shared and self.writable:
            return 'file-io', self.own_fd
        return 'file-io', 'proc-mem'


BACKENDS = [
    Backend('-m', backend_id='pc.ram'),
    Backend('memory-backend-ram'),
    Backend('memory-backend-memfd', 'memfd', shared=True, writable=True),
    Backend('file share=on', 'file', shared=True, writable=True),
    Backend('file share=on,offset', 'file', shared=True, writable=True,
            file_offset=FILE_OFFSET),
    Backend('file share=off', 'file'),
    Backend('hugetlb memfd', 'memfd', shared=True, blksize=2 * MiB,
            huge=True),
    # guest RAM the guest cannot write (a ROM image as RAM): the device may
    # only read it, through a read-only descriptor
    Backend('file share=on,readonly', 'file', shared=True, writable=True,
            readonly=True),
    Backend('file share=off,readonly', 'file', readonly=True),
]
ACCESS = ('auto', 'mmap', 'file-io', 'message')


def dma_maps(s):
    """{iova: (flags, offset, region fields)} of the DMA regions in place
    now, replaying the server's log: the library's debug line with the
    flags and offset it received for each DMA_MAP, the server's line with
    how the library keeps the region, and the unmaps.  A DMA_MAP the
    library did not register, or one over a region in place, fails."""
    live, pending = {}, None
    add = re.compile(r'^lib: .* adding DMA region \[(\w+), (\w+)\) '
                     r'offset=(\w+) flags=(\w+)')
    for ln in s.server.log:
        m = add.match(ln)
        if m:
            check(pending is None, 'DMA_MAP at 0x%x not registered (the '
                  'library refused it)' % (pending or (0,))[0])
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            over = [hex(i) for i, (_, _, f) in live.items()
                    if i < end and start < i + int(f['size'], 16)]
            check(not over, 'DMA_MAP [0x%x, 0x%x) over the region(s) at %s '
                  'still in place' % (start, end, over))
            pending = (start, int(m.group(4), 16), int(m.group(3), 16))
        elif ln.startswith('dma-map '):
            f = fields(ln)
            f['fd-path'] = ln.split(' path=', 1)[1] if ' path=' in ln else ''
            iova = int(f['iova'], 16)
            check(pending and pending[0] == iova, 'region 0x%x registered '
                  'without a DMA_MAP in the library log' % iova)
            live[iova] = (pending[1], pending[2], f)
            pending = None
        elif ln.startswith('dma-unmap '):
            live.pop(int(fields(ln)['iova'], 16), None)
    check(pending is None, 'DMA_MAP at 0x%x not registered (the library '
          'refused it)' % (pending or (0,))[0])
    return live


def size_name(n):
    return ('%d KiB' % (n // KiB) if n < MAX_XFER else
            'max_data_xfer_size' if n == MAX_XFER else '2 x max + 4 KiB')


def region_at(maps, addr):
    """(iova, flags, offset, fields) of the region holding addr."""
    for iova, (flags, offset, f) in maps.items():
        if iova <= addr < iova + int(f['size'], 16):
            return iova, flags, offset, f
    raise TestFailure('no DMA region holds 0x%x' % addr)


class Config:
    """One memory backend with one dma-access value: a fresh server and
    QEMU, and the cases that check them."""

    def __init__(self, args, tmp, backend, access, huge):
        self.args, self.tmp = args, tmp
        self.backend, self.access = backend, access
        self.mode, self.fd_kind = backend.expect(access)
        self.name = '%s, dma-access=%s' % (backend.name, access)
        self.huge = huge
        self.s = lvu_server.QemuSession(args.qemu, args.server, args.qemu_arg,
                                        ['-d'])
        self.maps = None

    # ---- start and stop ----

    def start(self):
        self.s.start(self.tmp, self.backend.args(self.tmp), self.access)
        lib = self.s.server_lines(r'^library=')
        check(lib == ['library=upstream'], 'server built against %s, not '
              'current libvfio-user' % lib)

    def refused(self):
        """dma-access=mmap with RAM that cannot be mapped: QEMU stops with
        an error naming the backend, the server gets no guest RAM."""
        s = self.s
        try:
            s.launch(self.tmp, self.backend.args(self.tmp), self.access)
        except TestFailure:
            pass                    # QEMU may be gone before qtest connects
        try:
            rc = s.qemu.p.wait(START_TIMEOUT)
        except Exception:
            raise TestFailure('QEMU still running %d s after start: it did '
                              'not refuse the device' % START_TIMEOUT)
        err = ' '.join(s.qemu.log)
        check(rc != 0 and 'dma-access=mmap' in err and
              "'%s'" % self.backend.backend_id in err,
              'QEMU exit status %s, its output does not name backend %r '
              'and dma-access=mmap: %s' % (rc, self.backend.backend_id,
                                           s.qemu.tail()))
        s.attached = any(ln == 'attached' for ln in s.server.log)
        ram = [ln for ln in s.server_lines(r'^dma-map ')
               if int(fields(ln)['iova'], 16) in RAM_SECTIONS]
        check(not ram, 'the server got guest RAM anyway: %s' % ram)

    def close(self):
        s = self.s
        rc = s.close()
        check(rc == 0, 'server exit status %s' % rc)

    # ---- DMA_MAP ----

    def ram_flags(self):
        """The DMA_MAP flags promised for guest RAM."""
        return ((R if self.backend.readonly else R | W) |
                MODE_BITS[self.mode])

    def ram_maps(self, sections=RAM_SECTIONS):
        """Guest RAM: the flags, fd kind and offset the docs promise."""
        maps = self.maps = dma_maps(self.s)
        b = self.backend
        want_flags = self.ram_flags()
        for iova in sections:
            check(iova in maps, 'no DMA_MAP for guest RAM at 0x%x (got %s)'
                  % (iova, sorted(hex(i) for i in maps)))
            flags, offset, f = maps[iova]
            what = 'guest RAM at 0x%x' % iova
            check(flags == want_flags, '%s: DMA_MAP flags 0x%x, the docs '
                  'promise 0x%x (%s)' % (what, flags, want_flags, self.mode))
            check(f['mode'] == self.mode, '%s: the library keeps it in mode '
                  '%s, expected %s' % (what, f['mode'], self.mode))
            check(f['fd-kind'] == (self.fd_kind or 'none'),
                  '%s: fd kind %s, expected %s (%s)'
                  % (what, f['fd-kind'], self.fd_kind, f['fd-path']))
            check(f['offset'] == '0x%x' % offset, '%s: library keeps offset '
                  '%s, DMA_MAP said 0x%x' % (what, f['offset'], offset))
            if self.fd_kind is None:
                check(offset == 0, '%s: offset 0x%x without fd'
                      % (what, offset))
                continue
            want_acc = 'ro' if b.readonly else 'rw'
            check(f['acc'] == want_acc, '%s: fd opened %s, expected %s'
                  % (what, f['acc'], want_acc))
            if self.fd_kind == 'proc-mem':
                want = '/proc/%d/mem' % self.s.qemu.p.pid
                check(f['fd-path'] == want, '%s: fd is %s, expected QEMU\'s '
                      '%s' % (what, f['fd-path'], want))
                # the offset is QEMU's virtual address of the section; the
                # transfers check that the bytes are found there
                check(offset >= 0x10000, '%s: offset 0x%x is no host '
                      'address' % (what, offset))
                continue
            want_off = b.file_offset + iova
            check(offset == want_off, '%s: offset 0x%x, expected the file '
                  'offset 0x%x' % (what, offset, want_off))
            if b.ram_file(self.tmp):
                check(f['fd-path'] == b.ram_file(self.tmp), '%s: fd is %s, '
                      'not the backend\'s file %s'
                      % (what, f['fd-path'], b.ram_file(self.tmp)))
            if self.mode == 'mmap':
                check(f['mapped'] == '1' and
                      int(f['page'], 16) == b.blksize == int(f['blksize']),
                      '%s: mapped=%s page %s blksize %s, expected a mapping '
                      'in pages of 0x%x' % (what, f['mapped'], f['page'],
                                            f['blksize'], b.blksize))

    def other_maps(self):
        """Every other section (firmware ROM) goes by messages, read-only;
        the library refused nothing; no map carries a mode bit without fd
        or both bits."""
        maps = self.maps or dma_maps(self.s)
        for iova, (flags, offset, f) in sorted(maps.items()):
            check(flags & (MMAP | FILE_IO) != MMAP | FILE_IO,
                  'DMA_MAP at 0x%x with both mode bits: 0x%x' % (iova, flags))
            check(not flags & (MMAP | FILE_IO) or f['fd-kind'] != 'none',
                  'DMA_MAP at 0x%x with mode bits 0x%x and no fd'
                  % (iova, flags))
            if iova in RAM_SECTIONS:
                continue
            check(flags == R and f['mode'] == 'msg' and f['fd-kind'] == 'none',
                  'ROM section at 0x%x: flags 0x%x mode %s fd %s; expected '
                  'read-only, by messages' % (iova, flags, f['mode'],
                                              f['fd-kind']))
        bad = self.s.server_lines(r'^lib: .*(bad flags|failed to add DMA|'
                                  r'overlaps with|descriptor required|'
                                  r'bad (offset|fd|prot) for new DMA)')
        check(not bad, 'the library refused a DMA_MAP: %s' % bad)

    # ---- transfers ----

    def path(self, line, method, to_guest, addr, length):
        """The server's report of one transfer: the library's view of the
        region and the path that moved the bytes."""
        f = fields(line)
        check(f['status'] == 'ok', 'transfer failed: %s' % line)
        check(f['mode'] == self.mode and
              f['mappable'] == ('1' if self.mode == 'mmap' else '0'),
              'library sees the region as mode %s mappable %s, expected %s: '
              '%s' % (f['mode'], f['mappable'], self.mode, line))
        n = {k: int(f[k], 0) for k in ('msgs', 'msg-bytes', 'msg-max',
                                       'msg-bad', 'preads', 'pwrites',
                                       'io-bytes', 'io-pos')}
        path = self.mode if method == METHOD_DIRECT else 'msg'
        if path == 'mmap':
            check(n['msgs'] == n['preads'] == n['pwrites'] == 0,
                  'mmap region: the bytes did not go through the mapping '
                  'alone: %s' % line)
        elif path == 'file-io':
            used, unused = (('pwrites', 'preads') if to_guest else
                            ('preads', 'pwrites'))
            check(n['msgs'] == 0 and n[unused] == 0 and n[used] >= 1 and
                  n['io-bytes'] == length,
                  'file I/O region: expected %s alone to move %d bytes: %s'
                  % (used[:-1] + '()', length, line))
            iova, _, offset, _ = region_at(self.maps, addr)
            want = offset + addr - iova
            check(n['io-pos'] == want, 'first %s at file position 0x%x, '
                  'expected 0x%x (region offset + 0x%x)'
                  % (used[:-1], n['io-pos'], want, addr - iova))
        else:
            chunks = -(-length // MAX_XFER)
            check(n['preads'] == n['pwrites'] == 0 and n['msgs'] == chunks and
                  n['msg-bytes'] == length and
                  n['msg-max'] == min(length, MAX_XFER) and n['msg-bad'] == 0,
                  'expected %d DMA %s message(s) of at most %d bytes with '
                  'the spec\'s size, and nothing else: %s'
                  % (chunks, 'WRITE' if to_guest else 'READ', MAX_XFER, line))

    def to_guest(self, method, length, seed, addr=XFER_ADDR):
        s = self.s
        want = server_pattern(seed, length)
        s.qt.memset(addr, length + GUARD, 0xA5)
        st, err, crc = s.command(OP_PATTERN, METHOD_MSG, 0, length, seed)
        check(st == ST_DONE and crc == zlib.crc32(want),
              'server pattern differs from ours (crc 0x%08x)' % crc)
        st, err, _ = s.command(OP_TO_GUEST, method, addr, length)
        check(st == ST_DONE, 'to-guest failed in the server: errno %d (%s)'
              % (err, os.strerror(err)))
        self.path(s.last, method, True, addr, length)
        self.verify(addr, want, 'to-guest')

    def server_reads(self, method, addr, data):
        """The device reads len(data) bytes at addr: they must be data,
        moved by the path the mode promises."""
        s = self.s
        st, err, crc = s.command(OP_FROM_GUEST, method, addr, len(data))
        check(st == ST_DONE, 'from-guest failed in the server: errno %d (%s)'
              % (err, os.strerror(err)))
        self.path(s.last, method, False, addr, len(data))
        check(crc == zlib.crc32(data), 'server read different bytes (crc '
              '0x%08x, want 0x%08x)' % (crc, zlib.crc32(data)))

    def from_guest(self, method, length, addr=XFER_ADDR):
        s = self.s
        data = os.urandom(length)
        s.qt.memwrite(addr, data)
        self.server_reads(method, addr, data)
        # back over the same path: the CRC says that something differs,
        # this says where
        s.qt.memset(addr, length + GUARD, 0xA5)
        st, err, _ = s.command(OP_TO_GUEST, method, addr, length)
        check(st == ST_DONE, 'write-back failed: errno %d' % err)
        self.path(s.last, method, True, addr, length)
        self.verify(addr, data, 'from-guest round trip')

    def from_rom(self, method, length, addr=XFER_ADDR):
        """Read-only guest RAM: the test changes the file behind it, the
        device reads it."""
        s = self.s
        data = os.urandom(length)
        with open(self.backend.ram_file(self.tmp), 'r+b') as f:
            os.pwrite(f.fileno(), data, self.backend.file_offset + addr)
        check(s.qt.memread(addr, length) == data, 'QEMU does not see the '
              'bytes written to its read-only backend file')
        self.server_reads(method, addr, data)

    def to_rom(self, method):
        """A device write into read-only guest RAM is refused inside the
        library (EACCES), before any message or pwrite."""
        s, addr = self.s, XFER_ADDR
        before = s.qt.memread(addr, 4 * KiB)
        st, err, _ = s.command(OP_TO_GUEST, method, addr, 4 * KiB)
        f = fields(s.last)
        check(st != ST_DONE and err == 13 and f['msgs'] == '0' and
              f['pwrites'] == '0', 'write into read-only guest RAM: %s'
              % s.last)
        check(s.qt.memread(addr, 4 * KiB) == before,
              'read-only guest RAM changed')

    def verify(self, addr, expected, what):
        got = self.s.qt.memread(addr, len(expected) + GUARD)
        body, tail = got[:len(expected)], got[len(expected):]
        if body != expected:
            bad = next(i for i in range(len(body)) if body[i] != expected[i])
            raise TestFailure('%s: first wrong byte at offset %d of %d (got '
                              '%02x, want %02x)' % (what, bad, len(body),
                                                    body[bad], expected[bad]))
        check(tail == b'\xa5' * GUARD,
              '%s: bytes after the range were modified' % what)

    def remap(self):
        """The firmware makes 0xc0000-0xfffff RAM (i440FX PAM registers):
        QEMU replaces its DMA regions.  Each old one must be gone before a
        new one overlaps it (the library refuses a map over a region in
        place), and the new guest RAM keeps the promised mode; a transfer
        across the old 1 MiB boundary takes the promised path."""
        qt = self.s.qt
        for reg, val in ((0x58, 0x33333300), (0x5C, 0x33333333)):
            qt.cmd('outl 0xcf8 0x%x' % (0x80000000 | reg))
            qt.cmd('outl 0xcfc 0x%x' % val)
        self.s.command(OP_PATTERN, METHOD_MSG, 0, 16, 1)   # orders the log
        self.ram_maps(sections=(region_at(dma_maps(self.s), 0xC0000)[0],))
        self.other_maps()
        for method in (METHOD_DIRECT, METHOD_MSG):
            # one region now, so the legacy library's offset problem is
            # not in the way either
            self.to_guest(method, 8 * KiB, 0x77, addr=0xFF000)
            self.from_guest(method, 8 * KiB, addr=0xFF000)

    # ---- the cases ----

    def cases(self):
        name = self.name
        if self.backend.huge and self.huge.reason:
            def skip():
                raise unittest.SkipTest(self.huge.reason)
            return [tap.FunctionCase('%s: (all cases)' % name, skip)]
        seq = tap.Sequence(gone=self.s.dead, show=self.s.show)
        if self.mode is None:
            return [seq.case('%s: QEMU refuses it, naming backend %r'
                             % (name, self.backend.backend_id), self.refused),
                    seq.case('%s: server exits cleanly after QEMU quits'
                             % name, self.close, always=True)]
        fd = self.fd_kind or 'no'
        table = [
            ('guest RAM: flags 0x%x, %s fd, offset as documented'
             % (self.ram_flags(), fd), self.ram_maps),
            ('ROM by messages; every DMA_MAP accepted, well-formed',
             self.other_maps),
        ]
        for method, mname in ((METHOD_DIRECT, 'direct'), (METHOD_MSG, 'msg')):
            path = self.mode if method == METHOD_DIRECT else 'msg'
            if self.backend.readonly:
                table += [('%s from-guest %s via %s' % (mname, size_name(n),
                                                        path),
                           lambda m=method, n=n: self.from_rom(m, n))
                          for n in SIZES]
                table.append(('%s to-guest refused (EACCES), nothing sent'
                              % mname, lambda m=method: self.to_rom(m)))
                continue
            for i, n in enumerate(SIZES):
                size = size_name(n)
                table += [
                    ('%s to-guest %s via %s' % (mname, size, path),
                     lambda m=method, n=n, i=i:
                     self.to_guest(m, n, 0x100 + i)),
                    ('%s from-guest %s via %s' % (mname, size, path),
                     lambda m=method, n=n: self.from_guest(m, n)),
                ]
        if not self.backend.readonly:
            table.append(('firmware makes 0xc0000-0xfffff RAM: regions '
                          'replaced without overlap, 8 KiB across the old '
                          'boundary both ways', self.remap))
        return ([seq.case('%s: QEMU and server start' % name, self.start,
                          breaks=True)] +
                [seq.case('%s: %s' % (name, what), fn) for what, fn in table] +
                [seq.case('%s: server exits cleanly after QEMU quits' % name,
                          self.close, always=True)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--server', required=True,
                    help='lvu-interop-server-upstream')
    ap.add_argument('--only', help='run only configurations whose name '
                    'contains this')
    ap.add_argument('--qemu-arg', action='append', default=[],
                    help='extra QEMU argument (repeatable), e.g. -trace ...')
    args = ap.parse_args()
    if not lvu_server.bail_out_unless_executable(args.qemu, args.server):
        return 2
    configs = [(b, a) for b in BACKENDS for a in ACCESS
               if not args.only or args.only in '%s, dma-access=%s'
               % (b.name, a)]
    huge = (hugepages.Reservation(HUGE_PAGES)
            if any(b.huge for b, _ in configs) else None)
    try:
        suite = unittest.TestSuite()
        with tempfile.TemporaryDirectory(prefix='lvu-upstream-') as tmp:
            for n, (backend, access) in enumerate(configs):
                d = os.path.join(tmp, str(n))
                os.mkdir(d)
                suite.addTests(Config(args, d, backend, access, huge).cases())
            return tap.run(suite)
    finally:
        if huge:
            huge.release()


if __name__ == '__main__':
    sys.exit(main())
