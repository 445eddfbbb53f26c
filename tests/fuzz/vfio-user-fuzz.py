#!/usr/bin/python3
"""Fuzz QEMU's vfio-user client with a hostile server.

    tests/fuzz/vfio-user-fuzz.py --qemu QEMU [--seed N] [--cases N]
        [--max-time S] [--jobs N] [--session K [--session-cases N]]

This script is the server: it serves a small PCI device (tests/lib/
vfioserver.py) to QEMU's vfio-user-pci under -accel qtest, and drives QEMU
through qtest so that the client sends its requests (config and BAR
reads and writes, DMA_MAP/UNMAP from memory-map changes, device reset,
MSI and INTx setup).  Every answer and every request of its own is a
mutation of a correct one: headers (ids, commands, flags, sizes, error
fields), payloads (truncated, extended, bit-flipped, fields set to
interesting values), attached descriptors, replies that come late, in
pieces, twice or never, requests the client does not know, DMA requests
outside what was mapped, floods, a server that stops reading, one that
hangs up.  The realize-time answers (VERSION and its JSON, GET_INFO,
GET_REGION_INFO, GET_IRQ_INFO, config space contents) are mutated once
per QEMU; the run-time ones once per case, many cases per QEMU
(the client's reply timeout is set low, x-msg-timeout, so that a stall
costs little).  Seeds for the values: tests/fuzz/corpus/.

A case fails the run when QEMU:
  crash      dies (signal, abort, an unexpected exit status)
  sanitizer  prints an AddressSanitizer/UBSan report (QEMU built with
             `make qemu-asan`; ASAN_OPTIONS/UBSAN_OPTIONS make it halt)
  hang       does not answer qtest within --grace seconds beyond the
             client's own timeouts, or does not exit on SIGTERM
  fds        holds more than --max-fd-growth descriptors above its count
             after realize (and after MSI is turned off: each enabled MSI
             vector holds an eventfd)
  rss        grows by more than --max-rss-growth MiB after realize
  log        prints more than --max-log-lines lines per QEMU (one
             misbehaving server)
  fuzzer     (this script failed: a bug here, reported with its traceback)

A failure whose signature matches an entry of --known (tests/fuzz/
known-failures.txt: bugs of the client still to be fixed) is reported as
TAP "# TODO" and does not fail the run; any other one does.

Each session (one QEMU) depends only on --seed and its index, so
`--seed N --session K --session-cases C` replays it; every failure is
printed with that one-line reproducer.  Without --seed a fresh seed is
drawn and printed.  Output is TAP for scripts/run-tests.py: one line per
check, evidence as comments, and the case rate.
"""

import argparse
import errno
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))

import procs                                            # noqa: E402
from vfiouser import (REPLY, ERROR, VERSION, DMA_MAP, DMA_UNMAP,  # noqa: E402
                      DEVICE_GET_INFO, DEVICE_GET_REGION_INFO,
                      DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS, REGION_READ,
                      REGION_WRITE, DMA_READ, DMA_WRITE, HDR)
from vfioserver import (Conn, Device, default_config, pack_msg,  # noqa: E402
                        version_payload, NO_REPLY, TYPE_MASK, DEVICE_RESET,
                        REGION_WRITE_MULTI, COMMAND_NAMES, REGION_R,
                        REGION_W, REGION_MMAP)

CHECKS = ['crash', 'sanitizer', 'hang', 'fds', 'rss', 'log', 'fuzzer']
SANITIZER_RE = re.compile(r'ERROR: AddressSanitizer|ERROR: LeakSanitizer|'
                          r'runtime error:|UndefinedBehaviorSanitizer|'
                          r'AddressSanitizer:DEADLYSIGNAL')
SANITIZER_ENV = {
    'ASAN_OPTIONS': 'abort_on_error=1:halt_on_error=1:detect_leaks=0:'
                    'quarantine_size_mb=16:print_summary=1:'
                    'handle_segv=1:handle_abort=1',
    'UBSAN_OPTIONS': 'print_stacktrace=1:halt_on_error=1:abort_on_error=1',
}
# not the client's doing: QEMU's own exit, and ASan's note about QEMU's
# coroutines
IGNORED_RE = re.compile(r'terminating on signal|ASan doesn.t fully support '
                        r'makecontext')
BAR0_ADDR = 0xe0000000
DEVFN = 4 << 3
ERRNOS = [0, 1, errno.EINVAL, errno.EIO, errno.ENOSYS, errno.EFAULT,
          errno.E2BIG, errno.ENOMEM, errno.EAGAIN, errno.ETIMEDOUT, 4095,
          0x7fffffff, 0x80000000, 0xffffffff]
U32 = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 255, 256, 4095, 4096, 4097,
       0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe,
       0xffffffff]
U64 = U32 + [0x100000000, 0x1000000000, 1 << 47, 1 << 52, (1 << 63) - 1,
             1 << 63, (1 << 64) - 4096, (1 << 64) - 1]


class Failure(Exception):
    def __init__(self, kind, text, evidence=()):
        super().__init__(text)
        self.kind, self.text, self.evidence = kind, text, list(evidence)


class Broken(Exception):
    """The stream is gone or out of step: this QEMU has nothing more to
    test (not a failure)."""


def load_corpus():
    with open(os.path.join(HERE, 'corpus', 'seeds.json')) as f:
        return json.load(f)


def pick(rng, weights):
    """A key of {key: weight}."""
    total = sum(weights.values())
    x = rng.uniform(0, total)
    for k, w in weights.items():
        x -= w
        if x <= 0:
            return k
    return k


def interesting(rng, bits=32):
    if rng.random() < 0.2:
        return rng.getrandbits(bits)
    vals = U32 if bits == 32 else U64
    v = rng.choice(vals)
    return v & ((1 << bits) - 1)


def flip_bytes(rng, data):
    """A few byte-level mutations of data (bit flips, interesting words)."""
    b = bytearray(data)
    if not b:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice([0, 0xff, 0x7f, 0x80, rng.getrandbits(8)])
        elif op == 2 and len(b) >= 4:
            i = rng.randrange(0, len(b) - 3) & ~3
            struct.pack_into('<I', b, i, interesting(rng))
        elif len(b) >= 8:
            i = rng.randrange(0, len(b) - 7) & ~7
            struct.pack_into('<Q', b, i, interesting(rng, 64))
    return bytes(b)


# ---- the device a session's server pretends to be ----------------------

QUIRK_VENDORS = [0x10de, 0x1002, 0x8086, 0x1af4, 0x15b3, 0x1b36, 0xffff, 0]
CAP_IDS = [0x01, 0x05, 0x10, 0x11, 0x09, 0x12, 0x13, 0x03, 0x00, 0xff]


def mutate_config(rng, cfg):
    """Config space contents a server may report (realize time)."""
    c = bytearray(cfg)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(8)
        if op == 0:         # a random capability chain (loops, overlaps)
            offs = [rng.randrange(0x40, 0x100) & ~rng.choice([0, 3])
                    for _ in range(rng.randint(1, 6))]
            c[0x34] = offs[0] if rng.random() < 0.9 else rng.getrandbits(8)
            for i, off in enumerate(offs):
                nxt = offs[i + 1] if i + 1 < len(offs) else \
                    rng.choice([0, offs[0], rng.getrandbits(8)])
                c[off] = rng.choice(CAP_IDS)
                if off + 1 < 256:
                    c[off + 1] = nxt
                for j in range(off + 2, min(off + 2 + rng.randint(0, 12),
                                            256)):
                    c[j] = rng.getrandbits(8)
            c[0x06] |= 0x10
        elif op == 1:
            struct.pack_into('<HH', c, 0, rng.choice(QUIRK_VENDORS),
                             rng.getrandbits(16))
        elif op == 2:
            c[0x0e] = rng.choice([0x00, 0x80, 0x01, 0x02, 0x7f, 0xff])
        elif op == 3:
            bar = rng.randrange(6)
            struct.pack_into('<I', c, 0x10 + 4 * bar, rng.choice(
                [0x1, 0x4, 0x8, 0xc, rng.getrandbits(32)]))
        elif op == 4:
            c[0x3d] = rng.choice([0, 1, 2, 4, 5, 0xff])
        elif op == 5:       # MSI control: vectors, 64-bit, masking
            if c[0x40] == 0x05:
                struct.pack_into('<H', c, 0x42, rng.getrandbits(16) & ~1)
        elif op == 6:       # MSI-X with a table somewhere
            off = rng.choice([0x40, 0x50, 0x70, 0xf0])
            c[off] = 0x11
            c[off + 1] = rng.choice([0, 0x60])
            struct.pack_into('<HII', c, off + 2, rng.getrandbits(11),
                             rng.getrandbits(32), rng.getrandbits(32))
            c[0x34] = off
            c[0x06] |= 0x10
        else:
            c[rng.randrange(256)] = rng.getrandbits(8)
    return c


