#!/usr/bin/python3
"""Protocol tests for vfio-user-dma-server, without QEMU or a guest: this
script is the vfio-user client.  It checks the DMA_MAP rules of the
access-mode revision, the DMA_READ/DMA_WRITE layout and splitting, each
access mode end to end through the device's registers, interrupts, and
that malformed input gets an error (never a crash, a hang or a leaked fd).
Prints TAP.

    tests/server/protocol-tests.py --server SERVER
"""
import argparse
import errno
import os
import select
import socket
import struct
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import dmaengine as de  # noqa: E402
import tap  # noqa: E402
from dmaserver import DmaServer  # noqa: E402
from procs import check  # noqa: E402
from vfiouser import (BAR0_REGION, CONFIG_REGION, DEVICE_GET_INFO,  # noqa: E402
                      DEVICE_GET_IRQ_INFO, DEVICE_GET_REGION_INFO, DMA_FILE_IO,
                      DMA_MAP, DMA_MMAP, DMA_R, DMA_READ, DMA_UNMAP_ALL, DMA_W,
                      DMA_WRITE, REGION_READ, REGION_WRITE, REPLY, Client,
                      GuestMemory)

CLIENT_MAX_XFER = 8192
SERVER = None           # --server
RW = DMA_R | DMA_W
GET_INFO = struct.pack('<IIII', 16, 0, 0, 0)


def ramp(n, seed):
    """n bytes that differ from offset to offset and from seed to seed."""
    return bytes((i * 31 + seed + (i >> 8)) & 0xff for i in range(n))


class Session:
    """One server (started with args) and this script as its client."""

    def __init__(self, case, legacy=False, args=()):
        tmp = tempfile.TemporaryDirectory(prefix='proto-test-')
        case.addCleanup(tmp.cleanup)
        self.server = DmaServer(SERVER, tmp.name,
                                (['--legacy'] if legacy else []) + list(args))
        case.addCleanup(self.server.stop)
        case.on_failure(self.show_log)
        self.c = Client(self.server.sock_path)
        case.addCleanup(self.c.close)
        self.twin = None        # a Client on the twin socket, once set up
        self.dev = de.Engine(self.reg_read, self.reg_write)

    def show_log(self):
        for ln in self.server.log[-12:]:
            print('[server] ' + ln)

    def version(self, caps=None, twin=False):
        """VERSION (offering the twin socket if twin); keeps the twin
        socket the reply sets up in self.twin."""
        m = self.c.version(caps, max_xfer=CLIENT_MAX_XFER, twin=twin)
        if not m.err:
            self.twin = Client.twin_socket(m)
        return m

    def reg_write(self, off, val, width=4):
        return self.c.region_write(BAR0_REGION, off,
                                   val.to_bytes(width, 'little'))

    def reg_read(self, off, width=4, region=BAR0_REGION):
        return int.from_bytes(self.c.region_read(region, off, width), 'little')

    def enable_master(self):
        err = self.c.region_write(CONFIG_REGION, 4, struct.pack('<H', 0x6))
        check(err == 0, 'enabling bus mastering: errno %d' % err)

    def fd_count(self):
        # The server may close a message's fds just after its reply: one
        # more round trip (it handles messages in order) lets it finish.
        self.c.call(DEVICE_GET_INFO, GET_INFO)
        return len(os.listdir('/proc/%d/fd' % self.server.p.pid))

    def serve_dma(self, guest):
        """Answer the server's DMA messages out of guest (a GuestMemory)
        until the command completes; returns STATUS.  A DMA request is
        answered only after the server has answered a read of STATUS sent
        meanwhile: QEMU's vCPU may hold the lock its DMA answers need while
        it reads a register, so the server must not make the read wait.
        With the twin socket, the requests must come on it and nothing but
        the register reads' replies on the main socket."""
        while True:
            sid = self.c.send(REGION_READ, struct.pack(
                '<QII', de.REG_STATUS, BAR0_REGION, 4))
            held = []
            while True:
                m = self.c.recv()
                if m.flags & 0xf == REPLY and m.id == sid:
                    status = int.from_bytes(m.data[16:20], 'little')
                    break
                held.append(m)
            if self.twin:
                check(not held, 'with the twin socket, requests came on the '
                      'main socket: commands %s' % [m.cmd for m in held])
                # what the server asked meanwhile, and (busy) what it asks
                # within a moment
                wait = 0.01 if status & de.STATUS_BUSY else 0
                while select.select([self.twin.sock], [], [], wait)[0]:
                    guest.answer(self.twin, self.twin.recv())
            for m in held:
                guest.answer(self.c, m)
            if not status & de.STATUS_BUSY:
                return status

    def close(self, want_rc=0):
        """The client leaves; the server must exit with want_rc."""
        self.c.close()
        if self.twin:
            self.twin.close()
        self.server.check_exit(want_rc)


