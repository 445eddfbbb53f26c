#!/usr/bin/python3
"""Benchmarks of server-driven DMA in each access mode (see docs/benchmarks.md).

QEMU runs under -accel qtest (no guest code); this script sets the device up
through qtest and asks our server to repeat a transfer many times, each one
timed inside the server and checked.  Also measured: memcpy on this machine
(the limit of the modes that map or read guest memory), a raw request/reply
between two processes on a UNIX socket (the limit of message DMA), QEMU 10.2.2 without the series (the baseline), and the cost of
registering guest memory as it grows.  A transfer that moves wrong data, or
a mode that is not the one asked for, fails the run (exit status 1).

usage: run-bench.py --qemu Q --baseline-qemu B --server S --out DIR
                    [--memcpy PROG] [--socket-limit PROG]
                    [--case-time SECONDS] [--no-scale] [--cpus LIST]
                    [--modes NAME,...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True     # keep the source tree clean
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'lib'))
import dmaengine as de  # noqa: E402
import dmaserver  # noqa: E402
from procs import TestFailure, check  # noqa: E402
from qemu import Qemu, machine_memory, memory_backend, vfio_user_device  # noqa: E402

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
# QEMU 10.2.2 treats a DMA_READ reply the socket took only in part as sent,
# so it fails every read whose reply exceeds the socket's send buffer (about
# 208 KiB by default): 256 KiB and 1 MiB.  128 KiB is the largest size here
# that it serves, so the baseline is compared there too.
SIZES = [4 * KiB, 64 * KiB, 128 * KiB, 256 * KiB, 1 * MiB]
SLOT = 4
BAR0 = 0xE0000000
AREA_READ = 16 * MiB        # guest data the read benchmarks fetch
AREA_WRITE = 32 * MiB       # where the write benchmarks store it
GUARD = 64                  # bytes after the written range that must stay
GUEST_MEM = 256 * MiB
START_TIMEOUT = 30

BENCH_RE = (r'^bench dir=(?P<dir>\w+) len=(?P<len>\d+) (?:failed: (?P<err>.*)|'
            r'iters=(?P<iters>\d+) total_ns=(?P<total>\d+) min_ns=\d+ '
            r'p50_ns=(?P<p50>\d+) p99_ns=(?P<p99>\d+) max_ns=\d+ '
            r'mmap_bytes=(?P<mmap>\d+) file-io_bytes=(?P<fileio>\d+) '
            r'message_bytes=(?P<message>\d+))$')


# name, label, backend, dma-access (None: property not set), server mode
MODES = [
    ('mmap', 'mmap (memfd, auto)', 'memfd', 'auto', 'mmap'),
    ('file-io-fd', 'file I/O, RAM fd (memfd)', 'memfd', 'file-io', 'file-io'),
    ('file-io-procmem', 'file I/O, /proc/self/mem (ram)', 'ram', 'file-io',
     'file-io'),
    ('message', 'message (ram, auto), twin socket', 'ram', 'auto',
     'message'),
    ('message-1sock', 'message (ram, auto), one socket', 'ram', 'auto',
     'message'),
]
# Server options of a mode, and what its `version:` log line must say about
# the twin socket (issue 12): message DMA on a socket of its own when the
# client offers one, and with the server declining it (--no-twin-socket),
# so that both share one run.  A QEMU without the twin socket never offers
# it: its message rows then say "not-offered" (recorded, not a failure).
SERVER_ARGS = {'message-1sock': ['--no-twin-socket'],
               'baseline': ['--baseline-dma-layout']}
TWIN_WANT = {'message': ('on', 'not-offered'),
             'message-1sock': ('declined', 'not-offered')}
TWIN_RE = r'^version: .* twin-socket=(\S+)'
BASELINE = ('baseline', 'baseline: QEMU 10.2.2, message (ram)', 'ram',
            None, 'message')


# mode name -> (index of its first case that failed, error), for the baseline
mode_broken = {}


class Session:
    """Our server plus one QEMU (qtest accelerator) connected to it."""

    def __init__(self, args, tmp, qemu, server_args=()):
        self.tmp = tmp
        self.server = dmaserver.DmaServer(args.server, tmp, server_args)
        self.qemu_bin = qemu
        self.vm = self.qemu = self.qt = self.qmp = None

    def device(self, dma_access):
        return vfio_user_device(self.server.sock_path, dma_access, SLOT, 'dma')

    def start_qemu(self, mem_args, dev=None, qtest=True, qmp=False):
        """Start QEMU; returns once the qtest/QMP sockets are connected."""
        self.vm = Qemu(self.qemu_bin, self.tmp, mem_args +
                            (['-device', json.dumps(dev)] if dev else []),
                            slot=SLOT, qtest=qtest, qmp=qmp, timeout=120)
        self.qemu, self.qt, self.qmp = self.vm.proc, self.vm.qt, self.vm.qmp
        if qtest:
            self.dev = de.Engine(lambda r: self.qt.readl(BAR0 + r),
                                 lambda r, v: self.qt.writel(BAR0 + r, v))

    def setup_pci(self):
        self.qt.setup_pci(BAR0)
        check(self.dev.read32(de.REG_ID) == de.ID_VALUE,
              'device ID register wrong')

    def regions(self):
        return [(r['iova'], r['size'], r['mode'])
                for r in dmaserver.regions(list(self.server.log))]

    def bench(self, op, src, dst, length, iters, timeout):
        """Run one benchmark command; returns the server's bench line."""
        self.dev.start(op, src, dst, length, iters)
        # Wait on the server's log, not by polling STATUS: register reads
        # would be served in the middle of the timed transfers.
        m = self.server.expect(BENCH_RE, timeout, self.qemu)
        if m.group('err'):
            why = self.server.last_error()
            raise TestFailure('%s %d failed in the server: %s%s'
                              % (m.group('dir'), length, m.group('err'),
                                 ' (%s)' % why if why else ''))
        st = self.dev.read32(de.REG_STATUS)
        check(st & (de.STATUS_DONE | de.STATUS_ERROR) == de.STATUS_DONE,
              'STATUS 0x%x after a successful benchmark' % st)
        self.dev.write32(de.REG_STATUS, de.STATUS_DONE)
        return m

    def close(self):
        """Stop QEMU; the server then exits by itself.  Returns its status."""
        if self.vm:
            self.vm.close()
        return self.server.stop(timeout=15, term=self.vm is None)


