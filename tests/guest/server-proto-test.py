#!/usr/bin/env python3
"""Protocol tests for vfio-user-dma-server, without QEMU: this script is the
vfio-user client.  It checks the DMA_MAP rules of the access-mode revision,
the DMA_READ/DMA_WRITE layout and splitting, each access mode end to end
through the device's registers, interrupts, and that malformed input gets an
error (never a crash, a hang or a leaked fd).  Prints TAP.

    tests/guest/server-proto-test.py --server SERVER
"""
import argparse
import errno
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

# commands
VERSION, DMA_MAP, DMA_UNMAP, GET_INFO, REGION_INFO = 1, 2, 3, 4, 5
IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE = 7, 8, 9, 10
DMA_READ, DMA_WRITE, RESET = 11, 12, 13
REPLY, NO_REPLY, ERROR = 0x1, 0x10, 0x20
R, W, MMAP, FILE = 0x1, 0x2, 0x4, 0x8
BAR0, CONFIG = 0, 7
# device registers (docs/server.md)
SRC, DST, LEN, CMD, STATUS, ERR = 0x08, 0x10, 0x18, 0x1c, 0x20, 0x24
IRQ_STATUS, IRQ_CTRL, CSUM, COUNTERS = 0x28, 0x2c, 0x38, 0x40
TO_BUF, FROM_BUF, COPY = 1, 2, 3
CLIENT_MAX_XFER = 8192
TIMEOUT = 10


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def pattern(n, seed):
    return bytes((i * 31 + seed + (i >> 8)) & 0xff for i in range(n))


class Server:
    def __init__(self, path, legacy=False):
        self.dir = tempfile.mkdtemp(prefix="proto-test-")
        self.sock_path = os.path.join(self.dir, "s.sock")
        self.stats = os.path.join(self.dir, "stats.json")
        self.log = os.path.join(self.dir, "server.log")
        cmd = [path, "--socket", self.sock_path, "--stats", self.stats, "--log", self.log]
        if legacy:
            cmd.append("--legacy")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        try:
            self.s = self._connect()
        except BaseException:
            self.proc.kill()        # never leave a server behind
            self.proc.wait()
            raise
        self.next_id = 100

    def _connect(self):
        # The socket file appears at bind(), a moment before listen():
        # retry a refused connect until the server is ready.
        deadline = time.monotonic() + 5
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("server did not start")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            try:
                s.connect(self.sock_path)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start listening")
                time.sleep(0.01)

    def fd_count(self):
        # The server may close a message's fds just after its reply: one
        # more round trip (it handles messages in order) lets it finish.
        self.call(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def send(self, cmd, payload=b"", fds=(), flags=0, msg_id=None, size=None):
        if msg_id is None:
            msg_id = self.next_id
            self.next_id += 1
        hdr = struct.pack("<HHIII", msg_id, cmd, size if size is not None else 16 + len(payload),
                          flags, 0)
        socket.send_fds(self.s, [hdr + payload], list(fds))
        return msg_id

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("server closed the connection")
            buf += chunk
        return buf

    def recv(self):
        msg_id, cmd, size, flags, err = struct.unpack("<HHIII", self.recv_exact(16))
        return {"id": msg_id, "cmd": cmd, "flags": flags, "error": err,
                "data": self.recv_exact(size - 16)}

    def call(self, cmd, payload=b"", fds=()):
        """Send a request, answering server DMA requests until our reply."""
        msg_id = self.send(cmd, payload, fds)
        return self.wait_reply(msg_id)

    def wait_reply(self, msg_id):
        while True:
            m = self.recv()
            if m["flags"] & 0xf == REPLY and m["id"] == msg_id:
                return m
            raise AssertionError(f"unexpected message {m['cmd']} while waiting for reply")

    def close(self):
        try:
            self.s.close()
        finally:
            try:
                rc = self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
                raise AssertionError("server did not exit after the client left")
        return rc


def version(srv, caps=None):
    caps = caps if caps is not None else json.dumps(
        {"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": CLIENT_MAX_XFER,
                          "pgsizes": 4096, "max_dma_maps": 100}})
    return srv.call(VERSION, struct.pack("<HH", 0, 0) + caps.encode() + b"\0")


def dma_map(srv, iova, size, flags, fds=(), offset=0):
    return srv.call(DMA_MAP, struct.pack("<IIQQQ", 32, flags, offset, iova, size), fds)


