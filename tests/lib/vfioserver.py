"""The server side of vfio-user for tests that play the server
themselves (tests/fuzz): a non-blocking connection that frames messages
and carries file descriptors, and a small PCI device (config space, one
BAR, interrupts) that answers every client request correctly.  Whoever
uses it decides what actually goes on the wire (tests/fuzz mutates the
correct answers); vfiouser.py has the message layout and the client side."""

import collections
import errno
import json
import os
import socket
import struct

from vfiouser import (HDR, REPLY, ERROR, VERSION, DMA_MAP, DMA_UNMAP,
                      DEVICE_GET_INFO, DEVICE_GET_REGION_INFO,
                      DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS, REGION_READ,
                      REGION_WRITE, DMA_READ, DMA_WRITE, BAR0_REGION,
                      CONFIG_REGION)

__unittest = True

# commands vfiouser.py does not name
DEVICE_GET_REGION_IO_FDS, DEVICE_RESET = 6, 13
DIRTY_PAGES, REGION_WRITE_MULTI = 14, 15
NO_REPLY = 0x10
TYPE_MASK = 0xF

COMMAND_NAMES = {
    VERSION: 'VERSION', DMA_MAP: 'DMA_MAP', DMA_UNMAP: 'DMA_UNMAP',
    DEVICE_GET_INFO: 'GET_INFO', DEVICE_GET_REGION_INFO: 'GET_REGION_INFO',
    DEVICE_GET_REGION_IO_FDS: 'GET_REGION_IO_FDS',
    DEVICE_GET_IRQ_INFO: 'GET_IRQ_INFO', DEVICE_SET_IRQS: 'SET_IRQS',
    REGION_READ: 'REGION_READ', REGION_WRITE: 'REGION_WRITE',
    DMA_READ: 'DMA_READ', DMA_WRITE: 'DMA_WRITE',
    DEVICE_RESET: 'DEVICE_RESET', DIRTY_PAGES: 'DIRTY_PAGES',
    REGION_WRITE_MULTI: 'REGION_WRITE_MULTI',
}

# VFIO PCI layout: BARs 0-5, ROM 6, config 7, VGA 8; INTx, MSI, MSI-X,
# ERR, REQ
NUM_REGIONS, NUM_IRQS = 9, 5
REGION_R, REGION_W, REGION_MMAP = 0x1, 0x2, 0x4
IRQ_EVENTFD, IRQ_MASKABLE, IRQ_AUTOMASKED, IRQ_NORESIZE = 0x1, 0x2, 0x4, 0x8
INFO_RESET, INFO_PCI = 0x1, 0x2

Msg = collections.namedtuple('Msg', 'id cmd size flags error data nfds')


def pack_msg(msg_id, cmd, flags, payload=b'', error=0, size=None):
    """Header and payload; size overrides the header's size field."""
    return HDR.pack(msg_id & 0xFFFF, cmd & 0xFFFF,
                    (HDR.size + len(payload) if size is None else size)
                    & 0xFFFFFFFF, flags & 0xFFFFFFFF,
                    error & 0xFFFFFFFF) + payload


