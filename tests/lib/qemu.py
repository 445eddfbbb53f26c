"""QEMU for the tests: memory backends, a vfio-user-pci device, and QEMU
(usually under -accel qtest) driven through its qtest and QMP sockets."""

import json
import os
import socket
import subprocess
import time

from procs import LineProc, TestFailure, Timeout, check

__unittest = True

START_TIMEOUT = 30


def memory_backend(kind, size, mid='mem', workdir=None):
    """-object value of a memory backend: ram, memfd, file-private,
    file-shared (files live in workdir)."""
    if kind == 'ram':
        return 'memory-backend-ram,id=%s,size=%d' % (mid, size)
    if kind == 'memfd':
        return 'memory-backend-memfd,id=%s,size=%d,share=on' % (mid, size)
    if kind in ('file-private', 'file-shared'):
        check(workdir, 'a file backend needs a directory')
        return ('memory-backend-file,id=%s,size=%d,mem-path=%s,share=%s'
                % (mid, size, os.path.join(workdir, mid + '-ram'),
                   'on' if kind == 'file-shared' else 'off'))
    raise ValueError('unknown memory backend %r' % kind)


def machine_memory(kind, size, workdir=None, mid='mem'):
    """QEMU arguments for guest RAM from one backend."""
    return ['-machine', 'pc,memory-backend=' + mid, '-m',
            '%dM' % (size >> 20), '-object',
            memory_backend(kind, size, mid, workdir)]


def vfio_user_device(sock_path, dma_access=None, slot=None, dev_id='dev',
                     props=None):
    """-device value (JSON) of vfio-user-pci; dma_access None: not set
    (QEMU without the series has no such property); props: more
    properties (e.g. {'x-twin-socket': False})."""
    dev = {'driver': 'vfio-user-pci', 'id': dev_id,
           'socket': {'type': 'unix', 'path': sock_path}}
    dev.update(props or {})
    if slot is not None:
        dev['addr'] = '0x%x' % slot
    if dma_access:
        dev['dma-access'] = dma_access
    return dev


def device_has_property(binary, driver, prop):
    """Whether QEMU's device driver has property prop (-device DRIVER,help)."""
    out = subprocess.run([binary, '-nodefaults', '-device', driver + ',help'],
                         stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=START_TIMEOUT)
    return any(ln.strip().startswith(prop + '=')
               for ln in out.stdout.splitlines())


class QTest:
    """Client side of QEMU's qtest line protocol."""

    def __init__(self, sock, slot, timeout):
        self.sock = sock
        self.slot = slot            # PCI slot on bus 0 for cfg_read/write
        self.sock.settimeout(timeout)
        self.buf = b''

    def _line(self):
        while b'\n' not in self.buf:
            data = self.sock.recv(1 << 20)
            if not data:
                raise TestFailure('qtest: QEMU closed the connection')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return line.decode()

    def cmd(self, text):
        try:
            self.sock.sendall(text.encode() + b'\n')
            line = self._line()
            while line.startswith('IRQ'):   # asynchronous, not a reply
                line = self._line()
        except socket.timeout:
            raise Timeout('qtest: no reply to %r' % text[:60])
        words = line.split()
        check(words and words[0] == 'OK',
              'qtest: %r failed: %s' % (text[:60], line[:200]))
        return words[1:]

    def readl(self, addr):
        return int(self.cmd('readl 0x%x' % addr)[0], 16)

    def writel(self, addr, val):
        self.cmd('writel 0x%x 0x%x' % (addr, val))

    def memread(self, addr, size):
        data = bytes.fromhex(self.cmd('read 0x%x 0x%x' % (addr, size))[0][2:])
        check(len(data) == size, 'qtest: short read')
        return data

    def memwrite(self, addr, data):
        self.cmd('write 0x%x 0x%x 0x%s' % (addr, len(data), data.hex()))

    def memset(self, addr, size, val):
        self.cmd('memset 0x%x 0x%x 0x%x' % (addr, size, val))

    def cfg_read(self, reg):
        self.cmd('outl 0xcf8 0x%x' % (0x80000000 | self.slot << 11 | reg))
        return int(self.cmd('inl 0xcfc')[0], 16)

    def cfg_write(self, reg, val):
        self.cmd('outl 0xcf8 0x%x' % (0x80000000 | self.slot << 11 | reg))
        self.cmd('outl 0xcfc 0x%x' % val)

    def setup_pci(self, bar0):
        """What firmware would do: place BAR0, enable memory decoding and
        bus mastering (QEMU refuses DMA from a device without it)."""
        self.cfg_write(0x10, bar0)
        bar = self.cfg_read(0x10)
        check(bar & ~0xF == bar0, 'BAR0 reads back 0x%x, wrote 0x%x'
              % (bar, bar0))
        self.cfg_write(0x04, self.cfg_read(0x04) | 0x6)
        check(self.cfg_read(0x04) & 0x6 == 0x6, 'command register not set')