def reg_write(srv, off, val, width=4):
    m = srv.call(REGION_WRITE, struct.pack("<QII", off, BAR0, width) +
                 val.to_bytes(width, "little"))
    return m["error"] if m["flags"] & ERROR else 0


def reg_read(srv, off, width=4, region=BAR0):
    m = srv.call(REGION_READ, struct.pack("<QII", off, region, width))
    assert not m["flags"] & ERROR, f"register read 0x{off:x} failed: {m['error']}"
    return int.from_bytes(m["data"][16:], "little")


def enable_master(srv):
    m = srv.call(REGION_WRITE, struct.pack("<QII", 4, CONFIG, 2) + struct.pack("<H", 0x6))
    assert not m["flags"] & ERROR


def start_cmd(srv, op, src, dst, length):
    for off, v in ((SRC, src), (DST, dst)):
        reg_write(srv, off, v & 0xffffffff)
        reg_write(srv, off + 4, v >> 32)
    reg_write(srv, LEN, length)
    reg_write(srv, CMD, op)


def serve_dma(srv, guest, xfers, until_status=True):
    """Answer the server's DMA messages out of `guest` (dict iova->bytearray
    base) until the command completes; record (cmd, addr, count) in xfers."""
    base, mem = guest
    while True:
        # poll the status register: the server must answer it even while
        # it waits for us to answer its own DMA request
        sid = srv.send(REGION_READ, struct.pack("<QII", STATUS, BAR0, 4))
        while True:
            m = srv.recv()
            if m["flags"] & 0xf == REPLY and m["id"] == sid:
                status = int.from_bytes(m["data"][16:20], "little")
                break
            assert m["cmd"] in (DMA_READ, DMA_WRITE), f"unexpected command {m['cmd']}"
            addr, count = struct.unpack_from("<QQ", m["data"])
            xfers.append((m["cmd"], addr, count, len(m["data"])))
            off = addr - base
            if m["cmd"] == DMA_READ:
                reply = struct.pack("<QQ", addr, count) + bytes(mem[off:off + count])
            else:
                mem[off:off + count] = m["data"][16:16 + count]
                reply = struct.pack("<QQ", addr, count)
            srv.s.sendall(struct.pack("<HHIII", m["id"], m["cmd"], 16 + len(reply), REPLY, 0) + reply)
        if not status & 1:
            return status


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, name, fn):
        self.n += 1
        try:
            fn()
            print(f"ok {self.n} - {name}")
        except Exception as e:      # any failure, including EOF or timeouts
            self.failed += 1
            print(f"not ok {self.n} - {name}")
            print(f"  # {type(e).__name__}: {e}")
        sys.stdout.flush()