class Conn:
    """One accepted connection, non-blocking.  Incoming bytes are framed
    into Msg tuples (descriptors that come with them are counted and
    closed at once); outgoing data waits in a queue until the socket
    takes it, so that a client that stops reading blocks nobody."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)
        self.rbuf = bytearray()
        self.rfds = 0
        self.out = collections.deque()     # [bytes, fds]
        self.out_bytes = 0
        self.closed = False         # the peer closed, or we did
        self.fds_received = 0

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sock.close()
        for _, fds in self.out:
            for fd in fds:
                os.close(fd)
        self.out.clear()

    def read(self):
        """Take what the socket has; returns the complete messages."""
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 32)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data, fds = b'', []
        for fd in fds:
            os.close(fd)
        self.rfds += len(fds)
        self.fds_received += len(fds)
        if not data:
            self.closed = True
            return []
        self.rbuf += data
        msgs = []
        while len(self.rbuf) >= HDR.size:
            msg_id, cmd, size, flags, err = HDR.unpack_from(self.rbuf)
            if size < HDR.size:
                # not a stream we can follow; a client never sends it
                raise ValueError('client sent a message of size %d' % size)
            if len(self.rbuf) < size:
                break
            msgs.append(Msg(msg_id, cmd, size, flags, err,
                            bytes(self.rbuf[HDR.size:size]), self.rfds))
            self.rfds = 0
            del self.rbuf[:size]
        return msgs

    def queue(self, data, fds=()):
        """Send data (with fds on its first byte) when the socket takes it;
        fds are ours and are closed once sent."""
        if self.closed:
            for fd in fds:
                os.close(fd)
            return
        self.out.append([bytes(data), list(fds)])
        self.out_bytes += len(data)
        self.flush()

    def flush(self):
        while self.out and not self.closed:
            data, fds = self.out[0]
            try:
                if fds:
                    n = socket.send_fds(self.sock, [data], fds)
                else:
                    n = self.sock.send(data, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.closed = True
                return
            for fd in fds:
                os.close(fd)
            self.out_bytes -= n
            if n < len(data):
                self.out[0] = [data[n:], []]
            else:
                self.out.popleft()


def version_payload(caps, major=0, minor=0, nul=True):
    """VERSION payload: caps is str or bytes (sent as is) or anything else
    JSON can hold (sent as JSON)."""
    if not isinstance(caps, (str, bytes)):
        caps = json.dumps(caps)
    if isinstance(caps, str):
        caps = caps.encode()
    return struct.pack('<HH', major & 0xFFFF, minor & 0xFFFF) + caps + \
        (b'\0' if nul else b'')


def default_config(msi=True, pm=True, pin=1):
    """A PCI type 0 header: one 32-bit memory BAR (the size comes from
    GET_REGION_INFO), INTx pin, and an MSI and a PM capability."""
    c = bytearray(256)
    struct.pack_into('<HH', c, 0, 0x1de5, 0x7f00)      # vendor, device
    c[0x08] = 1                                         # revision
    c[0x0b] = 0xff                                      # class: unassigned
    c[0x3d] = pin
    caps = []
    if msi:
        caps.append((0x40, bytes([0x05, 0, 0x80, 0]) + bytes(10)))
    if pm:
        caps.append((0x60, bytes([0x01, 0, 0x03, 0x00, 0, 0, 0, 0])))
    prev = 0x34
    for off, body in caps:
        c[off:off + len(body)] = body
        c[prev] = off
        prev = off + 1
    if caps:
        c[0x06] |= 0x10                                 # capability list
    return c


class Device:
    """What a correct server answers.  reply(msg) returns (payload,
    error, fds) for a request, or None where no reply is due (the
    NO_REPLY flag).  Fields are plain attributes so that a test can make
    the device lie about itself."""

    def __init__(self, config=None, bar0_size=4096, caps=None):
        self.config = bytearray(config if config is not None
                                else default_config())
        self.config_size = len(self.config)
        self.bar0 = bytearray(bar0_size)
        self.info = dict(flags=INFO_RESET | INFO_PCI, num_regions=NUM_REGIONS,
                         num_irqs=NUM_IRQS)
        self.regions = {BAR0_REGION: [REGION_R | REGION_W, bar0_size],
                        CONFIG_REGION: [REGION_R | REGION_W,
                                        self.config_size]}
        self.irqs = {0: (IRQ_EVENTFD | IRQ_MASKABLE | IRQ_AUTOMASKED, 1),
                     1: (IRQ_EVENTFD | IRQ_NORESIZE, 1), 2: (IRQ_EVENTFD, 0),
                     3: (IRQ_EVENTFD, 1), 4: (IRQ_EVENTFD, 1)}
        self.caps = caps if caps is not None else {
            'capabilities': {'max_msg_fds': 8,
                             'max_data_xfer_size': 1 << 20}}
        self.client_max_xfer = 1 << 20
        self.mmap_fds = False       # send an fd with mmap-able regions
        self.mmap_seal = False      # a memfd that allows sealing
        self.mmap_kept = []         # our copies of those fds, to shrink
        self.maps = {}              # iova -> size (live DMA_MAPs)

    def shrink_mmap_files(self):
        """Truncate the files we passed for mapping, as a hostile server
        would; those the client sealed stay as they are."""
        for fd in self.mmap_kept:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass

    def close_mmap_files(self):
        for fd in self.mmap_kept:
            os.close(fd)
        self.mmap_kept = []

    def _rw_target(self, region):
        if region == CONFIG_REGION:
            return self.config
        if region == BAR0_REGION:
            return self.bar0
        return None

    def reply(self, m):
        p = m.data
        if m.flags & NO_REPLY:
            if m.cmd == REGION_WRITE and len(p) >= 16:
                self._write(p)
            return None
        if m.cmd == VERSION:
            try:
                c = json.loads(p[4:].rstrip(b'\0'))
                self.client_max_xfer = int(
                    c['capabilities'].get('max_data_xfer_size', 1 << 20))
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
            return version_payload(self.caps), 0, ()
        if m.cmd == DEVICE_GET_INFO:
            i = self.info
            return struct.pack('<IIII', 16, i['flags'], i['num_regions'],
                               i['num_irqs']), 0, ()
        if m.cmd == DEVICE_GET_REGION_INFO:
            if len(p) < 12:
                return b'', errno.EINVAL, ()
            argsz, _, index = struct.unpack_from('<III', p)
            if index >= self.info['num_regions']:
                return b'', errno.EINVAL, ()
            flags, size = self.regions.get(index, (0, 0))
            fds = ()
            if flags & REGION_MMAP and self.mmap_fds:
                # the region's memory, for the client to map (a file
                # shorter than the region, if the region is huge)
                fd = os.memfd_create('region%d' % index, os.MFD_CLOEXEC | (
                    os.MFD_ALLOW_SEALING if self.mmap_seal else 0))
                os.ftruncate(fd, min(size, 1 << 20))
                if len(self.mmap_kept) < 16:
                    self.mmap_kept.append(os.dup(fd))
                fds = (fd,)
            return struct.pack('<IIIIQQ', 32, flags, index, 0, size, 0), \
                0, fds
        if m.cmd == DEVICE_GET_IRQ_INFO:
            if len(p) < 12:
                return b'', errno.EINVAL, ()
            index = struct.unpack_from('<I', p, 8)[0]
            if index >= self.info['num_irqs']:
                return b'', errno.EINVAL, ()
            flags, count = self.irqs.get(index, (0, 0))
            return struct.pack('<IIII', 16, flags, index, count), 0, ()
        if m.cmd in (DEVICE_SET_IRQS, DEVICE_RESET, REGION_WRITE_MULTI):
            return b'', 0, ()
        if m.cmd == DMA_MAP:
            if len(p) < 32:
                return b'', errno.EINVAL, ()
            _, _, _, iova, size = struct.unpack_from('<IIQQQ', p)
            self.maps[iova] = size
            return b'', 0, ()
        if m.cmd == DMA_UNMAP:
            if len(p) < 24:
                return b'', errno.EINVAL, ()
            _, flags, iova, size = struct.unpack_from('<IIQQ', p)
            if flags & 0x2:
                self.maps.clear()
            else:
                for a in [a for a in self.maps
                          if iova <= a and a + self.maps[a] <= iova + size]:
                    del self.maps[a]
            return p[:24], 0, ()
        if m.cmd == REGION_READ:
            if len(p) < 16:
                return b'', errno.EINVAL, ()
            off, region, count = struct.unpack_from('<QII', p)
            t = self._rw_target(region)
            if t is None or off > len(t) or count > len(t) - off:
                return b'', errno.EINVAL, ()
            return p[:16] + bytes(t[off:off + count]), 0, ()
        if m.cmd == REGION_WRITE:
            if len(p) < 16 or not self._write(p):
                return b'', errno.EINVAL, ()
            return p[:16], 0, ()
        return b'', errno.ENOSYS, ()

    def _write(self, p):
        off, region, count = struct.unpack_from('<QII', p)
        t = self._rw_target(region)
        if t is None or off > len(t) or count > len(t) - off or \
                len(p) < 16 + count:
            return False
        if t is not self.config:
            t[off:off + count] = p[16:16 + count]
        else:
            # the command register and interrupt line; the client
            # emulates the BARs and capabilities itself
            for i in range(count):
                if off + i in (0x04, 0x05, 0x3c):
                    t[off + i] = p[16 + i]
        return True