def make_device(rng, corpus, profile):
    """The session's device; profile: lie about it at realize."""
    dev = Device(config=default_config(msi=rng.random() < 0.8,
                                       pm=rng.random() < 0.5,
                                       pin=rng.choice([0, 1, 1])))
    caps = dev.caps['capabilities']
    if rng.random() < 0.3:
        caps['write_multiple'] = True
    if rng.random() < 0.2:
        caps['max_data_xfer_size'] = rng.choice([4096, 65536, 1 << 20])
    if rng.random() < 0.2:
        caps['pgsizes'] = 4096
        caps['max_dma_maps'] = rng.choice([16, 1000, 65535])
    if not profile:
        return dev
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(6)
        if what == 0:
            dev.config = mutate_config(rng, dev.config)
        elif what == 1:     # region sizes and flags, maybe an fd to map
            dev.mmap_fds = rng.random() < 0.5
            idx = rng.choice([0, 0, 1, 2, 5, 6, 7, 8, rng.randrange(16)])
            dev.regions[idx] = [rng.choice([0, REGION_R, REGION_R | REGION_W,
                                            REGION_R | REGION_W | REGION_MMAP,
                                            rng.getrandbits(32)]),
                                interesting(rng, 64) if rng.random() < 0.5
                                else 1 << rng.choice([12, 12, 13, 16, 20, 24,
                                                      31, 32, 40])]
        elif what == 2:     # irq counts and flags
            idx = rng.randrange(5)
            dev.irqs[idx] = (rng.choice([0, 1, 0xf, rng.getrandbits(32)]),
                             interesting(rng))
        elif what == 3:
            key = rng.choice(['flags', 'num_regions', 'num_irqs'])
            dev.info[key] = interesting(rng)
        elif what == 4:     # VERSION capabilities
            dev.caps = rng.choice(corpus['version'])
            if isinstance(dev.caps, str) and rng.random() < 0.3:
                dev.caps = flip_bytes(rng, dev.caps.encode())
        else:
            dev.config = mutate_config(rng, dev.config)
            dev.config_size = rng.choice([64, 255, 256, 4096, 0])
            dev.regions[7][1] = dev.config_size
    if dev.mmap_fds:
        # a memfd the client can seal, so that it maps the region, and
        # BAR0 (where the client's accesses go) mappable
        dev.mmap_seal = rng.random() < 0.5
        if rng.random() < 0.5:
            dev.regions[0][0] |= REGION_MMAP
    return dev


# ---- one QEMU --------------------------------------------------------

# What the server answers the client's offer of a twin socket (VERSION):
# set one up, keep one socket, or a reply that must fail realize (only
# when the session lies at realize).
TWIN_MODES = {'on': 6, 'off': 2, 'decline': 1}
TWIN_MODES_HOSTILE = dict(TWIN_MODES, **{
    'extra-fds': 1, 'no-fd': 0.5, 'no-index': 0.5, 'bad-index': 0.5,
    'not-bool': 0.5, 'pipe': 0.5, 'dgram': 0.5, 'odd-index': 0.5,
    'not-object': 0.3})

# How the answer to a client request is spoiled, and how often.  Those
# that make the client wait for its timeout (no reply, wrong id, late,
# ...) are rarer, those that end the connection rarer still: a QEMU
# start costs as much as a hundred cases.
REPLY_MUTATIONS = {
    'ok': 12, 'error': 10, 'error-zero': 2, 'error-noflag': 2, 'trunc': 8,
    'extend': 6, 'randomize': 5, 'flip': 14, 'dup': 3, 'interleave': 4,
    'split': 4, 'type': 1, 'id': 1, 'cmd': 1, 'drop': 1, 'late': 1,
    'fds': 0.15, 'bad-type': 0.1, 'size-small': 0.1, 'size-big': 0.1,
    'size-less': 0.1, 'close': 0.1, 'close-mid': 0.1,
}


