#!/usr/bin/python3
"""Probe what a libvfio-user version accepts, with a raw vfio-user client.

QEMU's client only ever sends well-formed requests, so this script plays the
client itself against lvu-interop-server to record the library's behaviour
on the points the DMA access-mode work depends on: DMA_MAP flag bits, fd
rules, overlapping maps, the message-DMA wire layout it expects, the
DMA_WRITE reply check and how it splits transfers at the client's
max_data_xfer_size.  --library says which version the server is built
against (the copy bundled with QEMU, "legacy", or current libvfio-user,
"upstream"); each has its own expectations where the two differ.
docs/interop-libvfio-user.md describes the results side by side.  Output
is TAP; the exit status is non-zero if the library behaves differently
from what the document says.

usage: probe-library.py [--library legacy|upstream] --server SERVER
"""

import argparse
import ctypes
import os
import re
import select
import socket
import struct
import sys
import tempfile
import subprocess
import time
import unittest
import zlib

sys.dont_write_bytecode = True     # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import tap  # noqa: E402
import vfiouser  # noqa: E402
from procs import TestFailure, Timeout, check  # noqa: E402
from vfiouser import DMA_READ, DMA_WRITE, GuestMemory  # noqa: E402
import lvu_server  # noqa: E402
from lvu_server import (KiB, METHOD_DIRECT, METHOD_MAP,  # noqa: E402
                        METHOD_MSG, OP_FROM_GUEST, OP_PATTERN, OP_TO_GUEST,
                        fields, server_pattern)

CLIENT_MAX_XFER = 64 * KiB          # small, to watch the library split
EINVAL, EPERM, EFAULT, ENODEV = 22, 1, 14, 19
TIMEOUT = 10


class Client(vfiouser.Client):
    """The raw client, plus commands of lvu-interop-server whose DMA
    requests it answers."""

    def __init__(self, path, server):
        super().__init__(path, TIMEOUT)
        self.server = server
        self.requests = []          # server->client requests seen
        self.eof = False
        self.last = None            # the server's line for the last command

    def negotiate(self):
        m = self.version(max_xfer=CLIENT_MAX_XFER, minor=1)
        check(m.err == 0, 'VERSION failed: %d' % m.err)
        return self.version_reply(m)

    def dma_map(self, flags, addr, size, offset=0, fd=None):
        return super().dma_map(addr, size, flags,
                               [fd] if fd is not None else (), offset)

    def reg_write(self, reg, val):
        err = self.region_write(vfiouser.BAR0_REGION, reg,
                                struct.pack('<I', val))
        check(err == 0, 'REGION_WRITE failed: %d' % err)

    def command(self, op, method, addr, length, seed=0, answer=None):
        """Start a server command; answer its DMA requests with answer().
        Returns (ok, errno, crc) from the server's report."""
        lvu_server.start_command(self.reg_write, op, method, addr, length,
                                 seed)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for ln in self.server.drain():
                m = re.search(r'^xfer .* status=(\w+) errno=(\d+) '
                              r'crc=0x(\w+)$', ln)
                if m:
                    self.last = ln
                    return (m.group(1) == 'ok', int(m.group(2)),
                            int(m.group(3), 16))
            if self.eof:
                time.sleep(0.1)
            elif select.select([self.sock], [], [], 0.1)[0]:
                if not self.sock.recv(1, socket.MSG_PEEK):
                    self.eof = True     # dropped by the library; the
                    continue            # server still reports the result
                m = self.recv()
                self.requests.append((m.cmd, m.data))
                check(answer is not None, 'unexpected request %d' % m.cmd)
                answer(self, m)
        raise Timeout('server did not finish the command')


def memfd(size, data=b''):
    fd = os.memfd_create('probe-guest-ram')
    os.ftruncate(fd, size)
    if data:
        os.pwrite(fd, data, 0)
    return fd


# IOVA layout used by the probes
WIN = 0x100000           # message-DMA window, no fd
WIN_SIZE = 1 << 20
MAPPED = 0x400000        # memfd-backed window
MAPPED_SIZE = 1 << 20
MAP_FILE_OFFSET = 0x3000