class Qmp:
    """Just enough of QMP to hot-plug a device and quit."""

    def __init__(self, sock):
        self.f = sock.makefile('rwb')
        self._recv()                        # greeting
        self.cmd('qmp_capabilities')

    def _recv(self):
        try:
            line = self.f.readline()
        except socket.timeout:
            raise Timeout('qmp: no answer from QEMU')
        check(line, 'qmp: QEMU closed the connection')
        return json.loads(line)

    def cmd(self, name, **arguments):
        self.f.write(json.dumps({'execute': name, 'arguments': arguments})
                     .encode() + b'\n')
        self.f.flush()
        while True:
            r = self._recv()
            if 'return' in r:
                return r['return']
            if 'error' in r:
                raise TestFailure('qmp %s: %s' % (name, r['error']['desc']))

    def hmp(self, line):
        return self.cmd('human-monitor-command', **{'command-line': line})


class Qemu:
    """QEMU (-accel qtest unless told otherwise) with a qtest socket
    (self.qt) and, if asked, a QMP one (self.qmp); returns once both are
    connected.  timeout: for every answer on them."""

    def __init__(self, binary, workdir, args, slot=None, qtest=True,
                 qmp=False, timeout=120, accel='qtest'):
        self.qt = self.qmp = self.proc = None
        self.conns = []
        listeners = {}
        argv = [binary, '-accel', accel, '-nodefaults', '-display',
                'none'] + list(args)
        try:
            for kind, wanted in (('qtest', qtest), ('qmp', qmp)):
                if not wanted:
                    continue
                path = os.path.join(workdir, kind + '.sock')
                ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                ls.bind(path)
                ls.listen(1)
                ls.settimeout(0.2)
                listeners[kind] = ls
                argv += (['-qtest', 'unix:' + path, '-qtest-log', '/dev/null']
                         if kind == 'qtest' else
                         ['-chardev', 'socket,id=qmp,path=' + path,
                          '-mon', 'chardev=qmp,mode=control'])
            self.proc = LineProc(argv, 'qemu')
            deadline = time.monotonic() + START_TIMEOUT
            for kind, ls in listeners.items():
                conn = self._accept(ls, kind, deadline)
                self.conns.append(conn)
                if kind == 'qtest':
                    self.qt = QTest(conn, slot, timeout)
                else:
                    conn.settimeout(timeout)
                    self.qmp = Qmp(conn)
        except BaseException:
            self.close()
            raise
        finally:
            for ls in listeners.values():
                ls.close()

    def _accept(self, ls, kind, deadline):
        while True:
            try:
                return ls.accept()[0]
            except socket.timeout:
                check(self.proc.p.poll() is None, 'QEMU exited (status %s): '
                      '%s' % (self.proc.p.returncode, self.proc.tail()))
                check(time.monotonic() < deadline,
                      'QEMU did not connect to its %s socket within %d s'
                      % (kind, START_TIMEOUT))

    def close(self):
        """Close the sockets and stop QEMU; returns its exit status."""
        for c in self.conns:
            c.close()
        return self.proc.stop() if self.proc else None
