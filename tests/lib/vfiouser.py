"""A raw vfio-user client for tests that play the client themselves
(tests/server, tests/interop/probe-library.py): message framing, the
requests they send, and the client side of DMA_READ/DMA_WRITE."""

import collections
import json
import os
import socket
import struct

from procs import Timeout, check

__unittest = True

# commands
VERSION, DMA_MAP, DMA_UNMAP, DEVICE_GET_INFO, DEVICE_GET_REGION_INFO = 1, 2, 3, 4, 5
DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS, REGION_READ, REGION_WRITE = 7, 8, 9, 10
DMA_READ, DMA_WRITE = 11, 12
# header flags
REPLY, ERROR = 0x1, 0x20
# DMA_MAP flags: read, write, and the revision's access modes
DMA_R, DMA_W, DMA_MMAP, DMA_FILE_IO = 0x1, 0x2, 0x4, 0x8
DMA_UNMAP_ALL = 0x2
# VFIO PCI region indexes
BAR0_REGION, CONFIG_REGION = 0, 7

HDR = struct.Struct('<HHIII')       # id, command, size, flags, error

# fds: the descriptors that came with the message (the receiver owns them)
Msg = collections.namedtuple('Msg', 'id cmd flags error data fds',
                             defaults=((),))
Msg.err = property(lambda m: m.error if m.flags & ERROR else 0)


# most fds one message may bring
MAX_FDS = 8