FLAG_PROBE_IOVA = 0x10000000      # each flag probe at its own 256 MiB
PROBE_SIZE = 0x10000


def probes(c, guest, lib):
    """(name, function) pairs for library version lib; each function
    raises TestFailure."""
    up = lib == 'upstream'
    flag_probes = []

    def map_result(flags, fd_kind, want):
        """DMA_MAP with flags and an fd of fd_kind; an accepted map is
        unmapped again."""
        iova = FLAG_PROBE_IOVA * (len(flag_probes) + 1)
        flag_probes.append(iova)

        def run():
            fd = (memfd(MAPPED_SIZE) if fd_kind == 'memfd' else
                  os.open('/proc/self/mem', os.O_RDWR)
                  if fd_kind == 'proc-mem' else None)
            try:
                err = c.dma_map(flags, iova, PROBE_SIZE, 0, fd)
            finally:
                if fd is not None:
                    os.close(fd)
            check(err == want, 'flags %#x (%s fd): error %d, expected %d'
                  % (flags, fd_kind, err, want))
            if err == 0:
                check(c.dma_unmap(iova, PROBE_SIZE) == 0, 'unmap failed')
        return run

    def outcome(err):
        return {0: 'accepted', EINVAL: 'EINVAL', ENODEV: 'ENODEV'}[err]

    def flag_cases():
        out = []
        for flags, fd_kind, why, legacy_err, up_err in (
                (0x7, 'memfd', 'mmap bit', EINVAL, 0),
                (0xB, 'memfd', 'file-io bit', EINVAL, 0),
                (0x7, 'none', 'mmap bit', EINVAL, EINVAL),
                (0xB, 'none', 'file-io bit', EINVAL, EINVAL),
                (0xF, 'memfd', 'both mode bits', EINVAL, EINVAL),
                (0x13, 'none', 'unknown bit', EINVAL, EINVAL),
                # the legacy library checks the bits first; current
                # libvfio-user tries to mmap() the fd
                (0x7, 'proc-mem', 'mmap bit', EINVAL, ENODEV),
                (0xB, 'proc-mem', 'file-io bit', EINVAL, 0)):
            want = up_err if up else legacy_err
            out.append(('DMA_MAP flags %#x (%s) with %s fd: %s'
                        % (flags, why, 'no' if fd_kind == 'none' else
                           'a ' + fd_kind, outcome(want)),
                        map_result(flags, fd_kind, want)))
        return out

    def last_path():
        return fields(c.last)

    def file_io_memfd():
        # file position = offset + (dma address - region start), both ways
        iova, off = 0x2000000, 0x3000
        fd = memfd(off + MAPPED_SIZE)
        try:
            data = os.urandom(8 * KiB)
            os.pwrite(fd, data, off + 0x5000)
            check(c.dma_map(0xB, iova, MAPPED_SIZE, off, fd) == 0,
                  'file-io map with memfd refused')
            ok, err, crc = c.command(OP_FROM_GUEST, METHOD_DIRECT,
                                     iova + 0x5000, len(data))
            f = last_path()
            check(ok and crc == zlib.crc32(data) and f['mode'] == 'file-io'
                  and int(f['preads']) >= 1 and f['msgs'] == '0' and
                  int(f['io-pos'], 16) == off + 0x5000,
                  'direct read: %s' % c.last)
            c.command(OP_PATTERN, METHOD_MSG, 0, 4 * KiB, 21)
            ok, err, _ = c.command(OP_TO_GUEST, METHOD_DIRECT, iova + 0x9000,
                                   4 * KiB)
            check(ok and os.pread(fd, 4 * KiB, off + 0x9000) ==
                  server_pattern(21, 4 * KiB) and
                  int(last_path()['pwrites']) >= 1,
                  'direct write: %s' % c.last)
            # vfu_sgl_get() is for mapped regions only
            ok, err, _ = c.command(OP_FROM_GUEST, METHOD_MAP, iova, 4 * KiB)
            check(not ok and err == EFAULT, 'sgl_get on a file-io region: '
                  'ok=%s errno=%d' % (ok, err))
            check(c.dma_unmap(iova, MAPPED_SIZE) == 0, 'unmap failed')
        finally:
            os.close(fd)

    def file_io_proc_mem():
        # /proc/self/mem: the offset is this process's address
        buf = ctypes.create_string_buffer(os.urandom(8 * KiB), 8 * KiB)
        iova = 0x3000000
        fd = os.open('/proc/self/mem', os.O_RDWR)
        try:
            check(c.dma_map(0xB, iova, 8 * KiB, ctypes.addressof(buf),
                            fd) == 0, 'file-io map with /proc/self/mem '
                  'refused')
        finally:
            os.close(fd)
        ok, err, crc = c.command(OP_FROM_GUEST, METHOD_DIRECT,
                                 iova + 4 * KiB, 4 * KiB)
        check(ok and crc == zlib.crc32(buf.raw[4 * KiB:]),
              'read of our memory through /proc/self/mem: %s' % c.last)
        check(c.dma_unmap(iova, 8 * KiB) == 0, 'unmap failed')

    def remap_other_mode():
        # the same range, file and offset again with the file-io bit: the
        # library keeps the region as it is, mapped
        iova = 0x4000000
        fd = memfd(MAPPED_SIZE)
        try:
            check(c.dma_map(0x7, iova, MAPPED_SIZE, 0, fd) == 0,
                  'mmap map refused')
            err = c.dma_map(0xB, iova, MAPPED_SIZE, 0, fd)
        finally:
            os.close(fd)
        check(err == 0, 'the same region with the file-io bit: error %d'
              % err)
        ok, err, _ = c.command(OP_FROM_GUEST, METHOD_DIRECT, iova, 4 * KiB)
        f = last_path()
        check(ok and f['mode'] == 'mmap' and f['preads'] == '0',
              'transfer after the re-map: %s' % c.last)
        # (the server printed these before the transfer's line)
        modes = [fields(ln)['mode'] for ln in c.server.log
                 if ln.startswith('dma-map iova=0x%x ' % iova)]
        check(modes == ['mmap', 'mmap'], 'region callbacks: modes %s'
              % modes)
        check(c.dma_unmap(iova, MAPPED_SIZE) == 0, 'unmap failed')

    def map_memfd():
        # file position = offset + (dma address - region start)
        data = os.urandom(8 * KiB)
        fd = c.map_fd = memfd(MAP_FILE_OFFSET + MAPPED_SIZE)
        os.pwrite(fd, data, MAP_FILE_OFFSET + 0x5000)
        err = c.dma_map(0x3, MAPPED, MAPPED_SIZE, MAP_FILE_OFFSET, fd)
        check(err == 0, 'legacy map with memfd failed: %d' % err)
        ok, err, crc = c.command(OP_FROM_GUEST, METHOD_MAP, MAPPED + 0x5000,
                                 len(data))
        check(ok and crc == zlib.crc32(data),
              'mapped read wrong (ok=%s errno=%d)' % (ok, err))

    def same_again():
        # the spec wants EEXIST; this library treats a repeat as a no-op
        err = c.dma_map(0x3, MAPPED, MAPPED_SIZE, MAP_FILE_OFFSET, c.map_fd)
        check(err == 0, 'identical re-map: error %d' % err)

    def same_range_other_file():
        fd = memfd(MAP_FILE_OFFSET + MAPPED_SIZE)
        try:
            err = c.dma_map(0x3, MAPPED, MAPPED_SIZE, MAP_FILE_OFFSET, fd)
        finally:
            os.close(fd)
        check(err == EINVAL, 'same range, other file: error %d' % err)

    def overlap():
        err = c.dma_map(0x3, MAPPED + 0x1000, 0x1000)
        check(err == EINVAL, 'overlapping map: error %d (spec: EEXIST; '
              'this library: EINVAL)' % err)

    def proc_mem_no_bits():
        # a /proc/PID/mem fd in legacy form: the library tries mmap(), fails
        fd = os.open('/proc/self/mem', os.O_RDWR)
        try:
            err = c.dma_map(0x3, 0x20000000, 0x1000, 0x1000, fd)
        finally:
            os.close(fd)
        check(err == ENODEV, '/proc/self/mem fd without mode bit: error %d, '
              'expected ENODEV (mmap() fails)' % err)

    def map_no_fd():
        check(c.dma_map(0x3, WIN, WIN_SIZE) == 0, 'map without fd failed')
        ok, err, _ = c.command(OP_FROM_GUEST, METHOD_MAP, WIN, 4 * KiB)
        check(not ok and err == EFAULT,
              'direct access without fd: ok=%s errno=%d' % (ok, err))

    def msg_write_layout():
        c.requests.clear()
        ok, err, _ = c.command(OP_PATTERN, METHOD_MSG, 0, 4 * KiB, 7)
        ok, err, _ = c.command(OP_TO_GUEST, METHOD_MSG, WIN, 4 * KiB,
                               answer=guest.answer)
        check(ok, 'to-guest failed: %d' % err)
        cmd, body = c.requests[0]
        addr, count = struct.unpack_from('<QQ', body)
        check(cmd == DMA_WRITE and addr == WIN and count == 4 * KiB and
              len(body) == 16 + count and body[16:] == server_pattern(7, count),
              'DMA_WRITE payload is not address u64, count u64, data')

    def msg_read_layout():
        data = os.urandom(4 * KiB)
        guest.mem[0:len(data)] = data
        c.requests.clear()
        ok, err, crc = c.command(OP_FROM_GUEST, METHOD_MSG, WIN, len(data),
                                 answer=guest.answer)
        check(ok and crc == zlib.crc32(data), 'DMA_READ round trip failed')
        cmd, body = c.requests[0]
        check(cmd == DMA_READ and len(body) == 16 and
              struct.unpack('<QQ', body) == (WIN, len(data)),
              'DMA_READ request is not address u64, count u64')

    def split():
        c.requests.clear()
        n = 3 * CLIENT_MAX_XFER + 8 * KiB
        c.command(OP_PATTERN, METHOD_MSG, 0, n, 9)
        ok, err, _ = c.command(OP_TO_GUEST, METHOD_MSG, WIN, n,
                               answer=guest.answer)
        check(ok and bytes(guest.mem[:n]) == server_pattern(9, n),
              'split transfer failed: %d' % err)
        seen = [struct.unpack_from('<QQ', b) for _, b in c.requests]
        want = [(WIN + i * CLIENT_MAX_XFER, min(CLIENT_MAX_XFER,
                                                n - i * CLIENT_MAX_XFER))
                for i in range(4)]
        check(seen == want, 'requests %s, expected %s' % (seen, want))

    def split_tail_size():
        # legacy: every chunk of a split DMA_WRITE is sent with a full-size
        # payload, so the short last one carries stale bytes after its data
        sizes = [len(b) - 16 for _, b in c.requests]
        want = ([CLIENT_MAX_XFER] * 3 + [8 * KiB] if up else
                [CLIENT_MAX_XFER] * 4)
        check(sizes == want, 'data bytes per request: %s, expected %s'
              % (sizes, want))

    def split_read_exact():
        n = 3 * CLIENT_MAX_XFER + 8 * KiB
        guest.mem[0:n] = os.urandom(n)
        ok, err, crc = c.command(OP_FROM_GUEST, METHOD_MSG, WIN, n,
                                 answer=guest.answer)
        check(ok and crc == zlib.crc32(bytes(guest.mem[:n])),
              'split read with exact replies: ok=%s errno=%d' % (ok, err))

    def split_read_padded():
        # the library expects every DMA_READ reply at full chunk size, even
        # for the short last chunk; padded replies go through
        def answer(cl, m):
            addr, count = struct.unpack_from('<QQ', m.data)
            off = addr - WIN
            cl.reply(m, struct.pack('<QQ', addr, count) +
                     bytes(guest.mem[off:off + count]) +
                     bytes(CLIENT_MAX_XFER - count))
        n = 3 * CLIENT_MAX_XFER + 8 * KiB
        guest.mem[0:n] = os.urandom(n)
        ok, err, crc = c.command(OP_FROM_GUEST, METHOD_MSG, WIN, n,
                                 answer=answer)
        check(ok and crc == zlib.crc32(bytes(guest.mem[:n])),
              'padded split read failed: ok=%s errno=%d' % (ok, err))

    def offset_dropped():
        # legacy: the request goes to the region start, not to WIN + 0x1000
        c.requests.clear()
        c.command(OP_PATTERN, METHOD_MSG, 0, 4 * KiB, 11)
        c.command(OP_TO_GUEST, METHOD_MSG, WIN + 0x1000, 4 * KiB,
                  answer=guest.answer)
        addr = struct.unpack_from('<Q', c.requests[0][1])[0]
        want = WIN + 0x1000 if up else WIN
        check(addr == want, 'request address %#x, expected %#x'
              % (addr, want))

    def write_reply(payload_fn, expect_ok):
        def answer(cl, m):
            addr, count = struct.unpack_from('<QQ', m.data)
            cl.reply(m, payload_fn(addr, count))

        def run():
            c.command(OP_PATTERN, METHOD_MSG, 0, 4 * KiB, 5)
            ok, err, _ = c.command(OP_TO_GUEST, METHOD_MSG, WIN, 4 * KiB,
                                   answer=answer)
            check(ok == expect_ok, 'server reported ok=%s errno=%d'
                  % (ok, err))
        return run

    def error_reply():
        def answer(cl, m):
            cl.reply(m, error=EFAULT)
        c.command(OP_PATTERN, METHOD_MSG, 0, 4 * KiB, 5)
        ok, err, _ = c.command(OP_TO_GUEST, METHOD_MSG, WIN, 4 * KiB,
                               answer=answer)
        check(not ok and err == EFAULT, 'ok=%s errno=%d' % (ok, err))

    def old_read_layout():
        # QEMU 10.2.2: count u32 at 8, data at 12, padded to 16 + count
        def answer(cl, m):
            addr, count = struct.unpack_from('<QQ', m.data)
            cl.reply(m, struct.pack('<QI', addr, count) +
                     bytes(guest.mem[:count]) + bytes(4))
        guest.mem[0:4 * KiB] = os.urandom(4 * KiB)
        ok, err, _ = c.command(OP_FROM_GUEST, METHOD_MSG, WIN, 4 * KiB,
                               answer=answer)
        check(not ok and err == EINVAL, 'ok=%s errno=%d' % (ok, err))

    def read_only():
        check(c.dma_map(0x1, 0x800000, 0x10000) == 0, 'read-only map failed')
        ok, err, _ = c.command(OP_TO_GUEST, METHOD_MSG, 0x800000, 4 * KiB,
                               answer=guest.answer)
        check(not ok and err in (EPERM, 13), 'write into a read-only region: '
              'ok=%s errno=%d' % (ok, err))

    upstream_only = [
        ('file-io bit with a memfd: pread/pwrite at offset + (address - '
         'start), never mapped', file_io_memfd),
        ('file-io bit with /proc/self/mem: the offset is the client\'s '
         'address', file_io_proc_mem),
        ('the same region again with the other mode bit: accepted, the '
         'first mode stays', remap_other_mode),
    ] if up else []
    return flag_cases() + upstream_only + [
        ('map with memfd and no mode bit: mmap()ed at the file offset',
         map_memfd),
        ('identical re-map (same file) accepted silently', same_again),
        ('same range with another file: EINVAL', same_range_other_file),
        ('overlapping map: EINVAL', overlap),
        ('/proc/self/mem fd without mode bit: ENODEV (mmap fails)',
         proc_mem_no_bits),
        ('map without fd: registered, direct access EFAULT', map_no_fd),
        ('DMA_WRITE request layout: address, count u64, data @16',
         msg_write_layout),
        ('DMA_READ request layout: address, count u64',
         msg_read_layout),
        ('transfers split at the client max_data_xfer_size', split),
        ('the last, shorter DMA_WRITE chunk carries %s'
         % ('its count of bytes' if up else 'max bytes'), split_tail_size),
        ('split DMA_READ with replies of exactly count bytes works',
         split_read_exact) if up else
        ('split DMA_READ works when the last reply is padded to full size',
         split_read_padded),
        ('message DMA address %s the offset inside a region'
         % ('keeps' if up else 'ignores'), offset_dropped),
        ('DMA_WRITE reply address+count u64 accepted',
         write_reply(lambda a, n: struct.pack('<QQ', a, n), True)),
        ('DMA_WRITE reply without payload rejected',
         write_reply(lambda a, n: b'', False)),
        ('DMA_WRITE reply with a wrong count rejected',
         write_reply(lambda a, n: struct.pack('<QQ', a, n - 1), False)),
        ('DMA_WRITE reply with a wrong address rejected',
         write_reply(lambda a, n: struct.pack('<QQ', a + 8, n), False)),
        ('error reply reaches the device as its errno', error_reply),
        ('DMA_READ reply in the QEMU 10.2.2 layout: EINVAL', old_read_layout),
        ('DMA_WRITE into a read-only region refused locally', read_only),
    ]