def median_rows(runs):
    """One row per (mode, direction, size): the round with the median
    throughput, with every round's throughput kept alongside."""
    groups = {}
    for r in runs:
        groups.setdefault((r['mode'], r['direction'], r['size']), []).append(r)
    rows = []
    for group in groups.values():
        ok = sorted((r for r in group if r.get('gbps')), key=lambda r: r['gbps'])
        if len(ok) < len(group):
            rows.append(next(r for r in group if not r.get('gbps')))
            continue
        row = dict(ok[(len(ok) - 1) // 2])
        row['rounds_gbps'] = [r['gbps'] for r in group]
        row['rounds_p50_us'] = [r['p50_us'] for r in group]
        rows.append(row)
    return rows


def row_from(m, mode, direction, length):
    iters, total = int(m.group('iters')), int(m.group('total'))
    return {'kind': 'dma', 'mode': mode, 'direction': direction,
            'size': length, 'iters': iters,
            'gbps': length * iters / total,          # bytes/ns == GB/s
            'ops_s': iters * 1e9 / total,
            'p50_us': int(m.group('p50')) / 1000,
            'p99_us': int(m.group('p99')) / 1000}


def stamped(data, n):
    """What the write benchmark leaves in the guest: the server folds the
    repetition number (1..n) into the first 8 bytes; the last was n."""
    k = min(8, len(data))
    head = int.from_bytes(data[:k], 'little') ^ n
    return head.to_bytes(8, 'little')[:k] + data[k:]


def run_mode(args, mode, tmp, log, known_broken=None):
    """All sizes and both directions for one access mode; list of rows.
    known_broken: (index of the first case, error) the baseline could not do
    in an earlier round; that case and the later ones are not run again."""
    name, _label, backend, dma_access, want_mode = mode
    is_base = name == 'baseline'
    s = Session(args, tmp, args.baseline_qemu if is_base else args.qemu,
                SERVER_ARGS.get(name, []))
    twin = None
    rows = []
    fail_at = None          # index of the case that failed in this round
    first_bad, known_err = known_broken or (None, None)

    def lost(j):
        return 'not run: the connection was lost at %s %s' % (
            cases[j][1], size_name(cases[j][0]))

    cases = [(ln, d) for ln in SIZES for d in ('read', 'write')]
    try:
        s.start_qemu(machine_memory(backend, GUEST_MEM),
                     dev=s.device(dma_access))
        s.setup_pci()
        for base in (AREA_READ, AREA_WRITE):
            modes = [md for b, sz, md in s.regions() if b <= base < b + sz]
            check(modes == [want_mode], '%s: guest RAM at 0x%x registered '
                  'as %s, expected %s' % (name, base, modes, want_mode))
        twin = s.server.expect(TWIN_RE, START_TIMEOUT, s.qemu).group(1)
        check(name not in TWIN_WANT or twin in TWIN_WANT[name],
              '%s: the server says twin-socket=%s, expected one of %s'
              % (name, twin, TWIN_WANT.get(name)))
        data = os.urandom(max(SIZES))
        s.qt.memwrite(AREA_READ, data)
        for i, (length, direction) in enumerate(cases):
            err = None
            if first_bad is not None and i >= first_bad:
                err = known_err if i == first_bad else lost(first_bad)
            elif fail_at is not None:
                err = lost(fail_at)
            else:
                try:
                    rows.append(bench_case(args, s, name, want_mode,
                                           direction, length, data, log))
                except TestFailure as e:
                    if not is_base:
                        raise
                    # The unpatched client cannot do every size: say so.
                    err = 'not possible with the unpatched client: %s' % e
                    fail_at = i
                    mode_broken[name] = (i, err)
                    log('  %s %s %d: %s' % (name, direction, length, err))
            if err:
                rows.append({'kind': 'dma', 'mode': name,
                             'direction': direction, 'size': length,
                             'gbps': None, 'error': err})
    finally:
        rc = s.close()
    for r in rows:
        r['twin_socket'] = twin
    check(rc == 0 or fail_at is not None, '%s: server exited with status '
          '%s: %s' % (name, rc, ' | '.join(s.server.log[-5:])))
    return rows


def bench_case(args, s, name, want_mode, direction, length, data, log):
    op = de.CMD_BENCH_READ if direction == 'read' else de.CMD_BENCH_WRITE
    src, dst = (AREA_READ, 0) if op == de.CMD_BENCH_READ else (0, AREA_WRITE)
    # Calibrate: a few repetitions, then enough for --case-time seconds.
    m = s.bench(op, src, dst, length, 3, 30)
    per_op = int(m.group('total')) / 3
    iters = int(max(20, min(200000, args.case_time * 1e9 / max(per_op, 1))))
    if op == de.CMD_BENCH_WRITE:
        s.qt.memset(AREA_WRITE, length + GUARD, 0xA5)
    m = s.bench(op, src, dst, length, iters, 30 + 6 * args.case_time)
    moved = {'mmap': int(m.group('mmap')), 'file-io': int(m.group('fileio')),
             'message': int(m.group('message'))}
    check(moved[want_mode] > 0 and
          all(v == 0 for k, v in moved.items() if k != want_mode),
          '%s %s %d: bytes moved per mode %s, expected only %s'
          % (name, direction, length, moved, want_mode))
    if op == de.CMD_BENCH_WRITE:
        # QEMU's view of guest memory: the buffer filled by the read
        # benchmark from `data`, as the last repetition stamped it.
        got = s.qt.memread(AREA_WRITE, length + GUARD)
        want = stamped(data[:length], iters)
        check(got[:length] == want, '%s write %d: guest memory differs from '
              'what the server wrote' % (name, length))
        check(got[length:] == b'\xa5' * GUARD,
              '%s write %d: bytes after the range changed' % (name, length))
    row = row_from(m, name, direction, length)
    log('  %-16s %-5s %8d: %8.3f GB/s %10.0f ops/s p50 %8.2f us p99 %8.2f us'
        % (name, direction, length, row['gbps'], row['ops_s'], row['p50_us'],
           row['p99_us']))
    return row


def limit_program(prog, iters, sizes):
    """Run memcpy-bench or socket-limit (ITERS SIZE...): its JSON lines."""
    name = os.path.basename(prog)
    try:
        out = subprocess.run([prog, str(iters)] + [str(x) for x in sizes],
                             capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise TestFailure('%s did not finish within 300 s' % name)
    check(out.returncode == 0, '%s failed: %s' % (name, out.stderr.strip()))
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    check(len(lines) == 2 * len(sizes), '%s printed %d results for %d sizes'
          % (name, len(lines), len(sizes)))
    return lines


def limit_row(mode, r):
    total = r['total_ns']
    return {'kind': 'dma', 'mode': mode, 'direction': r['dir'],
            'size': r['len'], 'iters': r['iters'],
            'gbps': r['len'] * r['iters'] / total,
            'ops_s': r['iters'] * 1e9 / total,
            'p50_us': r['p50_ns'] / 1000, 'p99_us': r['p99_ns'] / 1000}


def memcpy_rows(args, log):
    rows = []
    for r in limit_program(args.memcpy, 10000, SIZES):
        rows.append(limit_row('memcpy', r))
        log('  %-16s %-5s %8d: %8.3f GB/s' % ('memcpy', r['dir'], r['len'],
                                              rows[-1]['gbps']))
    return rows


def socket_limit_rows(args, log):
    """The message path's limit: socket-limit, each size calibrated like a
    server case (a few repetitions, then about --case-time seconds)."""
    rows = []
    for length in SIZES:
        cal = limit_program(args.socket_limit, 3, [length])
        per_op = max(r['total_ns'] for r in cal) / 3
        iters = int(max(20, min(200000, args.case_time * 1e9 / max(per_op, 1))))
        for r in limit_program(args.socket_limit, iters, [length]):
            rows.append(limit_row('socket-limit', r))
            log('  %-16s %-5s %8d: %8.3f GB/s %10.0f ops/s p50 %8.2f us '
                'p99 %8.2f us' % ('socket-limit', r['dir'], r['len'],
                                  rows[-1]['gbps'], rows[-1]['ops_s'],
                                  rows[-1]['p50_us'], rows[-1]['p99_us']))
    return rows


# ---- scale: registering guest memory ----

def realize(args, qemu, mem_args, dma_access):
    """Hot-plug the device; (DMA_MAP count, realize time in ms)."""
    with tempfile.TemporaryDirectory(prefix='vu-bench-') as tmp:
        s = Session(args, tmp, qemu)
        try:
            s.start_qemu(mem_args, qtest=False, qmp=True)
            t0 = time.monotonic()
            s.qmp.cmd('device_add', **s.device(dma_access))
            ms = (time.monotonic() - t0) * 1000
            s.qmp.cmd('quit')
        finally:
            rc = s.close()
    check(rc == 0, 'server exited with status %s' % rc)
    # counted once the server is gone, so no log line can still be in flight
    maps = len(s.regions())
    refused = sum(1 for ln in s.server.log if 'dma-map refused' in ln)
    check(maps > 0, 'no DMA region registered')
    return maps + refused, ms


def realize_median(args, qemu, mem_args, dma_access):
    """Median realize time of --rounds hot-plugs (each in a fresh QEMU)."""
    runs = [realize(args, qemu, mem_args, dma_access)
            for _ in range(args.rounds)]
    check(len(set(r[0] for r in runs)) == 1,
          'DMA_MAP count differs between identical runs: %s' % runs)
    return runs[0][0], sorted(r[1] for r in runs)[(len(runs) - 1) // 2]


SCALE_CONFIGS = [
    # qemu, label, backend, dma-access
    ('patched', 'mmap', 'memfd', 'auto'),
    ('patched', 'file-io (/proc/self/mem)', 'ram', 'file-io'),
    ('patched', 'message', 'ram', 'auto'),
    ('baseline', 'mmap (fd without bits)', 'memfd', None),
    ('baseline', 'message', 'ram', None),
]


def scale_rows(args, log):
    rows = []
    for which, label, backend, dma_access in SCALE_CONFIGS:
        qemu = args.qemu if which == 'patched' else args.baseline_qemu
        for ram in (256 * MiB, 1 * GiB, 4 * GiB, 16 * GiB):
            maps, ms = realize_median(args, qemu, machine_memory(backend, ram),
                                      dma_access)
            rows.append({'kind': 'scale-ram', 'qemu': which, 'config': label,
                         'ram': ram, 'dimms': 0, 'dma_maps': maps,
                         'realize_ms': ms})
            log('  %-8s %-26s ram %6d MiB: %3d DMA_MAPs, realize %7.1f ms'
                % (which, label, ram // MiB, maps, ms))
        for dimms in (1, 16, 64, 200):
            dimm = 128 * MiB
            mem = ['-machine', 'pc,memory-backend=mem',
                   '-m', '%dM,slots=%d,maxmem=%dM'
                   % (GUEST_MEM // MiB, dimms,
                      (GUEST_MEM + dimms * dimm) // MiB),
                   '-object', memory_backend(backend, GUEST_MEM)]
            for i in range(dimms):
                mem += ['-object', memory_backend(backend, dimm, 'dimm%d' % i),
                        '-device', 'pc-dimm,memdev=dimm%d' % i]
            maps, ms = realize_median(args, qemu, mem, dma_access)
            rows.append({'kind': 'scale-sections', 'qemu': which,
                         'config': label, 'ram': GUEST_MEM + dimms * dimm,
                         'dimms': dimms, 'dma_maps': maps, 'realize_ms': ms})
            log('  %-8s %-26s %3d dimms: %3d DMA_MAPs, realize %7.1f ms'
                % (which, label, dimms, maps, ms))
    return rows


# ---- reports ----

def size_name(n):
    return '%d KiB' % (n // KiB) if n < MiB else '%d MiB' % (n // MiB)


def find(rows, mode, direction, size):
    for r in rows:
        if (r.get('kind') == 'dma' and r['mode'] == mode and
                r['direction'] == direction and r['size'] == size):
            return r
    return None


def round_ratios(rows, a, b, direction, size, metric='gbps'):
    """Throughput (or, metric='p50_us', median latency) of a over b in each
    round, sorted: each pair compared ran back to back, in the same round."""
    ra, rb = find(rows, a, direction, size), find(rows, b, direction, size)
    if not ra or not rb or not ra.get('gbps') or not rb.get('gbps'):
        return None
    key = 'rounds_gbps' if metric == 'gbps' else 'rounds_p50_us'
    return sorted(x / y for x, y in zip(ra[key], rb[key]))


def targets(rows):
    """(description, verdict, measured) for each target of the issue."""
    # description, a, b, direction, size, goal, metric, quiet: a/b in
    # throughput must be >= goal; in p50 latency ('p50_us') <= goal.
    # quiet: say nothing when b has no result (the table shows why).
    wanted = []
    for size in (64 * KiB, 1 * MiB):
        for d in ('read', 'write'):
            wanted.append(('mmap >= 0.8x memcpy, %s %s' % (d, size_name(size)),
                           'mmap', 'memcpy', d, size, 0.8, 'gbps', False))
    for d in ('read', 'write'):
        wanted.append(('file I/O via /proc/self/mem >= 10x message, %s 64 KiB'
                       % d, 'file-io-procmem', 'message', d, 64 * KiB, 10,
                       'gbps', False))
    for size in SIZES:
        for d in ('read', 'write'):
            wanted.append(('message no slower than baseline, %s %s'
                           % (d, size_name(size)), 'message', 'baseline', d,
                           size, 1.0, 'gbps', True))
    # Message DMA against its limit and against QEMU 10.2.2: ops/s at one
    # size is throughput over the size, so their ratios are the same.
    # Both ways of message DMA, twin socket and one socket (issue 12).
    for m, what in (('message', 'message, twin socket'),
                    ('message-1sock', 'message, one socket')):
        for d in ('read', 'write'):
            wanted.append(('%s: p50 <= 1.5x socket-limit p50, %s 4 KiB'
                           % (what, d), m, 'socket-limit', d, 4 * KiB, 1.5,
                           'p50_us', False))
        for d in ('read', 'write'):
            wanted.append(('%s: ops/s >= 2x baseline, %s 4 KiB' % (what, d),
                           m, 'baseline', d, 4 * KiB, 2.0, 'gbps', False))
        # 10.2.2 serves nothing above 128 KiB (docs/benchmarks.md,
        # Baseline): 256 KiB stays n/a, and the 1 MiB cannot be
        # compared at all.
        for size in (64 * KiB, 128 * KiB, 256 * KiB):
            for d in ('read', 'write'):
                wanted.append(('%s: throughput >= 1.5x baseline, %s %s'
                               % (what, d, size_name(size)), m, 'baseline',
                               d, size, 1.5, 'gbps', False))
    out = []
    for desc, a, b, d, size, goal, metric, quiet in wanted:
        p = round_ratios(rows, a, b, d, size, metric)
        if not p:
            if quiet:
                continue
            rb = find(rows, b, d, size)
            out.append((desc, 'n/a', '%s: no result (see the table)' % b
                        if rb and rb.get('error') else 'n/a'))
            continue
        med = p[(len(p) - 1) // 2]
        if metric == 'gbps':
            met = [x >= goal for x in p]
            ok = med >= goal
        else:
            met = [x <= goal for x in p]
            ok = med <= goal
        if ok:
            verdict = 'yes'
        elif any(met):
            # Other load on the machine moves single rounds by tens of
            # percent: say when the target was met in some rounds.
            verdict = 'NO (met in %d of %d rounds)' % (sum(met), len(p))
        else:
            verdict = 'NO'
        out.append((desc, verdict, '%.2fx (%.2f..%.2f)' % (med, p[0], p[-1])))
    return out


def markdown(rows, meta):
    # the message rows next to their limit and to 10.2.2
    modes = (['memcpy'] + [m[0] for m in MODES if 'message' not in m[0]] +
             ['socket-limit'] + [m[0] for m in MODES if 'message' in m[0]] +
             ['baseline'])
    labels = dict((m[0], m[1]) for m in MODES + [BASELINE])
    for m in TWIN_WANT:
        r = next((r for r in rows if r.get('mode') == m and
                  r.get('twin_socket')), None)
        if r and r['twin_socket'] == 'not-offered':
            labels[m] += ' (this QEMU offers no twin socket)'
    labels['memcpy'] = 'memcpy (machine limit)'
    labels['socket-limit'] = 'socket round trip (message limit)'
    lines = ['# DMA benchmark results', '',
             'Run %s on %s (on CPUs %s); every transfer timed inside the '
             'server and checked (see docs/benchmarks.md).'
             % (meta['date'], meta['host'],
                ','.join(str(c) for c in meta['cpus'])), '',
             '## Throughput and latency', '',
             '| mode | dir | size | GB/s | ops/s | p50 us | p99 us |',
             '|---|---|---|---:|---:|---:|---:|']
    for m in modes:
        for d in ('read', 'write'):
            for size in SIZES:
                r = find(rows, m, d, size)
                if not r:
                    continue
                if r.get('gbps') is None:
                    lines.append('| %s | %s | %s | %s | | | |'
                                 % (labels[m], d, size_name(size), r['error']))
                    continue
                lines.append('| %s | %s | %s | %.3f | %.0f | %.2f | %.2f |'
                             % (labels[m], d, size_name(size), r['gbps'],
                                r['ops_s'], r['p50_us'], r['p99_us']))
    lines += ['', '## Ratios (throughput, same run)', '',
              'Median of the per-round ratios, lowest and highest round in '
              'brackets.', '',
              '| size | dir | mmap / memcpy | file I/O proc-mem / message | '
              'message / baseline | message / socket-limit | '
              'p50: message / socket-limit | message, one socket / baseline | '
              'p50: message, one socket / socket-limit | '
              'message: twin / one socket |',
              '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for size in SIZES:
        for d in ('read', 'write'):
            cells = []
            for a, b, fmt, metric in (
                    ('mmap', 'memcpy', '%.2f', 'gbps'),
                    ('file-io-procmem', 'message', '%.1f', 'gbps'),
                    ('message', 'baseline', '%.2f', 'gbps'),
                    ('message', 'socket-limit', '%.2f', 'gbps'),
                    ('message', 'socket-limit', '%.2f', 'p50_us'),
                    ('message-1sock', 'baseline', '%.2f', 'gbps'),
                    ('message-1sock', 'socket-limit', '%.2f', 'p50_us'),
                    ('message', 'message-1sock', '%.2f', 'gbps')):
                p = round_ratios(rows, a, b, d, size, metric)
                if not p:
                    cells.append('n/a')
                    continue
                cells.append(('%sx (%s..%s)' % (fmt, fmt, fmt))
                             % (p[(len(p) - 1) // 2], p[0], p[-1]))
            lines.append('| %s | %s | %s |' % (size_name(size), d,
                                               ' | '.join(cells)))
    lines += ['', '## Targets', '', 'Measured: median of the per-round '
              'ratios (lowest..highest round).', '',
              '| target | measured | met |',
              '|---|---:|---|']
    for desc, verdict, detail in targets(rows):
        lines.append('| %s | %s | %s |' % (desc, detail, verdict))
    scale = [r for r in rows if r.get('kind', '').startswith('scale')]
    if scale:
        lines += ['', '## Registering guest memory (device hot-plug)', '',
                  '| QEMU | mode | guest RAM | pc-dimms | DMA_MAPs | '
                  'realize ms |', '|---|---|---:|---:|---:|---:|']
        for r in scale:
            lines.append('| %s | %s | %d MiB | %d | %d | %.1f |'
                         % (r['qemu'], r['config'], r['ram'] // MiB,
                            r['dimms'], r['dma_maps'], r['realize_ms']))
    return '\n'.join(lines) + '\n'


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    labels = dict((m[0], m[1]) for m in MODES + [BASELINE])
    labels['memcpy'] = 'memcpy (limit)'
    labels['socket-limit'] = 'socket round trip (message limit)'
    for ax, d in zip(axes, ('read', 'write')):
        for m in [x[0] for x in MODES] + ['baseline', 'memcpy', 'socket-limit']:
            pts = [(r['size'], r['gbps']) for r in rows
                   if r.get('kind') == 'dma' and r['mode'] == m and
                   r['direction'] == d and r.get('gbps')]
            if not pts:
                continue
            style = {'memcpy': dict(color='black', linestyle='--'),
                     'socket-limit': dict(color='black', linestyle='-.'),
                     'baseline': dict(color='grey', linestyle=':')}.get(m, {})
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o',
                    label=labels[m], **style)
        for r in rows:
            if (r.get('kind') == 'dma' and r['mode'] == 'baseline' and
                    r['direction'] == d and r.get('error')):
                ax.plot([r['size']], [0.1], marker='x', color='grey',
                        linestyle='none')
                ax.annotate('baseline: not possible', (r['size'], 0.1),
                            textcoords='offset points', xytext=(-110, 6),
                            fontsize=8, color='grey')
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xticks(SIZES, [size_name(s) for s in SIZES])
        ax.set_title('server %s guest memory' % ('reads' if d == 'read'
                                                  else 'writes'))
        ax.set_xlabel('transfer size')
        ax.grid(True, which='both', alpha=0.3)
    axes[0].set_ylabel('GB/s')
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def smoke(args, modes, log):
    """Each mode once, as a TAP case: every transfer is still checked."""
    import tap

    def mode_case(mode):
        def run():
            with tempfile.TemporaryDirectory(prefix='vu-bench-') as tmp:
                rows = run_mode(args, mode, tmp, log)
            check(rows and all(r.get('gbps') for r in rows),
                  'cases without a result: %s' % [r for r in rows
                                                  if not r.get('gbps')])
        return tap.FunctionCase('bench: %s moved checksum-verified data'
                                % mode[1], run)
    return tap.run(tap.unittest.TestSuite(
        [tap.FunctionCase('bench: memcpy reference runs',
                          lambda: memcpy_rows(args, log)),
         tap.FunctionCase('bench: socket-limit round trips run',
                          lambda: socket_limit_rows(args, log))] +
        [mode_case(m) for m in modes]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--baseline-qemu', required=True)
    ap.add_argument('--server', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--memcpy', help='memcpy-bench program (default: the '
                    "one built next to the server's directory)")
    ap.add_argument('--socket-limit', help='socket-limit program (default: '
                    'the one next to memcpy-bench)')
    ap.add_argument('--case-time', type=float, default=0.25,
                    help='seconds of timed transfers per case (default 0.25)')
    ap.add_argument('--rounds', type=int, default=5,
                    help='rounds of every case; the median is reported')
    ap.add_argument('--no-scale', action='store_true',
                    help='skip the memory-registration measurements')
    ap.add_argument('--modes', help='comma-separated subset of: %s'
                    % ', '.join(m[0] for m in MODES + [BASELINE]))
    ap.add_argument('--cpus', help='run everything (QEMU, server, limits) '
                    'on these CPUs only, e.g. 0 or 0,1 (default: all)')
    ap.add_argument('--no-plot', action='store_true',
                    help='skip results.png (needs no matplotlib)')
    ap.add_argument('--smoke', action='store_true',
                    help='a test of the machinery, not a measurement: one '
                    'short round, TAP output (one case per mode), no '
                    'results files')
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.case_time, args.no_scale = 1, 0.02, True
    args.memcpy = args.memcpy or os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(args.server))), 'bench', 'memcpy-bench')
    args.socket_limit = args.socket_limit or os.path.join(
        os.path.dirname(os.path.abspath(args.memcpy)), 'socket-limit')
    for p in (args.qemu, args.baseline_qemu, args.server, args.memcpy,
              args.socket_limit):
        if not os.access(p, os.X_OK):
            ap.error('not an executable: %s' % p)
    if not 1 <= args.rounds <= 20:
        ap.error('--rounds must lie between 1 and 20')
    if not 0.01 <= args.case_time <= 10:
        ap.error('--case-time must lie between 0.01 and 10')
    if args.cpus:
        try:
            cpus = set(int(c) for c in args.cpus.split(','))
            os.sched_setaffinity(0, cpus)   # inherited by every child
        except (ValueError, OSError) as e:
            ap.error('--cpus %s: %s' % (args.cpus, e))
    modes = MODES + [BASELINE]
    if args.modes:
        names = args.modes.split(',')
        unknown = set(names) - set(m[0] for m in modes)
        if unknown:
            ap.error('unknown mode(s): %s' % ', '.join(sorted(unknown)))
        modes = [m for m in modes if m[0] in names]
    os.makedirs(args.out, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    if args.smoke:
        return smoke(args, modes, log)
    rows = []
    started = time.monotonic()
    try:
        # Rounds, interleaving the modes, so that a burst of load from
        # elsewhere hits one round of every mode rather than all rounds of
        # one; each case reports its median round.
        runs = []
        for rnd in range(args.rounds):
            log('round %d of %d' % (rnd + 1, args.rounds))
            log('memcpy limit:')
            runs += memcpy_rows(args, log)
            log('socket round trip (message limit):')
            runs += socket_limit_rows(args, log)
            for mode in modes:
                log('%s:' % mode[1])
                with tempfile.TemporaryDirectory(prefix='vu-bench-') as tmp:
                    runs += run_mode(args, mode, tmp, log,
                                     mode_broken.get(mode[0]))
        rows += median_rows(runs)
        if not args.no_scale:
            log('registering guest memory:')
            rows += scale_rows(args, log)
    except TestFailure as e:
        print('bench: FAILED: %s' % e, file=sys.stderr)
        return 1
    meta = {'date': time.strftime('%Y-%m-%d %H:%M'),
            'host': '%s, %d CPUs' % (os.uname().machine, os.cpu_count()),
            'seconds': round(time.monotonic() - started, 1),
            'case_time': args.case_time, 'rounds': args.rounds,
            'cpus': sorted(os.sched_getaffinity(0))}
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump({'meta': meta, 'rows': rows}, f, indent=1)
    with open(os.path.join(args.out, 'results.md'), 'w') as f:
        f.write(markdown(rows, meta))
    if not args.no_plot:
        plot(rows, os.path.join(args.out, 'results.png'))
    log('wrote %s/results.{json,md%s} (%.0f s)'
        % (args.out, '' if args.no_plot else ',png', meta['seconds']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