class Client:
    """The client's end of a vfio-user socket at path, or of sock (e.g.
    the twin socket a VERSION reply brought: twin_socket())."""

    def __init__(self, path=None, timeout=10, sock=None):
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        else:
            sock.settimeout(timeout)
        self.sock = sock
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send(self, cmd, payload=b'', fds=(), flags=0, msg_id=None, error=0,
             size=None):
        """Send one message (size overrides the header's size field)."""
        if msg_id is None:
            msg_id, self.next_id = self.next_id, (self.next_id + 1) & 0xffff
        hdr = HDR.pack(msg_id, cmd, HDR.size + len(payload) if size is None
                       else size, flags, error)
        data = hdr + payload
        # a socket with a timeout is non-blocking underneath: a large
        # message may go in pieces (the fds with the first)
        sent = socket.send_fds(self.sock, [data], list(fds)) if fds else 0
        self.sock.sendall(data[sent:])
        return msg_id

    def recv_exact(self, n, fds=None):
        """n bytes; fds (a list) gets the descriptors that came with
        them."""
        buf = b''
        while len(buf) < n:
            try:
                if fds is None:
                    chunk = self.sock.recv(n - len(buf))
                else:
                    chunk, got, _, _ = socket.recv_fds(self.sock, n - len(buf),
                                                       MAX_FDS)
                    fds.extend(got)
            except socket.timeout:
                raise Timeout('no data from the server within %g s'
                              % self.sock.gettimeout())
            check(chunk, 'server closed the connection')
            buf += chunk
        return buf

    def recv(self):
        fds = []
        msg_id, cmd, size, flags, error = HDR.unpack(self.recv_exact(HDR.size,
                                                                     fds))
        check(size >= HDR.size, 'bad message size %d' % size)
        return Msg(msg_id, cmd, flags, error, self.recv_exact(size - HDR.size),
                   tuple(fds))

    def call(self, cmd, payload=b'', fds=()):
        """Send a request and return its reply (a Msg; .err is its errno
        or 0); any other message meanwhile is a failure."""
        msg_id = self.send(cmd, payload, fds)
        m = self.recv()
        check(m.id == msg_id and m.cmd == cmd and m.flags & 0xF == REPLY,
              'expected the reply to command %d id %d, got command %d id %d '
              'flags %#x' % (cmd, msg_id, m.cmd, m.id, m.flags))
        return m

    def reply(self, req, payload=b'', error=0):
        """Answer a server request (a Msg)."""
        self.send(req.cmd, payload, msg_id=req.id,
                  flags=REPLY | (ERROR if error else 0), error=error)

    # ---- requests ----

    def version(self, caps=None, max_xfer=None, minor=0, twin=False):
        """VERSION with the given capabilities (a string, sent as is), or
        with max_data_xfer_size and, if twin, the twin-socket offer.
        Returns the reply."""
        if caps is None:
            c = {'max_msg_fds': 8}
            if max_xfer:
                c['max_data_xfer_size'] = max_xfer
            if twin:
                c['twin_socket'] = {'supported': True}
            caps = json.dumps({'capabilities': c})
        return self.call(VERSION, struct.pack('<HH', 0, minor) +
                         caps.encode() + b'\0')

    @staticmethod
    def version_reply(m):
        """(major, minor, capabilities) of a VERSION reply."""
        major, minor = struct.unpack_from('<HH', m.data)
        return major, minor, json.loads(m.data[4:].rstrip(b'\0'))

    @staticmethod
    def twin_socket(m):
        """A Client on the twin socket a VERSION reply set up, None if it
        set none up; fails on a reply that says twin but brings no valid
        fd.  Closes the reply's other fds."""
        caps = Client.version_reply(m)[2].get('capabilities', {})
        twin = caps.get('twin_socket', {})
        idx = twin.get('fd_index') if twin.get('supported') is True else None
        fds = list(m.fds)
        try:
            if idx is None:
                return None
            check(isinstance(idx, int) and 0 <= idx < len(fds),
                  'twin_socket.fd_index %r, but %d fds came' % (idx, len(fds)))
            fd = fds.pop(idx)
            return Client(sock=socket.socket(fileno=fd))
        finally:
            for fd in fds:
                os.close(fd)

    def dma_map(self, iova, size, flags, fds=(), offset=0):
        """DMA_MAP; returns the errno (0: accepted)."""
        return self.call(DMA_MAP, struct.pack('<IIQQQ', 32, flags, offset,
                                              iova, size), fds).err

    def dma_unmap(self, iova, size, flags=0):
        return self.call(DMA_UNMAP, struct.pack('<IIQQ', 24, flags, iova,
                                                size)).err

    def region_write(self, region, off, data):
        """REGION_WRITE; returns the errno."""
        return self.call(REGION_WRITE, struct.pack('<QII', off, region,
                                                   len(data)) + data).err

    def region_read(self, region, off, count):
        """REGION_READ; returns the data, fails on an error reply."""
        m = self.call(REGION_READ, struct.pack('<QII', off, region, count))
        check(not m.err, 'REGION_READ of region %d at %#x failed: errno %d'
              % (region, off, m.err))
        return m.data[16:]

    def set_irqs(self, flags, index, count, fds=(), start=0):
        return self.call(DEVICE_SET_IRQS, struct.pack(
            '<IIIII', 20, flags, index, start, count), fds).err


class GuestMemory:
    """The client side of DMA_READ/DMA_WRITE: a bytearray at an IOVA.
    Every request is recorded as (cmd, addr, count, payload length)."""

    def __init__(self, base, size_or_data, max_count=None):
        self.base = base
        self.mem = bytearray(size_or_data)
        self.max_count = max_count      # larger requests get EFAULT
        self.requests = []

    def answer(self, client, m):
        addr, count = struct.unpack_from('<QQ', m.data)
        self.requests.append((m.cmd, addr, count, len(m.data)))
        off = addr - self.base
        if (off < 0 or off + count > len(self.mem) or
                (self.max_count and count > self.max_count)):
            client.reply(m, error=14)   # EFAULT
        elif m.cmd == DMA_WRITE:
            self.mem[off:off + count] = m.data[16:16 + count]
            client.reply(m, struct.pack('<QQ', addr, count))
        else:
            check(m.cmd == DMA_READ, 'unexpected request %d from the server'
                  % m.cmd)
            client.reply(m, struct.pack('<QQ', addr, count) +
                         bytes(self.mem[off:off + count]))