ENOTCONN = 107


def short_write_reply(c, guest):
    """DMA_WRITE reply with a 4-byte count (12-byte payload)."""
    def answer(cl, m):
        addr, count = struct.unpack_from('<QQ', m.data)
        cl.reply(m, struct.pack('<QI', addr, count))
    c.command(OP_PATTERN, METHOD_MSG, 0, 4 * KiB, 5)
    return c.command(OP_TO_GUEST, METHOD_MSG, WIN, 4 * KiB, answer=answer)


def exact_split_read(c, guest):
    """Split DMA_READ answered exactly as the spec says (count bytes)."""
    n = CLIENT_MAX_XFER + 8 * KiB
    check(c.dma_map(0x3, WIN, WIN_SIZE) == 0, 'map without fd failed')
    return c.command(OP_FROM_GUEST, METHOD_MSG, WIN, n, answer=guest.answer)


def padded_split_read(c, guest):
    """Split DMA_READ whose last reply is padded to the full chunk size:
    current libvfio-user completes the transfer, then reads the padding
    as the next message ("bad size 0 in header") and answers it with an
    error reply to a request nobody sent."""
    n = 3 * CLIENT_MAX_XFER + 8 * KiB
    check(c.dma_map(0x3, WIN, WIN_SIZE) == 0, 'map without fd failed')
    guest.mem[0:n] = os.urandom(n)
    stray = []

    def answer(cl, m):
        if m.flags & vfiouser.REPLY:
            stray.append(m)
            return
        addr, count = struct.unpack_from('<QQ', m.data)
        off = addr - WIN
        cl.reply(m, struct.pack('<QQ', addr, count) +
                 bytes(guest.mem[off:off + count]) +
                 bytes(CLIENT_MAX_XFER - count))
    ok, err, crc = c.command(OP_FROM_GUEST, METHOD_MSG, WIN, n,
                             answer=answer)
    check(ok and crc == zlib.crc32(bytes(guest.mem[:n])),
          'padded split read: ok=%s errno=%d' % (ok, err))
    deadline = time.monotonic() + TIMEOUT
    while not stray and time.monotonic() < deadline:
        if select.select([c.sock], [], [], 0.1)[0]:
            answer(c, c.recv())
    check(stray and stray[0].id == 0 and stray[0].err == EINVAL and
          any('bad size 0 in header' in ln for ln in c.server.log),
          'no error reply to the padding: %s' % (stray,))