def err_of(m):
    return m["error"] if m["flags"] & ERROR else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    args = ap.parse_args()
    tap = Tap()
    servers = []

    def new_server(legacy=False):
        s = Server(args.server, legacy)
        servers.append(s)
        return s

    def t_before_version():
        s = new_server()
        assert err_of(s.call(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))) == errno.EINVAL
        assert err_of(version(s, "{not json")) == errno.EINVAL
        assert err_of(version(s, '{"capabilities":{"max_data_xfer_size":"big"}}')) == errno.EINVAL
        m = version(s)
        assert err_of(m) == 0
        major, minor = struct.unpack_from("<HH", m["data"])
        caps = json.loads(m["data"][4:].rstrip(b"\0"))["capabilities"]
        assert (major, minor) == (0, 0) and caps["max_data_xfer_size"] >= 4096, caps
        assert err_of(version(s)) == errno.EINVAL, "second VERSION accepted"
        assert s.close() == 0

    def t_device_info():
        s = new_server()
        version(s)
        m = s.call(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
        assert struct.unpack_from("<IIII", m["data"]) == (16, 3, 9, 5)
        sizes = {}
        for i in range(9):
            m = s.call(REGION_INFO, struct.pack("<IIIIQQ", 32, 0, i, 0, 0, 0))
            sizes[i] = struct.unpack_from("<IIIIQQ", m["data"])[4]
        assert sizes[0] == 4096 and sizes[7] == 256 and sizes[1] == 0, sizes
        assert err_of(s.call(REGION_INFO, struct.pack("<IIIIQQ", 32, 0, 9, 0, 0, 0))) == errno.EINVAL
        assert err_of(s.call(REGION_INFO, b"\x20\0\0\0")) == errno.EINVAL
        m = s.call(IRQ_INFO, struct.pack("<IIII", 16, 0, 1, 0))
        assert struct.unpack_from("<IIII", m["data"])[3] == 1
        assert err_of(s.call(IRQ_INFO, struct.pack("<IIII", 16, 0, 7, 0))) == errno.EINVAL
        assert reg_read(s, 0, 4, CONFIG) == 0x10f51af4
        assert err_of(s.call(REGION_READ, struct.pack("<QII", 252, CONFIG, 8))) == errno.EINVAL
        assert err_of(s.call(REGION_READ, struct.pack("<QII", 0, 3, 4))) == errno.EINVAL
        assert err_of(s.call(REGION_WRITE, struct.pack("<QII", 8, BAR0, 4) + b"\0")) == errno.EINVAL
        assert err_of(s.call(REGION_WRITE, struct.pack("<QII", 8, BAR0, 2) + b"\0\0")) == errno.EINVAL
        assert err_of(s.call(99)) == errno.ENOSYS
        assert s.close() == 0

    def t_map_rules(legacy):
        def run():
            s = new_server(legacy)
            version(s)
            fd = os.memfd_create("guest")
            os.ftruncate(fd, 1 << 20)
            base_fds = s.fd_count()
            assert err_of(dma_map(s, 0x10000, 0x1000, R | W | MMAP)) == errno.EINVAL
            assert err_of(dma_map(s, 0x10000, 0x1000, R | W | FILE)) == errno.EINVAL
            assert err_of(dma_map(s, 0x10000, 0x1000, R | W | MMAP | FILE, [fd])) == errno.EINVAL
            assert err_of(dma_map(s, 0x10000, 0x1000, R | W | 0x10, [fd])) == errno.EINVAL
            assert err_of(dma_map(s, 0x10000, 0x1000, R | W, [fd, fd])) == errno.EINVAL
            assert err_of(dma_map(s, 0x10000, 0, R | W)) == errno.EINVAL
            assert err_of(dma_map(s, 0x10000, 2 << 20, R | W, [fd])) == errno.EINVAL, "past EOF"
            assert err_of(s.call(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), [fd])) == errno.EINVAL
            assert s.fd_count() == base_fds, "refused fds were kept open"
            # no bit + fd: mmap; no bit, no fd: messages (both legal for everyone)
            assert err_of(dma_map(s, 0x10000, 0x1000, R | W, [fd])) == 0
            assert err_of(dma_map(s, 0x20000, 0x1000, R | W)) == 0
            assert err_of(dma_map(s, 0x10800, 0x1000, R | W)) == errno.EEXIST
            assert err_of(dma_map(s, 0xf000, 0x2000, R | W, [fd])) == errno.EEXIST
            want = errno.EINVAL if legacy else 0
            assert err_of(dma_map(s, 0x30000, 0x1000, R | W | MMAP, [fd])) == want
            assert err_of(dma_map(s, 0x40000, 0x1000, R | W | FILE, [fd], 0x1000)) == want
            assert s.fd_count() == base_fds + (0 if legacy else 1), "file-io keeps exactly one fd"
            unmap = lambda iova, size, fl=0: err_of(s.call(DMA_UNMAP, struct.pack("<IIQQ", 24, fl, iova, size)))
            assert unmap(0x10000, 0x800) == errno.EINVAL, "unmap cutting a region"
            assert unmap(0x10000, 0x1000) == 0
            assert unmap(0, 0, 0x2) == 0
            assert s.fd_count() == base_fds - 0, "unmap-all left fds open"
            os.close(fd)
            assert s.close() == 0
            log = open(s.log).read()
            assert "mode=mmap fd=yes" in log and "mode=message fd=no" in log
            assert ("mode=file-io" in log) != legacy
        return run

    def region_setup(s, kind, iova, size, data, offset=0, flags=R | W):
        """Map guest memory of a given kind; return a reader of its bytes."""
        if kind == "message":
            mem = bytearray(data)
            assert err_of(dma_map(s, iova, size, flags)) == 0
            return (iova, mem), lambda: bytes(mem)
        fd = os.memfd_create(kind)
        os.ftruncate(fd, offset + size)
        os.pwrite(fd, data, offset)
        bit = MMAP if kind == "mmap" else FILE
        assert err_of(dma_map(s, iova, size, flags | bit, [fd], offset)) == 0
        return None, lambda: os.pread(fd, size, offset)

    def t_mode(kind):
        def run():
            s = new_server()
            version(s)
            enable_master(s)
            size = 3 * CLIENT_MAX_XFER + 100
            data = pattern(size, 7)
            guest, read_back = region_setup(s, kind, 0x100000, size + 4096, data + bytes(4096),
                                            offset=0x3000)
            xfers = []
            start_cmd(s, TO_BUF, 0x100000, 0, size)
            st = serve_dma(s, guest, xfers) if guest else reg_read(s, STATUS)
            assert st == 2, f"status {st:#x} error {reg_read(s, ERR)}"
            assert reg_read(s, CSUM, 8) == fnv1a(data), "device read wrong bytes"
            start_cmd(s, FROM_BUF, 0, 0x100000 + 4095, size)
            st = serve_dma(s, guest, xfers) if guest else reg_read(s, STATUS)
            assert st == 2, f"status {st:#x}"
            got = read_back()
            assert got[4095:4095 + size] == data, "device wrote wrong bytes"
            assert got[:4095] == data[:4095], "device wrote before the target"
            want = {"mmap": 0, "file-io": 0, "message": 0}
            want[kind] = 2 * size
            for i, mode in enumerate(("mmap", "file-io", "message")):
                assert reg_read(s, COUNTERS + 16 * i, 8) == want[mode], f"{mode} counter"
            if kind == "message":
                for cmd_, addr, count, plen in xfers:
                    assert count <= CLIENT_MAX_XFER, "transfer not split at max_data_xfer_size"
                    assert plen == 16 + (count if cmd_ == DMA_WRITE else 0), "payload layout"
                reads = [x for x in xfers if x[0] == DMA_READ]
                assert sum(x[2] for x in reads) == size and reads[0][1] == 0x100000
                assert len(reads) == 4
            assert s.close() == 0
            stats = json.load(open(s.stats))
            assert stats[kind]["bytes"] == 2 * size and stats["errors"] == 0
        return run

    def t_span_and_errors():
        s = new_server()
        version(s)
        enable_master(s)
        fd = os.memfd_create("a")
        os.ftruncate(fd, 4096)
        data = pattern(8192, 3)
        os.pwrite(fd, data[:4096], 0)
        assert err_of(dma_map(s, 0x400000, 4096, R | W | MMAP, [fd])) == 0
        mem = bytearray(data[4096:])
        assert err_of(dma_map(s, 0x401000, 4096, R)) == 0      # read-only, by message
        start_cmd(s, TO_BUF, 0x400000, 0, 8192)
        assert serve_dma(s, (0x401000, mem), []) == 2
        assert reg_read(s, CSUM, 8) == fnv1a(data), "transfer across two regions"
        start_cmd(s, FROM_BUF, 0, 0x400800, 4096)               # ends in the read-only one
        assert serve_dma(s, (0x401000, mem), []) == 6
        assert reg_read(s, ERR) == errno.EPERM
        start_cmd(s, TO_BUF, 0x900000, 0, 16)                   # nothing mapped there
        assert serve_dma(s, (0, b""), []) == 6 and reg_read(s, ERR) == errno.EFAULT
        reg_write(s, LEN, 5 << 20)                              # bigger than the buffer
        reg_write(s, CMD, TO_BUF)
        assert serve_dma(s, (0, b""), []) == 6 and reg_read(s, ERR) == errno.ERANGE
        # bus mastering off: no DMA at all
        s.call(REGION_WRITE, struct.pack("<QII", 4, CONFIG, 2) + struct.pack("<H", 0x2))
        start_cmd(s, TO_BUF, 0x400000, 0, 16)
        assert serve_dma(s, (0, b""), []) == 6 and reg_read(s, ERR) == errno.EPERM
        os.close(fd)
        assert s.close() == 0

    def t_bad_reply():
        s = new_server()
        version(s)
        enable_master(s)
        assert err_of(dma_map(s, 0x100000, 0x1000, R | W)) == 0
        start_cmd(s, TO_BUF, 0x100000, 0, 64)
        m = s.recv()
        assert m["cmd"] == DMA_READ
        # answer with the wrong count: the command must fail, not crash
        reply = struct.pack("<QQ", 0x100000, 32) + bytes(32)
        s.s.sendall(struct.pack("<HHIII", m["id"], DMA_READ, 16 + len(reply), REPLY, 0) + reply)
        assert reg_read(s, STATUS) == 6 and reg_read(s, ERR) == errno.EPROTO
        assert s.close() == 1, "a misbehaving client must show in the exit status"

    def t_irqs():
        s = new_server()
        version(s)
        enable_master(s)
        fd = os.memfd_create("g")
        os.ftruncate(fd, 4096)
        dma_map(s, 0, 4096, R | W | MMAP, [fd])
        intx, msi = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
        irqset = lambda flags, index, count, fds=(): err_of(
            s.call(SET_IRQS, struct.pack("<IIIII", 20, flags, index, 0, count), fds))
        fired = lambda efd: bool(select.select([efd], [], [], 1)[0]) and os.eventfd_read(efd) > 0
        assert irqset(0x4 | 0x20, 0, 1, [intx]) == 0
        reg_write(s, IRQ_CTRL, 1)
        start_cmd(s, TO_BUF, 0, 0, 64)
        assert fired(intx), "no INTx"
        assert reg_read(s, 6, 2, CONFIG) & 0x8, "interrupt status bit not set"
        start_cmd(s, TO_BUF, 0, 0, 64)
        assert not fired(intx), "INTx fired while auto-masked"
        assert irqset(0x1 | 0x10, 0, 1) == 0                    # unmask: still pending
        assert fired(intx), "pending INTx not delivered on unmask"
        reg_write(s, IRQ_STATUS, 1)
        assert not reg_read(s, 6, 2, CONFIG) & 0x8
        assert irqset(0x4 | 0x20, 1, 1, [msi]) == 0
        start_cmd(s, TO_BUF, 0, 0, 64)
        assert fired(msi) and not fired(intx), "MSI should replace INTx"
        assert irqset(0x4 | 0x20, 1, 2, [msi]) == errno.EINVAL
        assert irqset(0x4 | 0x20, 5, 1, [msi]) == errno.EINVAL
        assert irqset(0x7 | 0x20, 1, 1) == errno.EINVAL
        assert irqset(0x1 | 0x20, 1, 0) == 0                    # MSI off
        assert reg_read(s, 0x34) == 3
        for f in (fd, intx, msi):
            os.close(f)
        assert s.close() == 0

    def t_garbage(kind):
        def run():
            s = new_server()
            version(s)
            if kind == "short-size":
                s.send(GET_INFO, b"", size=8)
            elif kind == "huge-size":
                s.send(GET_INFO, b"", size=0x7fffffff)
            elif kind == "truncated":
                s.s.sendall(struct.pack("<HHIII", 1, DMA_MAP, 48, 0, 0) + b"\x20\0\0")
            elif kind == "bad-type":
                s.send(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), flags=0x7)
            elif kind == "many-fds":
                fds = [os.eventfd(0) for _ in range(12)]
                s.send(DMA_MAP, struct.pack("<IIQQQ", 32, 3, 0, 0, 4096), fds)
                for f in fds:
                    os.close(f)
            rc = s.close() if kind != "truncated" else None
            if kind == "truncated":
                s.s.close()
                rc = s.proc.wait(TIMEOUT + 5)
            assert rc in (0, 1), f"server died with {rc}"
            assert not os.path.exists(s.sock_path), "socket left behind"
        return run

    tap.check("commands before VERSION, bad capabilities, second VERSION", t_before_version)
    tap.check("device, region and irq info; region access bounds", t_device_info)
    tap.check("DMA_MAP rules (access-mode revision)", t_map_rules(False))
    tap.check("DMA_MAP rules with --legacy", t_map_rules(True))
    for kind in ("mmap", "file-io", "message"):
        tap.check(f"DMA through {kind} regions, verified both ways", t_mode(kind))
    tap.check("transfer across regions; permission, unmapped, range, bus-master errors",
              t_span_and_errors)
    tap.check("wrong DMA_READ reply fails the command, server survives", t_bad_reply)
    tap.check("INTx auto-mask/unmask and MSI eventfds", t_irqs)
    for kind in ("short-size", "huge-size", "truncated", "bad-type", "many-fds"):
        tap.check(f"malformed stream ({kind}): clean exit", t_garbage(kind))

    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        subprocess.run(["rm", "-rf", s.dir])
    print(f"1..{tap.n}")
    print(f"{tap.n - tap.failed} passed, {tap.failed} failed")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