class Protocol(tap.Case):
    legacy = False

    def session(self, legacy=False, args=()):
        return Session(self, legacy, args)

    def test_version(self):
        """commands before VERSION, bad capabilities, second VERSION"""
        s = self.session()
        self.assertEqual(s.c.call(DEVICE_GET_INFO, GET_INFO).err, errno.EINVAL)
        self.assertEqual(s.version('{not json').err, errno.EINVAL)
        self.assertEqual(s.version('{"capabilities":{"max_data_xfer_size":'
                                   '"big"}}').err, errno.EINVAL)
        m = s.version()
        self.assertEqual(m.err, 0)
        major, minor, caps = Client.version_reply(m)
        self.assertEqual((major, minor), (0, 0))
        self.assertGreaterEqual(caps['capabilities']['max_data_xfer_size'], 4096)
        self.assertEqual(s.version().err, errno.EINVAL, 'second VERSION accepted')
        s.close()

    def test_device_info(self):
        """device, region and irq info; region access bounds"""
        s = self.session()
        s.version()
        c = s.c
        m = c.call(DEVICE_GET_INFO, GET_INFO)
        self.assertEqual(struct.unpack_from('<IIII', m.data), (16, 3, 9, 5))
        sizes = [struct.unpack_from('<IIIIQQ', c.call(
            DEVICE_GET_REGION_INFO, struct.pack('<IIIIQQ', 32, 0, i, 0, 0, 0)
        ).data)[4] for i in range(9)]
        self.assertEqual(sizes, [de.BAR0_SIZE, 0, 0, 0, 0, 0, 0, 256, 0])
        self.assertEqual(c.call(DEVICE_GET_REGION_INFO, struct.pack(
            '<IIIIQQ', 32, 0, 9, 0, 0, 0)).err, errno.EINVAL)
        self.assertEqual(c.call(DEVICE_GET_REGION_INFO, b'\x20\0\0\0').err,
                         errno.EINVAL)
        m = c.call(DEVICE_GET_IRQ_INFO, struct.pack('<IIII', 16, 0, 1, 0))
        self.assertEqual(struct.unpack_from('<IIII', m.data), (16, 0x9, 1, 1))
        m = c.call(DEVICE_GET_IRQ_INFO, struct.pack('<IIII', 16, 0, 0, 0))
        self.assertEqual(struct.unpack_from('<IIII', m.data), (16, 0x7, 0, 1))
        self.assertEqual(c.call(DEVICE_GET_IRQ_INFO, struct.pack(
            '<IIII', 16, 0, 7, 0)).err, errno.EINVAL)
        self.assertEqual(s.reg_read(0, 4, CONFIG_REGION),
                         de.DEVICE_ID << 16 | de.VENDOR_ID)
        self.assertEqual(s.reg_read(de.REG_ID), de.ID_VALUE)
        self.assertEqual(c.call(REGION_READ, struct.pack(
            '<QII', 252, CONFIG_REGION, 8)).err, errno.EINVAL)
        self.assertEqual(c.call(REGION_READ, struct.pack('<QII', 0, 3, 4)).err,
                         errno.EINVAL)
        self.assertEqual(c.call(REGION_WRITE, struct.pack(
            '<QII', 8, BAR0_REGION, 4) + b'\0').err, errno.EINVAL)
        self.assertEqual(c.region_write(BAR0_REGION, 8, b'\0\0'), errno.EINVAL,
                         'a 16-bit register write was accepted')
        self.assertEqual(c.call(99).err, errno.ENOSYS)
        s.close()

    def map_rules(self, legacy):
        s = self.session(legacy)
        s.version()
        c = s.c
        fd = os.memfd_create('guest')
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, 1 << 20)
        base_fds = s.fd_count()
        for iova, size, flags, fds, why in (
                (0x10000, 0x1000, RW | DMA_MMAP, [], 'mmap bit without fd'),
                (0x10000, 0x1000, RW | DMA_FILE_IO, [], 'file-io bit without fd'),
                (0x10000, 0x1000, RW | DMA_MMAP | DMA_FILE_IO, [fd], 'two modes'),
                (0x10000, 0x1000, RW | 0x10, [fd], 'unknown bit'),
                (0x10000, 0x1000, RW, [fd, fd], 'two fds'),
                (0x10000, 0, RW, [], 'size 0'),
                (0x10000, 2 << 20, RW, [fd], 'past the end of the file')):
            self.assertEqual(c.dma_map(iova, size, flags, fds), errno.EINVAL, why)
        self.assertEqual(c.call(DEVICE_GET_INFO, GET_INFO, [fd]).err, errno.EINVAL)
        self.assertEqual(s.fd_count(), base_fds, 'refused fds were kept open')
        # no bit + fd: mmap; no bit, no fd: messages (legal for everyone)
        self.assertEqual(c.dma_map(0x10000, 0x1000, RW, [fd]), 0)
        self.assertEqual(c.dma_map(0x20000, 0x1000, RW), 0)
        self.assertEqual(c.dma_map(0x10800, 0x1000, RW), errno.EEXIST)
        self.assertEqual(c.dma_map(0xf000, 0x2000, RW, [fd]), errno.EEXIST)
        want = errno.EINVAL if legacy else 0
        self.assertEqual(c.dma_map(0x30000, 0x1000, RW | DMA_MMAP, [fd]), want)
        self.assertEqual(c.dma_map(0x40000, 0x1000, RW | DMA_FILE_IO, [fd],
                                   0x1000), want)
        self.assertEqual(s.fd_count(), base_fds + (0 if legacy else 1),
                         'file-io must keep exactly one fd')
        self.assertEqual(c.dma_unmap(0x10000, 0x800), errno.EINVAL,
                         'unmap cutting a region')
        self.assertEqual(c.dma_unmap(0x10000, 0x1000), 0)
        self.assertEqual(c.dma_unmap(0, 0, DMA_UNMAP_ALL), 0)
        self.assertEqual(s.fd_count(), base_fds, 'unmap-all left fds open')
        s.close()
        log = '\n'.join(s.server.log)
        self.assertIn('mode=mmap fd=yes', log)
        self.assertIn('mode=message fd=no', log)
        self.assertEqual('mode=file-io' in log, not legacy)

    def test_map_rules(self):
        """DMA_MAP rules (access-mode revision)"""
        self.map_rules(False)

    def test_map_rules_legacy(self):
        """DMA_MAP rules with --legacy"""
        self.map_rules(True)

    def region(self, s, kind, iova, data, offset=0, flags=RW):
        """Guest memory of a kind holding data at iova; returns
        (GuestMemory for messages or None, reader of the bytes)."""
        if kind == 'message':
            guest = GuestMemory(iova, data)
            self.assertEqual(s.c.dma_map(iova, len(data), flags), 0)
            return guest, lambda: bytes(guest.mem)
        fd = os.memfd_create(kind)
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, offset + len(data))
        os.pwrite(fd, data, offset)
        bit = DMA_MMAP if kind == 'mmap' else DMA_FILE_IO
        self.assertEqual(s.c.dma_map(iova, len(data), flags | bit, [fd],
                                     offset), 0)
        return None, lambda: os.pread(fd, len(data), offset)

    def dma_mode(self, kind, twin=False, args=()):
        """Both directions through one region of a kind; twin: offer the
        twin socket.  Returns the session (closed) and the VERSION reply."""
        s = self.session(args=args)
        vm = s.version(twin=twin)
        self.assertEqual(vm.err, 0)
        s.enable_master()
        size = 3 * CLIENT_MAX_XFER + 100
        data = ramp(size, 7)
        guest, read_back = self.region(s, kind, 0x100000, data + bytes(4096),
                                       offset=0x3000)

        def run(*cmd):
            s.dev.start(*cmd)
            st = s.serve_dma(guest) if guest else s.reg_read(de.REG_STATUS)
            self.assertEqual(st, de.STATUS_DONE, 'status %#x error %d'
                             % (st, s.reg_read(de.REG_ERROR)))
        run(de.CMD_TO_BUF, 0x100000, 0, size)
        self.assertEqual(s.dev.read64(de.REG_CSUM), de.fnv1a(data),
                         'device read wrong bytes')
        run(de.CMD_FROM_BUF, 0, 0x100000 + 4095, size)
        got = read_back()
        self.assertTrue(got[4095:4095 + size] == data, 'device wrote wrong bytes')
        self.assertTrue(got[:4095] == data[:4095], 'device wrote before the target')
        for mode in de.MODES:
            self.assertEqual(s.dev.read64(de.reg_bytes(mode)),
                             2 * size if mode == kind else 0, mode + ' counter')
        if kind == 'message':
            for cmd, addr, count, plen in guest.requests:
                self.assertLessEqual(count, CLIENT_MAX_XFER,
                                     'transfer not split at max_data_xfer_size')
                self.assertEqual(plen, 16 + (count if cmd == DMA_WRITE else 0),
                                 'payload layout')
            reads = [r for r in guest.requests if r[0] == DMA_READ]
            self.assertEqual([r[1] for r in reads],
                             [0x100000 + i * CLIENT_MAX_XFER for i in range(4)])
            self.assertEqual(sum(r[2] for r in reads), size)
        s.close()
        stats = s.server.stats()
        self.assertEqual(stats[kind]['bytes'], 2 * size)
        self.assertEqual(stats['errors'], 0)
        return s, vm, guest

    def test_mmap(self):
        """DMA through mmap regions, verified both ways"""
        self.dma_mode('mmap')

    def test_file_io(self):
        """DMA through file-io regions, verified both ways"""
        self.dma_mode('file-io')

    def test_message(self):
        """DMA through message regions, verified both ways"""
        self.dma_mode('message')

    # ---- the twin socket (docs/server.md, "Twin socket") ----

    def twin_caps(self, vm):
        return Client.version_reply(vm)[2]['capabilities'].get('twin_socket')

    def test_twin_negotiated(self):
        """twin socket offered and accepted: message DMA on it, exact both ways"""
        s, vm, guest = self.dma_mode('message', twin=True)
        self.assertEqual(self.twin_caps(vm), {'supported': True, 'fd_index': 0})
        self.assertEqual(len(vm.fds), 1, 'the VERSION reply must bring one fd')
        self.assertIsNotNone(s.twin)
        self.assertEqual((s.twin.sock.family, s.twin.sock.type),
                         (socket.AF_UNIX, socket.SOCK_STREAM))
        # serve_dma answered every request from the twin socket and saw
        # none on the main one
        self.assertGreater(len(guest.requests), 4)
        self.assertTrue(any('twin-socket=on' in ln for ln in s.server.log))

    def test_twin_declined(self):
        """twin socket offered, declined by --no-twin-socket: DMA on the one socket"""
        s, vm, guest = self.dma_mode('message', twin=True,
                                     args=['--no-twin-socket'])
        self.assertEqual(self.twin_caps(vm), {'supported': False})
        self.assertEqual(vm.fds, (), 'a declined twin socket came with an fd')
        self.assertIsNone(s.twin)
        self.assertGreater(len(guest.requests), 4)
        self.assertTrue(any('twin-socket=declined' in ln for ln in s.server.log))

    def test_twin_not_offered(self):
        """client that does not offer the twin socket: none in the reply"""
        s, vm, guest = self.dma_mode('message')
        self.assertIsNone(self.twin_caps(vm))
        self.assertEqual(vm.fds, ())
        self.assertGreater(len(guest.requests), 4)
        self.assertTrue(any('twin-socket=not-offered' in ln
                            for ln in s.server.log))

    def test_twin_bad_capability(self):
        """malformed twin_socket capability: EINVAL, no fd"""
        for caps in ('{"capabilities":{"twin_socket":true}}',
                     '{"capabilities":{"twin_socket":{"supported":"yes"}}}'):
            s = self.session()
            m = s.c.version(caps)
            self.assertEqual(m.err, errno.EINVAL, caps)
            self.assertEqual(m.fds, ())
            s.close()

    def test_twin_wrong_socket(self):
        """with the twin socket, a DMA reply on the main socket is not taken; a request on the twin ends the connection"""
        s = self.session()
        s.version(twin=True)
        self.assertIsNotNone(s.twin)
        s.enable_master()
        data = ramp(64, 5)
        guest = GuestMemory(0x100000, data + bytes(4096 - 64))
        self.assertEqual(s.c.dma_map(0x100000, 0x1000, RW), 0)
        s.dev.start(de.CMD_TO_BUF, 0x100000, 0, 64)
        m = s.twin.recv()
        self.assertEqual(m.cmd, DMA_READ)
        # the right answer on the wrong socket: not the reply
        s.c.reply(m, struct.pack('<QQ', 0x100000, 64) + data)
        self.assertTrue(s.reg_read(de.REG_STATUS) & de.STATUS_BUSY,
                        'a reply on the main socket completed the DMA')
        guest.answer(s.twin, m)
        self.assertEqual(s.serve_dma(guest), de.STATUS_DONE)
        self.assertEqual(s.dev.read64(de.REG_CSUM), de.fnv1a(data))
        self.assertTrue(any('unexpected reply' in ln for ln in s.server.log))
        # a client request on the twin socket is a protocol violation
        s.twin.send(DEVICE_GET_INFO, GET_INFO)
        rc = s.server.exit_status()
        self.assertEqual(rc, 1, 'server exit status')
        self.assertIn('sent on the twin socket', s.server.last_error() or '')

    def test_span_and_errors(self):
        """transfer across regions; permission, unmapped, range, bus-master errors"""
        s = self.session()
        s.version()
        s.enable_master()
        data = ramp(8192, 3)
        self.region(s, 'mmap', 0x400000, data[:4096])
        guest = GuestMemory(0x401000, data[4096:])
        self.assertEqual(s.c.dma_map(0x401000, 4096, DMA_R), 0)  # read-only
        none = GuestMemory(0, b'')

        def fails(errno_, *cmd):
            s.dev.start(*cmd)
            self.assertEqual(s.serve_dma(guest if cmd[0] else none),
                             de.STATUS_DONE | de.STATUS_ERROR)
            self.assertEqual(s.reg_read(de.REG_ERROR), errno_)
        s.dev.start(de.CMD_TO_BUF, 0x400000, 0, 8192)
        self.assertEqual(s.serve_dma(guest), de.STATUS_DONE)
        self.assertEqual(s.dev.read64(de.REG_CSUM), de.fnv1a(data),
                         'transfer across two regions')
        # ends in the read-only one
        fails(errno.EPERM, de.CMD_FROM_BUF, 0, 0x400800, 4096)
        fails(errno.EFAULT, de.CMD_TO_BUF, 0x900000, 0, 16)     # unmapped
        fails(errno.ERANGE, de.CMD_TO_BUF, 0x400000, 0, 5 << 20)  # > buffer
        # bus mastering off: no DMA at all
        self.assertEqual(s.c.region_write(CONFIG_REGION, 4,
                                          struct.pack('<H', 0x2)), 0)
        fails(errno.EPERM, de.CMD_TO_BUF, 0x400000, 0, 16)
        s.close()

    def dma_pending(self):
        """A session whose server has just asked for 64 bytes at 0x100000
        (a message region); returns it and the DMA_READ request."""
        s = self.session()
        s.version()
        s.enable_master()
        self.assertEqual(s.c.dma_map(0x100000, 0x1000, RW), 0)
        s.dev.start(de.CMD_TO_BUF, 0x100000, 0, 64)
        m = s.c.recv()
        self.assertEqual(m.cmd, DMA_READ)
        return s, m

    def test_bad_reply(self):
        """wrong DMA_READ reply fails the command, server survives"""
        s, m = self.dma_pending()
        # answer with the wrong count: the command must fail, not crash
        s.c.reply(m, struct.pack('<QQ', 0x100000, 32) + bytes(32))
        self.assertEqual(s.reg_read(de.REG_STATUS),
                         de.STATUS_DONE | de.STATUS_ERROR)
        self.assertEqual(s.reg_read(de.REG_ERROR), errno.EPROTO)
        # a misbehaving client must show in the exit status
        s.close(want_rc=1)

    def test_leave_during_dma(self):
        """client leaves while the server waits for its DMA reply: clean exit"""
        s, _ = self.dma_pending()
        s.close()
        self.assertEqual(s.server.stats()['errors'], 1, 'the command did not fail')

    def test_unanswered_dma(self):
        """DMA request never answered: ETIMEDOUT after 10 s, requests served meanwhile"""
        s, _ = self.dma_pending()
        start = time.monotonic()
        while s.reg_read(de.REG_STATUS) & de.STATUS_BUSY:
            self.assertLess(time.monotonic() - start, 12, 'still busy after 12 s')
            time.sleep(0.05)
        self.assertGreater(time.monotonic() - start, 9, 'gave up too early')
        self.assertEqual(s.reg_read(de.REG_ERROR), errno.ETIMEDOUT)
        s.close()

    def test_irqs(self):
        """INTx auto-mask/unmask and MSI eventfds"""
        s = self.session()
        s.version()
        s.enable_master()
        self.region(s, 'mmap', 0, bytes(4096))
        intx = os.eventfd(0, os.EFD_NONBLOCK)
        msi = os.eventfd(0, os.EFD_NONBLOCK)
        for f in (intx, msi):
            self.addCleanup(os.close, f)

        def fired(efd):
            return (bool(select.select([efd], [], [], 1)[0]) and
                    os.eventfd_read(efd) > 0)

        def intx_status():
            return s.reg_read(6, 2, CONFIG_REGION) & 0x8
        eventfd, trigger, none, unmask = 0x4 | 0x20, 0x20, 0x1, 0x10
        self.assertEqual(s.c.set_irqs(eventfd, 0, 1, [intx]), 0)
        s.reg_write(de.REG_IRQ_CTRL, de.IRQ_COMPLETION)
        s.dev.start(de.CMD_TO_BUF, 0, 0, 64)
        self.assertTrue(fired(intx), 'no INTx')
        self.assertTrue(intx_status(), 'interrupt status bit not set')
        s.dev.start(de.CMD_TO_BUF, 0, 0, 64)
        self.assertFalse(fired(intx), 'INTx fired while auto-masked')
        self.assertEqual(s.c.set_irqs(none | unmask, 0, 1), 0)
        self.assertTrue(fired(intx), 'pending INTx not delivered on unmask')
        s.reg_write(de.REG_IRQ_STATUS, de.IRQ_COMPLETION)
        self.assertFalse(intx_status(), 'interrupt status bit still set')
        self.assertEqual(s.c.set_irqs(eventfd, 1, 1, [msi]), 0)
        s.dev.start(de.CMD_TO_BUF, 0, 0, 64)
        self.assertTrue(fired(msi), 'no MSI')
        self.assertFalse(fired(intx), 'INTx fired although MSI is on')
        self.assertEqual(s.c.set_irqs(eventfd, 1, 2, [msi]), errno.EINVAL)
        self.assertEqual(s.c.set_irqs(eventfd, 5, 1, [msi]), errno.EINVAL)
        self.assertEqual(s.c.set_irqs(0x7 | trigger, 1, 1), errno.EINVAL)
        self.assertEqual(s.c.set_irqs(none | trigger, 1, 0), 0)  # MSI off
        self.assertEqual(s.reg_read(de.REG_IRQ_COUNT), 3)
        s.close()

    def garbage(self, kind):
        s = self.session()
        s.version()
        c = s.c
        if kind == 'short-size':
            c.send(DEVICE_GET_INFO, b'', size=8)
        elif kind == 'huge-size':
            c.send(DEVICE_GET_INFO, b'', size=0x7fffffff)
        elif kind == 'truncated':
            c.sock.sendall(struct.pack('<HHIII', 1, DMA_MAP, 48, 0, 0) +
                           b'\x20\0\0')
        elif kind == 'bad-type':
            c.send(DEVICE_GET_INFO, GET_INFO, flags=0x7)
        elif kind == 'many-fds':
            fds = [os.eventfd(0) for _ in range(12)]
            c.send(DMA_MAP, struct.pack('<IIQQQ', 32, 3, 0, 0, 4096), fds)
            for f in fds:
                os.close(f)
        if kind == 'truncated':
            # the server gives up on the rest of the message by itself
            rc = s.server.exit_status(15)
            c.close()
        else:
            c.close()
            rc = s.server.exit_status()
        self.assertIn(rc, (0, 1), 'server died with status %s' % rc)
        self.assertFalse(os.path.exists(s.server.sock_path), 'socket left behind')


for _kind in ('short-size', 'huge-size', 'truncated', 'bad-type', 'many-fds'):
    def _garbage(self, kind=_kind):
        self.garbage(kind)
    _garbage.__doc__ = 'malformed stream (%s): clean exit' % _kind
    setattr(Protocol, 'test_garbage_' + _kind.replace('-', '_'), _garbage)


def main():
    global SERVER
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--server', required=True)
    SERVER = ap.parse_args().server
    return tap.run(tap.ordered(Protocol))


if __name__ == '__main__':
    sys.exit(main())