class Session:
    """One server process and this script as its client: optionally the
    probes, then one reply expected to make the library drop the
    connection, then the server must exit cleanly."""

    def __init__(self, binary, lib, tmp, n):
        self.binary, self.lib, self.tmp, self.n = binary, lib, tmp, n
        self.server = self.c = None
        self.seq = tap.Sequence(show=self.show)

    def show(self):
        for ln in (self.server.log[-30:] if self.server else []):
            print('[server] ' + ln[:300])

    def start(self):
        path = os.path.join(self.tmp, 'vfio-user.sock')
        self.server = lvu_server.start(self.binary, path, 30)
        lib = [ln for ln in self.server.log if ln.startswith('library=')]
        check(lib == ['library=' + self.lib], 'server built against %s, '
              'expected library=%s' % (lib, self.lib))
        self.c = Client(path, self.server)
        self.version = self.c.negotiate()
        self.server.expect(r'^attached$', TIMEOUT)
        self.probes = probes(self.c, GuestMemory(WIN, WIN_SIZE,
                                                 CLIENT_MAX_XFER), self.lib)

    def check_version(self):
        self.start()
        major, minor, caps = self.version
        check((major, minor) == (0, 1) and caps.get('capabilities', {}).get(
            'max_data_xfer_size') == 1 << 20, 'got %d.%d %s'
            % (major, minor, caps))

    def dropped(self, last_fn):
        ok, err, _ = last_fn(self.c, GuestMemory(WIN, WIN_SIZE, CLIENT_MAX_XFER))
        check(not ok and err == ENOTCONN,
              'library kept the connection (ok=%s errno=%d)' % (ok, err))
        try:
            self.server.p.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            raise TestFailure('server still running %d s after the '
                              'disconnect' % TIMEOUT)
        check('disconnected' in self.server.log, 'server did not report '
              'the disconnect')

    def stop(self):
        if self.c:
            self.c.close()
        if self.server:
            rc = self.server.stop(timeout=10, term=self.c is None)
            check(rc == 0, 'server exit status %s' % rc)

    def cases(self, with_probes, last_name, last_fn, drops):
        """The session's cases; the last one, last_fn, is expected to make
        the library drop the connection if drops, else to raise on
        failure itself."""
        seq = self.seq
        out = []
        if with_probes:
            out.append(seq.case('VERSION: 0.1, server max_data_xfer_size '
                                '1 MiB', self.check_version, breaks=True))
            # the probes close over the client, which exists only once
            # the first case has run
            names = [name for name, _ in probes(None, None, self.lib)]
            out += [seq.case(name, lambda i=i: self.probes[i][1]())
                    for i, name in enumerate(names)]
        else:
            out.append(seq.case('server %d starts, client attached' % self.n,
                                self.start, breaks=True))
        out.append(seq.case(last_name, (lambda: self.dropped(last_fn)) if drops
                            else lambda: last_fn(self.c, GuestMemory(
                                WIN, WIN_SIZE, CLIENT_MAX_XFER))))
        out.append(seq.case('server %d exits cleanly afterwards' % self.n,
                            self.stop, always=True))
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--server', required=True)
    ap.add_argument('--library', choices=('legacy', 'upstream'),
                    default='legacy', help='the libvfio-user version the '
                    'server is built against (default: legacy, the copy '
                    'bundled with QEMU)')
    args = ap.parse_args()
    if not lvu_server.bail_out_unless_executable(args.server):
        return 2
    suite = unittest.TestSuite()
    with tempfile.TemporaryDirectory(prefix='lvu-probe-') as tmp:
        second = ((False, 'split DMA_READ, last reply padded to full size: '
                   'the transfer works, then the padding is read as the '
                   'next message', padded_split_read, False)
                  if args.library == 'upstream' else
                  (False, 'split DMA_READ, last reply of exactly count '
                   'bytes: the library drops the connection',
                   exact_split_read, True))
        for n, (probes_too, name, fn, drops) in enumerate((
                (True, 'DMA_WRITE reply with a 4-byte count (12-byte '
                 'payload): the library drops the connection',
                 short_write_reply, True), second)):
            d = os.path.join(tmp, str(n))
            os.mkdir(d)
            s = Session(args.server, args.library, d, n + 1)
            suite.addTests(s.cases(probes_too, name, fn, drops))
        return tap.run(suite)


if __name__ == '__main__':
    sys.exit(main())