class Session:
    """One QEMU and this server: realize, then cases until the stream
    breaks or the session's count is done.  All decisions come from
    random.Random seeded by (seed, session, case)."""

    def __init__(self, opts, seed, index, workdir, corpus, max_cases):
        self.opts, self.seed, self.index = opts, seed, index
        self.workdir, self.corpus = workdir, corpus
        self.rng = random.Random('%d/%d' % (seed, index))
        self.max_cases = max_cases
        self.timeout_ms = opts.msg_timeout
        self.cases = 0
        self.case_rng = self.rng
        self.stderr = []
        self.stderr_buf = b''
        self.proc = None
        self.conn = self.qt = None
        self.qt_buf = b''
        self.qt_lines = []
        self.timers = []            # (when, action)
        self.held = []              # (when, data, fds) to send in order
        self.paused = False         # the server stops reading
        self.mutation = None        # what to do to the next client request
        self.breaking = False
        self.replies = {}           # id -> Msg (answers to our requests)
        self.twin = None            # the twin socket's Conn, once set up
        self.next_id = 0x4000
        self.realizing = True
        self.seen = {}
        self.stats = {}
        self.exit_expected = False

    # -- plumbing --

    def log(self, text):
        if self.opts.verbose:
            print('# %.3f [s%d c%d] %s' % (time.monotonic() % 1000, self.index, self.cases, text),
                  file=sys.stderr, flush=True)

    def count(self, key):
        self.stats[key] = self.stats.get(key, 0) + 1

    def start(self):
        rng = self.rng
        vu_path = os.path.join(self.workdir, 'vu.sock')
        qt_path = os.path.join(self.workdir, 'qt.sock')
        for p in (vu_path, qt_path):
            if os.path.exists(p):
                os.unlink(p)
        self.vu_listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.vu_listen.bind(vu_path)
        self.vu_listen.listen(1)
        self.qt_listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.qt_listen.bind(qt_path)
        self.qt_listen.listen(1)

        mem = rng.choice(['ram', 'ram', 'memfd'])
        access = rng.choice([None, None, 'auto', 'message', 'mmap',
                             'file-io'])
        dev = {'driver': 'vfio-user-pci', 'addr': '04.0',
               'socket': {'type': 'unix', 'path': vu_path},
               'x-msg-timeout': self.timeout_ms}
        if access:
            dev['dma-access'] = access
        if rng.random() < 0.2:
            dev['x-no-posted-writes'] = True
        if rng.random() < 0.1:
            dev['x-send-queued'] = True
        if rng.random() < 0.15:
            dev['x-twin-socket'] = False
        argv = [self.opts.qemu, '-accel', 'qtest', '-nodefaults',
                '-display', 'none', '-m', '32M',
                '-qtest', 'unix:' + qt_path, '-qtest-log', '/dev/null',
                '-device', json.dumps(dev)]
        if mem == 'memfd':
            argv += ['-machine', 'pc,memory-backend=mem', '-object',
                     'memory-backend-memfd,id=mem,size=32M,share=on']
        else:
            argv += ['-machine', 'pc']
        self.profile = rng.random() < self.opts.p_profile
        self.dev = make_device(rng, self.corpus, self.profile)
        self.twin_mode = pick(rng, TWIN_MODES_HOSTILE if self.profile
                              else TWIN_MODES)
        self.realize_plan = None
        if rng.random() < self.opts.p_realize:
            cmd = pick(rng, {VERSION: 2, DEVICE_GET_INFO: 2,
                             DEVICE_GET_REGION_INFO: 3,
                             DEVICE_GET_IRQ_INFO: 2, REGION_READ: 4,
                             REGION_WRITE: 2, DMA_MAP: 2, DEVICE_SET_IRQS: 1,
                             DEVICE_RESET: 1})
            k = rng.choice([0, 0, 1, 2, rng.randrange(10)])
            self.realize_plan = (cmd, k, pick(rng, REPLY_MUTATIONS),
                                 rng.getrandbits(32))
        self.argv = argv
        self.log('qemu %s' % ' '.join(argv[1:]))
        self.log('profile %s realize plan %s twin %s' % (
            self.profile, self.realize_plan, self.twin_mode))
        env = dict(os.environ, **SANITIZER_ENV)
        self.proc = procs.start(argv, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.poll = select.poll()
        self.fdmap = {}
        self._watch(self.vu_listen, 'vu-listen')
        self._watch(self.qt_listen, 'qt-listen')
        self._watch(self.proc.stderr, 'stderr')

    def _watch(self, obj, tag, events=select.POLLIN):
        self.fdmap[obj.fileno()] = tag
        self.poll.register(obj.fileno(), events)

    def _unwatch(self, obj):
        try:
            self.poll.unregister(obj.fileno())
        except (KeyError, ValueError):
            pass
        self.fdmap.pop(obj.fileno(), None)

    def qemu_gone(self):
        return self.proc.poll() is not None

    def pump(self, done, timeout, what):
        """Serve both sockets until done() or timeout (a hang)."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                self.timers.pop(0)[1]()
            if done():
                return
            if self.proc.poll() is not None:
                self.drain_stderr(1)
                rc = self.proc.returncode
                how = ('died of %s' % signal.Signals(-rc).name if rc < 0
                       else 'exited (status %d)' % rc)
                raise Failure('crash', 'QEMU %s while %s' % (how, what))
            if now >= deadline:
                raise Failure('hang', 'no answer from QEMU within %.1f s '
                              'while %s' % (timeout, what))
            for conn in (self.conn, self.twin):
                if conn is not None and not conn.closed:
                    ev = (0 if self.paused else select.POLLIN) | \
                         (select.POLLOUT if conn.out else 0)
                    self.poll.modify(conn.fileno(), ev or select.POLLHUP)
            # QEMU's exit shows as EOF on its stderr, unless a process it
            # left behind still holds that: look at it now and then too
            wait = min(deadline - now, 0.05)
            if self.timers:
                wait = min(wait, self.timers[0][0] - now)
            for fd, ev in self.poll.poll(max(0, wait) * 1000 + 1):
                tag = self.fdmap.get(fd)
                if tag in ('vu', 'twin'):
                    conn, read = (self.conn, self.vu_read) if tag == 'vu' \
                        else (self.twin, self.twin_read)
                    if ev & select.POLLOUT:
                        conn.flush()
                    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        if not self.paused or ev & select.POLLERR:
                            read()
                elif tag == 'qt':
                    self.qt_read()
                elif tag == 'stderr':
                    self.read_stderr()
                elif tag == 'vu-listen':
                    s, _ = self.vu_listen.accept()
                    self.conn = Conn(s)
                    self._unwatch(self.vu_listen)
                    self._watch(self.conn, 'vu')
                elif tag == 'qt-listen':
                    s, _ = self.qt_listen.accept()
                    s.setblocking(False)
                    self.qt = s
                    self._unwatch(self.qt_listen)
                    self._watch(self.qt, 'qt')

    def idle(self, seconds):
        """Serve whatever comes for a while."""
        end = time.monotonic() + seconds
        self.pump(lambda: time.monotonic() >= end, seconds + 1, 'idling')

    stderr_eof = False

    def read_stderr(self):
        try:
            data = os.read(self.proc.stderr.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self.stderr_eof = True
            self._unwatch(self.proc.stderr)
            return
        self.stderr_buf += data
        *lines, self.stderr_buf = self.stderr_buf.split(b'\n')
        for ln in lines:
            self.stderr.append(ln.decode(errors='replace'))
            if SANITIZER_RE.search(self.stderr[-1]):
                self.sanitized = True

    sanitized = False

    def drain_stderr(self, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.stderr_eof and time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if r:
                self.read_stderr()
        if self.stderr_buf:
            self.stderr.append(self.stderr_buf.decode(errors='replace'))
            self.stderr_buf = b''

    def qt_read(self):
        try:
            data = self.qt.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            self._unwatch(self.qt)
            self.qt_closed = True
            return
        self.qt_buf += data
        *lines, self.qt_buf = self.qt_buf.split(b'\n')
        self.qt_lines += [ln.decode() for ln in lines
                          if not ln.startswith(b'IRQ')]

    qt_closed = False

    def qtest(self, cmds, what, waits=1):
        """Send qtest commands at once; their answers.  waits: how many
        client timeouts the commands may take."""
        if self.qt_closed:
            raise Failure('crash', 'qtest connection closed')
        self.qt_lines = []
        self.qt.sendall(('\n'.join(cmds) + '\n').encode())
        self.pump(lambda: len(self.qt_lines) >= len(cmds),
                  waits * self.timeout_ms / 1000 + self.opts.grace, what)
        return self.qt_lines

    def vu_read(self):
        try:
            msgs = self.conn.read()
        except ValueError:
            # a client message we cannot frame: a finding of its own
            raise Failure('crash', 'the client sent an unframeable message')
        for m in msgs:
            self.on_msg(m)
        if self.conn.closed:
            self._unwatch(self.conn)
            self.breaking = True

    def twin_read(self):
        """Only replies to our requests come on the twin socket."""
        try:
            msgs = self.twin.read()
        except ValueError:
            raise Failure('crash', 'the client sent an unframeable message '
                          'on the twin socket')
        for m in msgs:
            if m.flags & TYPE_MASK != REPLY:
                raise Failure('crash', 'the client sent a request (command '
                              '%d) on the twin socket' % m.cmd)
            self.replies[m.id] = m
        if self.twin.closed:
            self._unwatch(self.twin)
            self.breaking = True

    def twin_up(self):
        return self.twin is not None and not self.twin.closed

    def send_request_data(self, data, fds=(), main=False):
        """A request of ours: on the twin socket once there is one."""
        if self.twin_up() and not main:
            self.twin.queue(data, fds)
        else:
            self.send(data, fds)

    def twin_answer(self, m, correct):
        """The VERSION reply, with the session's answer to an offer of a
        twin socket."""
        caps = self.dev.caps
        if self.twin_mode == 'off' or b'"twin_socket"' not in m.data or \
                not isinstance(caps, dict) or \
                not isinstance(caps.get('capabilities'), dict):
            return correct
        rng = random.Random('%d/%d/twin' % (self.seed, self.index))
        mode = self.twin_mode
        self.count('twin-' + mode)
        c = json.loads(json.dumps(caps))
        twin = {'supported': True, 'fd_index': 0}
        fds = []
        if mode == 'decline':
            twin = {'supported': False}
        elif mode == 'not-object':
            twin = rng.choice([True, 1, [], 'yes'])
        elif mode == 'pipe':
            r, w = os.pipe()
            os.close(w)
            fds = [r]
        elif mode != 'no-fd':
            kind = socket.SOCK_DGRAM if mode == 'dgram' else \
                socket.SOCK_STREAM
            ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
            fds = [theirs.detach()]
            if mode in ('on', 'extra-fds'):
                self.twin = Conn(ours)
                self._watch(self.twin, 'twin')
            else:
                ours.close()
            if mode == 'extra-fds':
                extra = self.devnull_fds(rng, rng.randint(1, 4))
                at = rng.randrange(len(extra) + 1)
                fds = extra[:at] + fds + extra[at:]
                twin['fd_index'] = at
        if mode == 'no-index':
            del twin['fd_index']
        elif mode == 'bad-index':
            twin['fd_index'] = len(fds) + rng.choice([0, 1, 15, 16, 1000])
        elif mode == 'odd-index':
            twin['fd_index'] = rng.choice([-1, '0', 0.5, None, 1 << 64,
                                           interesting(rng, 64)])
        elif mode == 'not-bool':
            twin['supported'] = rng.choice([1, 'true', None, {}])
        c['capabilities']['twin_socket'] = twin
        return version_payload(c), correct[1], tuple(correct[2]) + tuple(fds)

    def send(self, data, fds=(), delay=0.0):
        """Queue data for the client, in order: a piece held back (a late
        reply, the pause inside a split one) holds back what follows."""
        when = time.monotonic() + delay
        if self.held:
            when = max(when, self.held[-1][0])
        if when <= time.monotonic() and not self.held:
            self.conn.queue(data, fds)
            return
        self.held.append((when, data, list(fds)))
        self.timers.append((when, self.release))
        self.timers.sort(key=lambda t: t[0])

    def release(self):
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            _, data, fds = self.held.pop(0)
            if self.conn is not None:
                self.conn.queue(data, fds)
            else:
                for fd in fds:
                    os.close(fd)

    def devnull_fds(self, rng, n):
        fds = []
        for _ in range(n):
            if rng.random() < 0.3:
                fd = os.memfd_create('fuzz', os.MFD_CLOEXEC)
                os.ftruncate(fd, 4096)
            else:
                fd = os.open('/dev/null', os.O_RDWR | os.O_CLOEXEC)
            fds.append(fd)
        return fds

    # -- the client's requests --

    def on_msg(self, m):
        if m.flags & TYPE_MASK == REPLY:
            self.replies[m.id] = m
            return
        self.count('req-' + COMMAND_NAMES.get(m.cmd, str(m.cmd)))
        n = self.seen.get(m.cmd, 0)
        self.seen[m.cmd] = n + 1
        correct = self.dev.reply(m)
        if m.cmd == VERSION and correct is not None:
            correct = self.twin_answer(m, correct)
        mut = None
        if self.realizing:
            plan = self.realize_plan
            if plan and plan[0] == m.cmd and plan[1] == n:
                mut = (plan[2], random.Random(plan[3]))
                self.realize_plan = None
        elif self.mutation is not None:
            mut, self.mutation = self.mutation, None
        if correct is None and mut is None:
            return                  # a posted write: no reply due
        if correct is None:
            correct = (m.data[:16], 0, ())
        kind, rng = mut if mut else ('ok', None)
        self.log('%s id %d -> %s' % (COMMAND_NAMES.get(m.cmd, m.cmd), m.id,
                                     kind))
        self.answer(m, correct, kind, rng)

    def answer(self, m, correct, kind, rng):
        payload, err, fds = correct
        msg_id, cmd = m.id, m.cmd
        flags = REPLY | (ERROR if err else 0)
        size = None
        fds = list(fds)
        delay = 0.0
        t = self.timeout_ms / 1000
        if kind == 'error':
            flags |= ERROR
            err = rng.choice(ERRNOS)
            payload = payload if rng.random() < 0.3 else b''
        elif kind == 'error-zero':
            flags |= ERROR
            err = 0
        elif kind == 'error-noflag':
            err = rng.choice(ERRNOS[1:])
        elif kind == 'trunc':
            payload = payload[:rng.randrange(len(payload) + 1)]
        elif kind == 'extend':
            payload += bytes(rng.getrandbits(8) for _ in
                             range(rng.choice([1, 4, 8, 16, 64, 300])))
        elif kind == 'randomize':
            payload = bytes(rng.getrandbits(8) for _ in range(len(payload)))
        elif kind == 'flip':
            payload = flip_bytes(rng, payload)
        elif kind == 'id':
            msg_id ^= rng.randrange(1, 0x10000)
        elif kind == 'cmd':
            cmd = interesting(rng) & 0xffff
        elif kind == 'type':
            # a request in place of the reply, or a reply with more bits
            flags = rng.choice([0, NO_REPLY, 0x11, 0x31, 0x41, 0x80000001,
                                rng.getrandbits(32) & ~0xe])
        elif kind == 'bad-type':
            flags = rng.choice([2, 3, 0xf, 0x12, rng.getrandbits(32) | 2])
            self.breaking = True
        elif kind == 'drop':
            for fd in fds:
                os.close(fd)
            return
        elif kind == 'late':
            delay = t + rng.uniform(0.01, 0.1)
        elif kind == 'fds':
            fds += self.devnull_fds(rng, rng.randint(1, 4))
        elif kind == 'size-small':
            size = rng.randrange(16)
            self.breaking = True
        elif kind == 'size-big':
            size = HDR.size + len(payload) + rng.choice([1, 8, 4096, 1 << 20])
            self.breaking = True
        elif kind == 'size-less':
            size = HDR.size + rng.randrange(len(payload)) if payload else 15
            self.breaking = True
        elif kind == 'close':
            for fd in fds:
                os.close(fd)
            self.hang_up()
            return
        data = pack_msg(msg_id, cmd, flags, payload, err, size)
        if kind == 'interleave':
            self.send_request(rng, 'dma-valid')
        if kind == 'split':
            cuts = sorted(rng.sample(range(1, len(data)),
                                     min(len(data) - 1, rng.randint(1, 3))))
            prev, when = 0, 0.0
            straddle = rng.random() < 0.2
            for c in cuts + [len(data)]:
                self.send(data[prev:c], fds if prev == 0 else (), when)
                when += (t + 0.02) if straddle else rng.uniform(0, t / 4)
                straddle = False
                prev = c
            return
        if kind == 'close-mid':
            self.send(data[:rng.randrange(1, len(data))], fds)
            self.send(b'', (), 0.01)
            self.timers.append((self.held[-1][0] + 0.001, self.hang_up))
            self.timers.sort(key=lambda t: t[0])
            self.breaking = True
            return
        self.send(data, fds, delay)
        if kind == 'dup':
            self.send(data)

    def hang_up(self):
        self.breaking = True
        for conn in (self.conn, self.twin):
            if conn is not None and not conn.closed:
                conn.flush()
                self._unwatch(conn)
                conn.close()

    # -- the server's own requests --

    def send_request(self, rng, kind):
        """One server->client request (or a stray reply); returns its id
        if a reply is due, else None."""
        dev = self.dev
        msg_id = self.next_id
        self.next_id = (self.next_id + 1) & 0xffff
        maps = sorted(dev.maps.items())
        cmd = rng.choice([DMA_READ, DMA_WRITE])
        flags = 0
        if maps and kind in ('dma-valid', 'main-request'):
            iova, size = rng.choice(maps)
            count = min(rng.choice([1, 4, 64, 4096, 65536]), size)
            addr = iova + rng.randrange(max(1, size - count + 1))
        else:
            addr = rng.choice([interesting(rng, 64), BAR0_ADDR, 0xfec00000,
                               0xfffff000, 0xc0000, 0x100000 - 8]
                              + [a + s - 4 for a, s in maps[:4]])
            count = interesting(rng, 64) if rng.random() < 0.5 else \
                rng.choice([0, 1, 8, 4096, dev.client_max_xfer,
                            dev.client_max_xfer + 1])
        data_len = count if cmd == DMA_WRITE else 0
        if data_len > 1 << 20:
            data_len = rng.choice([0, 16, 4096])
        payload = struct.pack('<QQ', addr & (2**64 - 1), count & (2**64 - 1))
        payload += bytes(data_len) if data_len else b''
        size = None
        fds = []
        if kind == 'dma-hostile':
            r = rng.random()
            if r < 0.2:
                payload = payload[:rng.randrange(16)]
            elif r < 0.35:
                flags = rng.choice([NO_REPLY, ERROR, 0x40, 0xf0,
                                    rng.getrandbits(32) & ~TYPE_MASK])
            elif r < 0.45:
                payload = flip_bytes(rng, payload)
            elif r < 0.5 and cmd == DMA_WRITE:
                payload = payload[:16] + bytes(rng.randrange(64))
        elif kind == 'unknown':
            cmd = rng.choice([0, VERSION, DMA_MAP, DMA_UNMAP,
                              DEVICE_GET_INFO, REGION_READ, REGION_WRITE,
                              DEVICE_RESET, 14, REGION_WRITE_MULTI, 16, 99,
                              0xffff])
            payload = bytes(rng.getrandbits(8)
                            for _ in range(rng.choice([0, 8, 16, 64])))
        elif kind == 'stray-reply':
            flags = REPLY | (ERROR if rng.random() < 0.3 else 0)
            msg_id = rng.getrandbits(16)
            cmd = rng.choice([DMA_MAP, REGION_READ, VERSION, DMA_READ,
                              rng.getrandbits(16)])
            payload = bytes(rng.getrandbits(8)
                            for _ in range(rng.choice([0, 8, 16, 64, 4096])))
        if rng.random() < 0.08:
            fds = self.devnull_fds(rng, rng.randint(1, 9))
        # with a twin socket, a request on the main socket breaks the
        # protocol: the client must refuse it there
        self.send_request_data(pack_msg(msg_id, cmd, flags, payload,
                                        size=size), fds,
                               main=kind == 'main-request')
        if flags & (NO_REPLY | TYPE_MASK):
            return None
        return msg_id

    # -- realize and the checks --

    realize_time = 0

    def realize(self):
        """Start QEMU and serve its realize; False if realize failed
        (QEMU exited with status 1, as it must on a device error)."""
        self.t_start = time.monotonic()
        self.start()
        try:
            self.pump(lambda: self.qt is not None, self.opts.start_timeout,
                      'waiting for the qtest connection')
            # answered once the machine is built and reset
            self.qtest(['readb 0x0'], 'realizing', waits=40)
        except Failure as f:
            if f.kind == 'crash' and self.proc.returncode == 1:
                self.drain_stderr()
                return False
            raise
        self.realizing = False
        self.realize_time = time.monotonic() - self.t_start
        self.pid = self.proc.pid
        self.base_fds = self.fd_count()
        self.base_rss = self.rss_kib()
        self.setup_pci()
        return True

    def fd_count(self):
        try:
            return len(os.listdir('/proc/%d/fd' % self.pid))
        except OSError:
            return 0

    def fd_kinds(self):
        """What QEMU's descriptors are, the most common first."""
        kinds = {}
        d = '/proc/%d/fd' % self.pid
        for fd in os.listdir(d):
            try:
                k = re.sub(r'\[\d+\]|\d+', 'N', os.readlink(os.path.join(d, fd)))
            except OSError:
                continue
            kinds[k] = kinds.get(k, 0) + 1
        return ['%3d %s' % (n, k) for k, n in
                sorted(kinds.items(), key=lambda kv: -kv[1])]

    def rss_kib(self):
        try:
            with open('/proc/%d/status' % self.pid) as f:
                for ln in f:
                    if ln.startswith('VmRSS:'):
                        return int(ln.split()[1])
        except OSError:
            pass
        return 0

    def check_resources(self):
        """Descriptors and RSS within bounds.  Requests still queued in
        QEMU hold the descriptors that came with them, so an excess is
        looked at again after QEMU has had time to serve its queue."""
        for attempt in range(4):
            fds, rss = self.fd_count(), self.rss_kib()
            fd_ok = fds <= self.base_fds + self.opts.max_fd_growth
            rss_ok = rss <= self.base_rss + self.opts.max_rss_growth * 1024
            if (fd_ok and rss_ok) or attempt == 3:
                break
            self.idle(0.1 * (attempt + 1))
            if not self.breaking and not fd_ok and attempt == 0:
                # QEMU holds an eventfd for each MSI vector the guest
                # enabled (up to 32): turn MSI off, as a guest driver
                # would, so that only descriptors that leaked remain
                self.mutation = None
                self.count('fds-msi-off')
                self.qtest(self.cfg_cmds(0x42, 2, 0), 'turning MSI off',
                           waits=4)
            elif not self.breaking:
                self.qtest(['readb 0x0'], 'probing before counting fds')
        if not fd_ok:
            kinds = self.fd_kinds()
            raise Failure('fds', 'QEMU holds %d fds, %d after realize '
                          '(most: %s)' % (fds, self.base_fds,
                                          kinds[0].split(None, 1)[1]
                                          if kinds else 'none'), kinds)
        if not rss_ok:
            raise Failure('rss', 'QEMU RSS %d MiB, %d MiB after realize'
                          % (rss >> 10, self.base_rss >> 10))

    def check_log(self):
        lines = [ln for ln in self.stderr if not IGNORED_RE.search(ln)]
        if self.sanitized or any(SANITIZER_RE.search(ln) for ln in lines):
            raise Failure('sanitizer', 'sanitizer report',
                          sanitizer_excerpt(self.stderr))
        if len(lines) > self.opts.max_log_lines:
            f = Failure('log', '%d lines on stderr from one server (limit '
                        '%d)' % (len(lines), self.opts.max_log_lines),
                        summarize_lines(lines))
            f.lines = distinct_lines(lines)
            if len(f.lines) > 200:
                # the rest as one line that matches no known entry
                f.lines[200:] = [[sum(n for n, _ in f.lines[200:]),
                                  '(%d more distinct lines)'
                                  % (len(f.lines) - 200)]]
            raise f

    def cfg_cmds(self, reg, size, value=None):
        port = 0xcfc + (reg & 3)
        sel = 'outl 0xcf8 0x%x' % (0x80000000 | DEVFN << 8 | (reg & 0xfc))
        op = {1: 'b', 2: 'w', 4: 'l'}[size]
        if value is None:
            return [sel, 'in%s 0x%x' % (op, port)]
        return [sel, 'out%s 0x%x 0x%x' % (op, port, value)]

    def setup_pci(self):
        """What firmware does: place BAR0, enable memory and bus master."""
        self.qtest(self.cfg_cmds(0x10, 4, BAR0_ADDR) +
                   self.cfg_cmds(0x04, 2, 0x6), 'setting up the BAR', waits=4)

    def stop(self):
        """End QEMU as a user would (SIGTERM): it must exit, status 0."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.pump(lambda: not self.timers, 1, 'flushing late sends')
            except Failure:
                pass
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10 + self.timeout_ms / 100
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    self.pump(lambda: self.proc.poll() is not None, 0.2,
                              'exiting')
                except Failure:
                    pass
            if self.proc.poll() is None:
                self.drain_stderr(0.5)
                procs.stop(self.proc, grace=1)
                raise Failure('hang', 'QEMU did not exit within %d s of '
                              'SIGTERM' % (deadline - time.monotonic()))
        self.drain_stderr()
        for ln in self.stderr if self.opts.verbose else ():
            self.log('stderr: ' + ln)
        rc = self.proc.wait()
        if rc != 0 and not (self.realize_failed and rc == 1):
            raise Failure('crash', 'QEMU exit status %d' % rc,
                          sanitizer_excerpt(self.stderr))

    realize_failed = False

    def close(self):
        for s in (self.conn, self.twin, self.qt,
                  getattr(self, 'vu_listen', None),
                  getattr(self, 'qt_listen', None)):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        for _, action in self.timers:
            pass
        self.timers = []
        if self.proc is not None:
            procs.stop(self.proc, grace=1)
            self.proc.stderr.close()
        if self.dev is not None:
            self.dev.close_mmap_files()

    # -- the run --

    def run(self):
        """Returns the number of cases run; raises Failure."""
        try:
            ok = self.realize()
            self.cases = 1
            if not ok:
                self.realize_failed = True
                self.count('realize-failed')
                self.stop()
                self.check_log()
                return self.cases
            while self.cases < self.max_cases and not self.breaking:
                self.case_rng = random.Random('%d/%d/%d' % (
                    self.seed, self.index, self.cases))
                t0 = time.monotonic()
                self.case_key = None
                self.one_case(self.case_rng)
                if time.monotonic() - t0 > 0.01:
                    self.log('slow case: %.3f s (%s)' % (time.monotonic() - t0, self.case_key))
                if self.opts.profile_time and self.case_key:
                    k = 'time-' + self.case_key
                    self.stats[k] = self.stats.get(k, 0) + \
                        int((time.monotonic() - t0) * 1000)
                    self.count('n-' + self.case_key)
                if self.breaking:
                    self.log('stream broken by case %d (%s)'
                             % (self.cases, self.case_key))
                self.cases += 1
                if self.cases % 32 == 0:
                    self.check_resources()
            if self.breaking:
                self.count('broken')
                # the device has lost its server; QEMU still answers
                self.qtest(self.cfg_cmds(0, 4), 'reading config space '
                           'after the server broke the stream', waits=2)
            else:
                self.check_resources()
            self.stop()
            self.check_log()
            return self.cases
        except Failure as f:
            f.cases = self.cases
            if f.kind == 'hang' and self.proc.poll() is None:
                f.evidence += backtrace(self.proc.pid)
            if f.kind in ('crash', 'hang'):
                self.drain_stderr(2)
                report = [ln for ln in self.stderr if SANITIZER_RE.search(ln)]
                # a memory error or undefined behaviour; a signal or an
                # abort (which ASan reports too, with its stack) is a crash
                if any(re.search(r'runtime error:|ERROR: \w+Sanitizer: '
                                 r'(?!ABRT|SEGV|BUS|FPE|ILL)', ln)
                       for ln in report):
                    f.kind = 'sanitizer'
                elif report:
                    f.kind = 'crash'
                why = abort_text(self.stderr)
                f.evidence += (['abort: ' + why] if why else []) + \
                    sanitizer_excerpt(self.stderr)
            raise

    def one_case(self, rng):
        kind = pick(rng, {'client': 55, 'server': 45, 'special': 0.5,
                          'break': 0.1})
        self.count('case-' + kind)
        if kind == 'client':
            self.mutation = (pick(rng, REPLY_MUTATIONS), rng) \
                if rng.random() < 0.75 else None
            self.case_key = 'client-' + (self.mutation[0] if self.mutation
                                         else 'ok')
            self.client_action(rng)
            self.mutation = None
        elif kind == 'server':
            sk = pick(rng, {'dma-valid': 40, 'dma-hostile': 35, 'unknown': 10,
                            'stray-reply': 10, 'burst': 2,
                            'main-request': 3 if self.twin_up() else 0})
            self.log('server request %s' % sk)
            self.case_key = 'server-' + sk
            if sk == 'burst':
                for _ in range(rng.randint(16, 200)):
                    self.send_request(rng, 'dma-hostile' if rng.random() < 0.5
                                      else 'dma-valid')
                want = None
            else:
                want = self.send_request(rng, sk)
            if want is not None:
                # a client that ignores a request is no crash: wait a bit
                try:
                    self.pump(lambda: want in self.replies or self.breaking,
                              0.05, 'waiting for a DMA reply')
                except Failure as f:
                    if f.kind != 'hang':
                        raise
                self.replies.pop(want, None)
            self.qtest(['readb 0x0'], 'probing after a server request')
        elif kind == 'special':
            self.special(rng)
        else:
            what = rng.choice(['garbage', 'close', 'bad-type', 'stop-reading',
                               'close-unread'] +
                              (['twin-garbage', 'twin-close']
                               if self.twin_up() else []))
            self.log('break: %s' % what)
            self.case_key = 'break-' + what
            if what == 'garbage':
                self.send(bytes(rng.getrandbits(8) for _ in range(16)))
            elif what == 'twin-garbage':
                self.twin.queue(bytes(rng.getrandbits(8) for _ in range(16)))
                self.qtest(['readb 0x0'], 'probing after twin garbage')
            elif what == 'twin-close':
                self._unwatch(self.twin)
                self.twin.close()
                self.qtest(['readb 0x0'], 'probing after closing the twin '
                           'socket')
            elif what == 'close':
                self.hang_up()
            elif what == 'close-unread':
                # hang up with a request of the client's unread: its next
                # read fails (ECONNRESET) instead of seeing the end
                self.paused = True
                self.qtest(['writel 0x%x 0x1' % BAR0_ADDR], 'writing BAR0')
                self.idle(0.02)
                self.hang_up()
                self.qtest(['readb 0x0'], 'probing after a hang-up')
            elif what == 'bad-type':
                self.send(pack_msg(1, DMA_READ, 2 + rng.randrange(14),
                                   bytes(16)))
            else:
                self.paused = True
                self.qtest(self.cfg_cmds(0, 4), 'reading config space from '
                           'a server that stopped reading', waits=2)
            self.breaking = True

    def client_action(self, rng):
        a = pick(rng, {'cfg-read': 35, 'cfg-write': 12, 'bar-read': 20,
                       'bar-write': 15, 'pam': 8, 'msi': 3, 'reset': 1,
                       'setup': 2})
        if self.mutation is None:
            self.case_key = 'client-ok-' + a
        self.log('client action %s mutation %s' % (
            a, self.mutation[0] if self.mutation else None))
        if a == 'cfg-read':
            size = rng.choice([1, 2, 4])
            reg = rng.randrange(0, 256, size)
            self.qtest(self.cfg_cmds(reg, size), 'reading config space')
        elif a == 'cfg-write':
            size = rng.choice([1, 2, 4])
            reg = rng.randrange(0x40, 256, size) if rng.random() < 0.7 else \
                rng.randrange(0, 0x40, size)
            self.qtest(self.cfg_cmds(reg, size, rng.getrandbits(8 * size)),
                       'writing config space', waits=3)
        elif a in ('bar-read', 'bar-write'):
            size = rng.choice([1, 2, 4, 8])
            off = rng.randrange(0, 4096, size)
            op = {1: 'b', 2: 'w', 4: 'l', 8: 'q'}[size]
            if self.dev.mmap_kept and rng.random() < 0.2:
                # the server shrinks the files it gave to map BARs from
                self.log('shrinking the region files')
                self.dev.shrink_mmap_files()
            if a == 'bar-read':
                cmd = 'read%s 0x%x' % (op, BAR0_ADDR + off)
            else:
                cmd = 'write%s 0x%x 0x%x' % (op, BAR0_ADDR + off,
                                             rng.getrandbits(8 * size))
            self.qtest([cmd], 'accessing BAR0', waits=2)
        elif a == 'pam':
            # i440FX PAM registers: the BIOS area changes, DMA_UNMAP/MAP
            reg = rng.randrange(0x59, 0x60)
            val = rng.choice([0x00, 0x11, 0x22, 0x33, 0x30, 0x03,
                              rng.getrandbits(8)])
            self.qtest(['outl 0xcf8 0x%x' % (0x80000000 | (reg & 0xfc)),
                        'outb 0x%x 0x%x' % (0xcfc + (reg & 3), val)],
                       'changing the memory map', waits=4)
        elif a == 'msi':
            self.qtest(self.cfg_cmds(0x42, 2, rng.choice(
                [0, 1, 0x81, rng.getrandbits(16)])), 'toggling MSI', waits=4)
        elif a == 'reset':
            self.qtest(['outb 0xcf9 0x6', 'readb 0x0'], 'resetting',
                       waits=30)
            self.setup_pci()
        else:
            self.setup_pci()

    def special(self, rng):
        what = rng.choice(['pause', 'backpressure', 'dribble'])
        self.case_key = 'special-' + what
        self.log('special %s' % what)
        if what == 'pause':
            # the server stops reading for a while, then goes on
            self.paused = True
            self.qtest(self.cfg_cmds(0, 4), 'reading config from a '
                       'paused server', waits=2)
            self.paused = False
            self.qtest(['readb 0x0'], 'probing after a pause')
        elif what == 'backpressure':
            self.paused = True
            for _ in range(rng.randint(4, 24)):
                self.send_request_data(pack_msg(
                    self.next_id, DMA_READ, 0, struct.pack(
                        '<QQ', 0, rng.choice([4096, 65536, 262144]))))
                self.next_id = (self.next_id + 1) & 0xffff
            self.qtest(['readb 0x0'], 'probing while not reading replies')
            self.paused = False
            self.qtest(['readb 0x0'], 'probing after reading again')
        else:
            # a valid request, one byte at a time
            m = pack_msg(self.next_id, DMA_READ, 0, struct.pack('<QQ', 0, 8))
            self.next_id = (self.next_id + 1) & 0xffff
            for i in range(len(m)):
                self.send(m[i:i + 1], delay=i * 0.002)
            self.pump(lambda: not self.timers, 1, 'dribbling a request')
            self.qtest(['readb 0x0'], 'probing after a dribbled request')


def backtrace(pid):
    """Where a hung QEMU's main thread is, if gdb is installed."""
    try:
        out = subprocess.run(['gdb', '-p', str(pid), '-batch', '-ex',
                              'bt 8'], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln for ln in out.splitlines() if re.match(r'#\d+ ', ln)]


ABORT_RE = re.compile(r'Assertion .* failed|hardware error|assertion failed|'
                      r'code should not be reached|^\*\*|^ERROR:|'
                      r'Unexpected error|Aborted')


def abort_text(lines):
    """What QEMU said when it aborted (an assertion, hw_error, abort
    after an error), the last such line before a sanitizer report."""
    end = next((i for i, ln in enumerate(lines) if SANITIZER_RE.search(ln)),
               len(lines))
    said = [ln for ln in lines[:end] if ABORT_RE.search(ln)
            and not SANITIZER_RE.search(ln)]
    return said[-1].strip()[:200] if said else ''


def sanitizer_excerpt(lines, n=14):
    """The first lines of a sanitizer report (with its top frames), else
    the last lines of stderr."""
    for i, ln in enumerate(lines):
        if SANITIZER_RE.search(ln):
            return lines[i:i + n]
    return lines[-6:]


def signature(f):
    """What tells one failure from another: the sanitizer's message, what
    QEMU said when it aborted, and the top two frames in QEMU's code
    (an assertion in a helper such as error_setv needs its caller), else
    the failure text without numbers."""
    ev = f['evidence']
    why = [re.sub(r'^abort: (\S*qemu-system-\S+: )?', '', x) for x in ev
           if x.startswith('abort: ')]
    why = [re.sub(r':\d+:', ':N:', x) for x in why]
    for i, ln in enumerate(ev):
        m = re.search(r'runtime error: .*|ERROR: \w+Sanitizer: [\w-]+', ln)
        if m:
            # the first frames in QEMU's own code (not libc's abort)
            frames = [re.sub(r'^\s*#\d+ 0x[0-9a-f]+ (in )?', '', x)
                      for x in ev[i:]
                      if re.match(r'\s*#\d+ ', x) and 'qemu/src/' in x]
            frames = [re.sub(r'(\.\w+)(:\d+)+$', r'\1',
                             re.sub(r'\S*qemu/src/', '', x)) for x in frames]
            # and its caller outside QEMU's utilities (error_setv's
            # caller is not error_setg_internal)
            frames = frames[:1] + [x for x in frames[1:]
                                   if ' util/' not in x][:1]
            return '%s%s @ %s' % (
                re.sub(r'0x[0-9a-f]+', 'N', m.group(0)),
                ' (%s)' % why[0] if why else '',
                ' < '.join(frames) or '?')
    text = re.sub(r'0x[0-9a-f]+|\d+', 'N', f['text'])
    if why:
        text += ' (%s)' % why[0]
    if f['kind'] == 'log' and ev:
        text += ' (most: %s)' % re.sub(r'^\s*\d+x ', '', ev[0])[:120]
    if f['kind'] == 'hang':
        frames = [re.sub(r'^#\d+\s+(0x[0-9a-f]+ in )?', '', x)
                  for x in ev if re.match(r'#\d+ ', x)]
        text += ' @ ' + (' < '.join(re.sub(r' \(.*', '', x)
                                    for x in frames[:3]) or '?')
    return text


def distinct_lines(lines):
    """[count, line with its numbers as N], most frequent first."""
    seen = {}
    for ln in lines:
        key = re.sub(r'0x[0-9a-f]+|\d+', 'N',
                     re.sub(r'/\S*vfio-user-fuzz-[^/]+/', '', ln))[:300]
        seen[key] = seen.get(key, 0) + 1
    return [[n, k] for k, n in sorted(seen.items(), key=lambda kv: -kv[1])]


def summarize_lines(lines):
    return ['%5dx %s' % (n, k[:160]) for n, k in distinct_lines(lines)[:6]]


# ---- known failures -----------------------------------------------------

KNOWN_KEYS = ('name', 'check', 'match', 'description', 'reproduce')


def load_known(path):
    """The entries of a known-failures file: blocks of "key: value"
    lines (name, check, match, description, reproduce) separated by
    blank lines, "#" comments.  Raises ValueError saying what is wrong."""
    entries, cur, names = [], {}, set()

    def close(lineno):
        if not cur:
            return
        missing = [k for k in KNOWN_KEYS if k not in cur]
        if missing:
            raise ValueError('%s:%d: entry %s lacks %s' % (
                path, lineno, cur.get('name', '?'), ', '.join(missing)))
        if cur['check'] not in CHECKS:
            raise ValueError('%s:%d: entry %s: no check %r (one of %s)' % (
                path, lineno, cur['name'], cur['check'], ', '.join(CHECKS)))
        if cur['name'] in names:
            raise ValueError('%s:%d: entry %s twice' % (path, lineno,
                                                        cur['name']))
        try:
            cur['re'] = re.compile(cur['match'])
        except re.error as e:
            raise ValueError('%s:%d: entry %s: bad match regex: %s' % (
                path, lineno, cur['name'], e))
        names.add(cur['name'])
        entries.append(dict(cur))
        cur.clear()

    with open(path) as f:
        lineno = 0
        for lineno, ln in enumerate(f, 1):
            ln = ln.rstrip('\n')
            if ln.lstrip().startswith('#'):
                continue
            if not ln.strip():
                close(lineno)
                continue
            m = re.match(r'^(\w+):\s*(.*?)\s*$', ln)
            if not m or m.group(1) not in KNOWN_KEYS:
                raise ValueError('%s:%d: not "key: value" with a key of %s: '
                                 '%s' % (path, lineno, ', '.join(KNOWN_KEYS),
                                         ln[:80]))
            if m.group(1) in cur:
                raise ValueError('%s:%d: %s twice in one entry'
                                 % (path, lineno, m.group(1)))
            cur[m.group(1)] = m.group(2)
        close(lineno)
    return entries


def classify(f, known, limit):
    """The known entries f is an instance of, [] if it is new.

    A log flood is known when its lines matching no log entry are within
    the limit: a flood of other lines is new.  Any other failure is known
    when its signature matches an entry of its check."""
    mine = [k for k in known if k['check'] == f['kind']]
    if f['kind'] != 'log' or 'lines' not in f:
        sig = signature(f)
        return [k for k in mine if k['re'].search(sig)][:1]
    hit, other = [], []
    for n, ln in f['lines']:
        k = next((k for k in mine if k['re'].search(ln)), None)
        if k is None:
            other.append([n, ln])
        elif k not in hit:
            hit.append(k)
    if sum(n for n, _ in other) > limit:
        # the new lines are what this failure is about
        f['evidence'] = ['%5dx %s' % (n, ln[:160]) for n, ln in other[:6]]
        return []
    return [k for k in mine if k in hit]


# ---- a shard: sessions index, index + jobs, ... -------------------------

def reproducer(opts, seed, session, cases):
    """The command that replays one session: this run's options, but
    only that session and only up to the failing case."""
    keep, skip = [], False
    for a in opts.argv:
        if skip:
            skip = False
            continue
        name = a.split('=')[0]
        if name in ('--seed', '--session', '--session-cases', '--cases',
                    '--max-time', '--jobs', '--qemu', '--shard'):
            skip = '=' not in a
            continue
        keep.append(a)
    return ' '.join(['python3', os.path.relpath(os.path.abspath(__file__)),
                     '--qemu', os.path.relpath(opts.qemu)] + keep +
                    ['--seed %d --session %d --session-cases %d'
                     % (seed, session, cases)])


def run_shard(opts, shard, jobs, seed, target, deadline, out):
    corpus = load_corpus()
    stats = {'cases': 0, 'sessions': 0, 'failures': [], 'counts': {}}
    index = shard
    with tempfile.TemporaryDirectory(prefix='vfio-user-fuzz-') as workdir:
        while stats['cases'] < target and time.monotonic() < deadline:
            rng = random.Random('%d/%d/len' % (seed, index))
            n = opts.session_cases or rng.randint(100, 1000)
            s = Session(opts, seed, index, workdir, corpus, n)
            t0 = time.monotonic()
            try:
                stats['cases'] += s.run()
            except Failure as f:
                stats['cases'] += getattr(f, 'cases', s.cases) + 1
                stats['failures'].append({
                    'kind': f.kind, 'text': f.text, 'session': index,
                    'case': f.cases, 'evidence': f.evidence[:18],
                    'lines': getattr(f, 'lines', []),
                    'reproduce': reproducer(opts, seed, index, f.cases + 1),
                })
                print('# FAIL %s (session %d, case %d): %s'
                      % (f.kind, index, f.cases, f.text), file=sys.stderr,
                      flush=True)
            except Exception as e:    # the fuzzer's own bug: say so, go on
                stats['cases'] += s.cases
                stats['failures'].append({
                    'kind': 'fuzzer', 'text': '%s: %s' % (type(e).__name__, e),
                    'session': index, 'case': s.cases,
                    'evidence': traceback.format_exc().splitlines()[-8:],
                    'reproduce': reproducer(opts, seed, index, s.cases + 1),
                })
                traceback.print_exc()
            finally:
                s.close()
                if opts.verbose:
                    print('# session %d: %d cases, %.2f s, realize %.2f s'
                          % (index, s.cases, time.monotonic() - t0,
                             s.realize_time), file=sys.stderr, flush=True)
            for k, v in s.stats.items():
                stats['counts'][k] = stats['counts'].get(k, 0) + v
            stats['sessions'] += 1
            index += jobs
            if opts.session is not None:
                break
    with open(out, 'w') as f:
        json.dump(stats, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--seed', type=int)
    ap.add_argument('--cases', type=int, default=100000,
                    help='cases to run in all (default 100000)')
    ap.add_argument('--max-time', type=float, default=540,
                    help='stop after this many seconds (default 540)')
    ap.add_argument('--jobs', type=int, default=2,
                    help='QEMU/server pairs in parallel (default 2)')
    ap.add_argument('--session', type=int,
                    help='replay only this session of the seed')
    ap.add_argument('--session-cases', type=int,
                    help='cases per session (default: drawn, 100-1000)')
    ap.add_argument('--msg-timeout', type=int, default=150,
                    help="the client's x-msg-timeout, ms (default 150)")
    ap.add_argument('--grace', type=float, default=3.0,
                    help='seconds beyond the client timeouts before QEMU '
                    'counts as hung (default 3)')
    ap.add_argument('--start-timeout', type=float, default=30)
    ap.add_argument('--max-fd-growth', type=int, default=16)
    ap.add_argument('--max-rss-growth', type=int, default=64,
                    help='MiB (default 64)')
    ap.add_argument('--max-log-lines', type=int, default=12,
                    help='stderr lines per QEMU (default 12)')
    ap.add_argument('--p-realize', type=float, default=0.3,
                    help='share of sessions with a mutated realize reply')
    ap.add_argument('--p-profile', type=float, default=0.3,
                    help='share of sessions whose device lies at realize')
    ap.add_argument('--known', default=os.path.join(HERE,
                                                    'known-failures.txt'),
                    help='known failure classes, reported as TODO (default '
                    'tests/fuzz/known-failures.txt; "" for none)')
    ap.add_argument('--shard', help=argparse.SUPPRESS)
    ap.add_argument('-v', '--verbose', action='store_true')
    ap.add_argument('--profile-time', action='store_true',
                    help='count the milliseconds each kind of case takes')
    opts = ap.parse_args()
    opts.qemu = os.path.abspath(opts.qemu)
    opts.argv = sys.argv[1:]

    if opts.shard:
        shard, jobs, seed, target, stop_at, out = opts.shard.split(',')
        run_shard(opts, int(shard), int(jobs), int(seed), int(target),
                  time.monotonic() + float(stop_at), out)
        return 0

    try:
        known = load_known(opts.known) if opts.known else []
    except (OSError, ValueError) as e:
        print('vfio-user-fuzz: known failures: %s' % e, file=sys.stderr)
        return 2
    if not os.access(opts.qemu, os.X_OK):
        print('1..0 # SKIP no QEMU at %s' % opts.qemu)
        return 1
    seed = opts.seed if opts.seed is not None else \
        random.SystemRandom().getrandbits(32)
    print('# seed %d (repeat this run: --seed %d)' % (seed, seed), flush=True)
    start = time.monotonic()
    if opts.session is not None:
        jobs, targets = 1, [opts.session_cases or 10**9]
        opts.jobs = 1
    else:
        jobs = max(1, opts.jobs)
        targets = [opts.cases // jobs + (i < opts.cases % jobs)
                   for i in range(jobs)]
    children = []
    with tempfile.TemporaryDirectory(prefix='vfio-user-fuzz-') as tmp:
        for i in range(jobs):
            out = os.path.join(tmp, 'shard%d.json' % i)
            first = opts.session if opts.session is not None else i
            argv = [sys.executable, os.path.abspath(__file__),
                    '--shard', '%d,%d,%d,%d,%f,%s' % (
                        first, jobs, seed, targets[i], opts.max_time, out)]
            argv += [a for a in sys.argv[1:]]
            children.append((procs.start(argv), out))
        results = []
        for p, out in children:
            try:
                p.wait(opts.max_time + 120)
            except subprocess.TimeoutExpired:
                pass
            procs.stop(p, grace=5)
            try:
                with open(out) as f:
                    results.append(json.load(f))
            except (OSError, ValueError):
                results.append({'cases': 0, 'sessions': 0, 'counts': {},
                                'failures': [{'kind': 'hang', 'session': -1,
                                              'case': 0, 'text': 'a fuzzer '
                                              'shard did not finish',
                                              'evidence': [],
                                              'reproduce': ''}]})
    elapsed = time.monotonic() - start
    cases = sum(r['cases'] for r in results)
    sessions = sum(r['sessions'] for r in results)
    failures = [f for r in results for f in r['failures']]
    counts = {}
    for r in results:
        for k, v in r['counts'].items():
            counts[k] = counts.get(k, 0) + v
    print('# %d cases in %d QEMU sessions, %.0f s: %.0f cases/s (%d in '
          'parallel)' % (cases, sessions, elapsed, cases / elapsed, jobs))
    print('# ' + ', '.join('%s %d' % kv for kv in sorted(counts.items())))
    print('1..%d' % (len(CHECKS) + 1))
    new_failures, seen = 0, []
    for n, kind in enumerate(CHECKS, 1):
        mine = [f for f in failures if f['kind'] == kind]
        if not mine:
            print('ok %d - %s: no failure in %d cases' % (n, kind, cases))
            continue
        groups = {}       # (signature, known names) -> failures
        for f in mine:
            ks = classify(f, known, opts.max_log_lines)
            for k in ks:
                if k not in seen:
                    seen.append(k)
            key = (signature(f) if not ks or kind != 'log' else
                   'known log lines', tuple(k['name'] for k in ks))
            groups.setdefault(key, []).append(f)
        new = [g for g in groups.items() if not g[0][1]]
        old = [g for g in groups.items() if g[0][1]]
        new_failures += sum(len(fs) for _, fs in new)
        head = 'not ok %d - %s: %d failing session(s), %d distinct' % (
            n, kind, len(mine), len(groups))
        names = []
        for (_, ks), _ in old:
            names += [k for k in ks if k not in names]
        descr = '; '.join('%s (%s)' % (k, next(
            e['description'] for e in known if e['name'] == k))
            for k in names)
        if new:
            print('%s, %d new, %d known' % (head, len(new), len(old)))
        else:
            print('%s # TODO known: %s' % (head, descr))
        for (sig, _), fs in sorted(new, key=lambda g: -len(g[1]))[:8]:
            f = min(fs, key=lambda f: f['case'])
            print('# NEW %dx %s' % (len(fs), sig))
            print('#   first: session %d case %d: %s' % (f['session'],
                                                        f['case'], f['text']))
            for ln in f['evidence']:
                print('#   ' + ln[:300])
            print('# reproduce: ' + f['reproduce'])
        for (sig, ks), fs in sorted(old, key=lambda g: -len(g[1])):
            f = min(fs, key=lambda f: f['case'])
            print('# known %s: %dx %s' % (', '.join(ks), len(fs), sig[:300]))
            print('#   first: session %d case %d: %s' % (f['session'],
                                                        f['case'], f['text']))
            print('# reproduce: ' + f['reproduce'])
    if known:
        print('# known failure classes seen: %d of %d%s' % (
            len(seen), len(known),
            (': ' + ', '.join(k['name'] for k in seen)) if seen else ''))
        unseen = [k['name'] for k in known if k not in seen]
        if unseen:
            print('# known entries that did not occur in this run (fixed?): '
                  + ', '.join(unseen))
    want = opts.session_cases if opts.session is not None else opts.cases
    if cases >= want:
        print('ok %d - %d cases (>= %d) in %.0f s, %.0f cases/s'
              % (len(CHECKS) + 1, cases, want, elapsed, cases / elapsed))
    else:
        print('not ok %d - only %d of %d cases in %.0f s (%.0f cases/s)'
              % (len(CHECKS) + 1, cases, want, elapsed, cases / elapsed))
    return 1 if new_failures or cases < want else 0


if __name__ == '__main__':
    sys.exit(main())
