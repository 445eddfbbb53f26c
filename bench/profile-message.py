#!/usr/bin/python3
"""Where a message DMA round trip spends its time (docs/benchmarks.md).

Starts our server and the patched QEMU the way bench/run-bench.py does for
its `message` rows (guest RAM from memory-backend-ram, dma-access=auto,
-accel qtest) and makes the server repeat one DMA_READ (or DMA_WRITE) of
--size bytes --iters times, four times over:

1. untraced: the server's own timing (p50/p99), as in the bench;
2. under `perf stat --per-thread`: CPU time and context switches of each
   thread, per round trip;
3. under `perf record` of scheduler and system-call tracepoints on all CPUs:
   each round trip is cut at the hand-overs (server sendmsg -> QEMU's
   vfio-user thread recvmsg -> either its own reply sendmsg, for a request
   it serves itself, or its eventfd write that schedules the bottom half
   -> the main thread runs -> its reply sendmsg; then the server runs
   again and has read the reply), with the thread wake-ups;
4. under `perf record -e cpu-clock -g`: the hottest functions per thread.

socket-limit (the bench's message limit) is traced the same way as (3), for
comparison.  Writes DIR/profile.md (the tables) and keeps perf's data and
reports in DIR.  Needs perf (Debian's linux-perf; scripts/install-deps.sh
bench) and permission to trace (root, or kernel.perf_event_paranoid <= -1).

usage: profile-message.py --qemu Q --server S --socket-limit P --out DIR
                          [--size BYTES] [--dir read|write] [--iters N]
"""

import argparse
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    'run_bench', os.path.join(HERE, 'run-bench.py'))
rb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rb)
de, check, TestFailure = rb.de, rb.check, rb.TestFailure

# x86_64 system call numbers
NR = {'read': 0, 'write': 1, 'poll': 7, 'sendmsg': 46, 'recvmsg': 47,
      'futex': 202, 'ppoll': 271}
POLLS = (NR['poll'], NR['ppoll'])
TRACE_EVENTS = ['sched:sched_switch', 'sched:sched_wakeup',
                'raw_syscalls:sys_enter', 'raw_syscalls:sys_exit']
LINE_RE = re.compile(r'^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+'
                     r'(?P<time>\d+\.\d+):\s+(?P<event>[\w:]+):\s*(?P<rest>.*)$')


def perf_start(argv, out_path):
    """Start a perf command in the background; returns once it runs."""
    p = subprocess.Popen(['perf'] + argv, stdout=subprocess.DEVNULL,
                         stderr=open(out_path + '.log', 'w'))
    time.sleep(1.0)         # perf attaches before the measured work starts
    check(p.poll() is None, 'perf %s exited at once: %s'
          % (argv[0], open(out_path + '.log').read().strip()))
    return p


def perf_stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise TestFailure('perf did not stop within 120 s')


def parse_trace(path):
    """perf script of a tracepoint recording: list of
    (time_ns, tid, kind, a, b): kind 'enter' (a = syscall nr), 'exit'
    (a = nr, b = return), 'wakeup' (a = woken tid, b = 1 if on another CPU
    than the waker's), 'switch' (a = next tid,
    b = prev tid)."""
    out = subprocess.run(['perf', 'script', '-i', path, '--ns', '-F',
                          'comm,tid,cpu,time,event,trace'],
                         capture_output=True, text=True, timeout=600)
    check(out.returncode == 0, 'perf script failed: %s' % out.stderr[-500:])
    ev = []
    for line in out.stdout.splitlines():
        m = LINE_RE.match(line)
        if not m:
            continue
        t = int(m.group('time').replace('.', ''))       # --ns: 9 decimals
        tid, name, rest = int(m.group('tid')), m.group('event'), m.group('rest')
        if name == 'raw_syscalls:sys_enter':
            nr = re.match(r'NR (-?\d+)', rest)
            if nr:
                ev.append((t, tid, 'enter', int(nr.group(1)), 0))
        elif name == 'raw_syscalls:sys_exit':
            nr = re.match(r'NR (-?\d+) = (-?\d+)', rest)
            if nr:
                ev.append((t, tid, 'exit', int(nr.group(1)),
                           int(nr.group(2))))
        elif name == 'sched:sched_wakeup':
            # b: 1 if the woken thread is to run on another CPU than the
            # waker's (an inter-processor interrupt, maybe an idle CPU)
            target = re.search(r'target_cpu=(\d+)', rest)
            ev.append((t, tid, 'wakeup',
                       int(re.search(r'\bpid=(\d+)', rest).group(1)),
                       int(target is not None and
                           int(target.group(1)) != int(m.group('cpu')))))
        elif name == 'sched:sched_switch':
            ev.append((t, tid, 'switch',
                       int(re.search(r'next_pid=(\d+)', rest).group(1)),
                       int(re.search(r'prev_pid=(\d+)', rest).group(1))))
    ev.sort(key=lambda e: e[0])
    return ev


def first(ev, i, end, pred):
    """Index of the first event in ev[i:end] matching pred, or None."""
    for j in range(i, end):
        if pred(ev[j]):
            return j
    return None


def last(ev, i, end, pred):
    for j in range(end - 1, i - 1, -1):
        if pred(ev[j]):
            return j
    return None


def cut_qemu(ev, srv, io, main):
    """Cut each server round trip at its hand-overs; dict of lists of ns."""
    starts = [i for i, e in enumerate(ev) if e[1] == srv and
              e[2] == 'enter' and e[3] == NR['sendmsg']]
    seg = {k: [] for k in ('send', 'to_io', 'direct', 'io_read', 'wake_main',
                           'main', 'reply', 'to_srv', 'srv_read', 'total',
                           'io_wakeup', 'main_wakeup', 'srv_wakeup')}
    polled = 0
    for a, b in zip(starts, starts[1:]):
        t = lambda j: ev[j][0]      # noqa: E731
        a_exit = first(ev, a, b, lambda e: e[1] == srv and e[2] == 'exit' and
                       e[3] == NR['sendmsg'])
        io_recv = first(ev, a, b, lambda e: e[1] == io and e[2] == 'enter' and
                        e[3] == NR['recvmsg'])
        if a_exit is None or io_recv is None:
            continue
        io_wake = first(ev, a, io_recv, lambda e: e[2] == 'wakeup' and
                        e[3] == io)
        io_run = first(ev, io_wake, io_recv, lambda e: e[2] == 'switch' and
                       e[3] == io) if io_wake is not None else None
        # the reply: from the vfio-user thread itself (a request served
        # there, without the main loop) or from the main thread
        main_send = first(ev, io_recv, b, lambda e: e[1] in (io, main) and
                          e[2] == 'enter' and e[3] == NR['sendmsg'])
        if main_send is None:
            continue
        sender = ev[main_send][1]
        if sender == io:
            notify = main_back = main_wake = main_run = None
        else:
            notify = first(ev, io_recv, main_send, lambda e: e[1] == io and
                           e[2] == 'enter' and e[3] == NR['write'])
            if notify is None:
                continue
            # the main loop back from ppoll (woken by the eventfd)
            main_back = first(ev, notify, main_send, lambda e: e[1] == main
                              and e[2] == 'exit' and e[3] in POLLS)
            main_wake = first(ev, notify, main_send, lambda e: e[2] ==
                              'wakeup' and e[3] == main)
            main_run = first(ev, main_wake, main_send, lambda e: e[2] ==
                             'switch' and e[3] == main) \
                if main_wake is not None else None
            if main_back is None:
                continue
        send_exit = first(ev, main_send, b, lambda e: e[1] == sender and
                          e[2] == 'exit' and e[3] == NR['sendmsg'])
        srv_back = first(ev, main_send, b, lambda e: e[1] == srv and
                         e[2] == 'exit' and e[3] in POLLS)
        srv_wake = first(ev, main_send, b, lambda e: e[2] == 'wakeup' and
                         e[3] == srv)
        srv_run = first(ev, srv_wake, b, lambda e: e[2] == 'switch' and
                        e[3] == srv) if srv_wake is not None else None
        srv_done = last(ev, main_send, b, lambda e: e[1] == srv and
                        e[2] == 'exit' and e[3] in (NR['read'], NR['recvmsg'])
                        and e[4] > 0)
        if None in (send_exit, srv_back, srv_done):
            continue
        if io_run is None:
            polled += 1     # the vfio-user thread was polling, not asleep
        else:
            seg['io_wakeup'].append(t(io_run) - t(io_wake))
            seg.setdefault('io_wakeup_x', []).append(ev[io_wake][4])
        if main_run is not None:
            seg['main_wakeup'].append(t(main_run) - t(main_wake))
            seg.setdefault('main_wakeup_x', []).append(ev[main_wake][4])
        if srv_run is not None:
            seg['srv_wakeup'].append(t(srv_run) - t(srv_wake))
            seg.setdefault('srv_wakeup_x', []).append(ev[srv_wake][4])
        seg['send'].append(t(a_exit) - t(a))
        seg['to_io'].append(t(io_recv) - t(a_exit))
        if sender == io:
            seg['direct'].append(t(main_send) - t(io_recv))
        else:
            seg['io_read'].append(t(notify) - t(io_recv))
            seg['wake_main'].append(t(main_back) - t(notify))
            seg['main'].append(t(main_send) - t(main_back))
        seg['reply'].append(t(send_exit) - t(main_send))
        seg['to_srv'].append(t(srv_back) - t(send_exit))
        seg['srv_read'].append(t(srv_done) - t(srv_back))
        seg['total'].append(t(srv_done) - t(a))
    return seg, polled, len(starts)


def cut_limit(ev, req, ans):
    """The same cut for socket-limit: requester and answering process."""
    starts = [i for i, e in enumerate(ev) if e[1] == req and
              e[2] == 'enter' and e[3] == NR['sendmsg']]
    seg = {k: [] for k in ('send', 'to_ans', 'ans', 'reply', 'to_req',
                           'req_read', 'total', 'ans_wakeup', 'req_wakeup')}
    for a, b in zip(starts, starts[1:]):
        t = lambda j: ev[j][0]      # noqa: E731
        a_exit = first(ev, a, b, lambda e: e[1] == req and e[2] == 'exit' and
                       e[3] == NR['sendmsg'])
        ans_send = first(ev, a, b, lambda e: e[1] == ans and e[2] == 'enter'
                         and e[3] == NR['sendmsg'])
        if None in (a_exit, ans_send):
            continue
        ans_back = first(ev, a, ans_send, lambda e: e[1] == ans and
                         e[2] == 'exit' and e[3] in POLLS)
        ans_wake = first(ev, a, ans_send, lambda e: e[2] == 'wakeup' and
                         e[3] == ans)
        ans_run = first(ev, ans_wake, ans_send, lambda e: e[2] == 'switch' and
                        e[3] == ans) if ans_wake is not None else None
        send_exit = first(ev, ans_send, b, lambda e: e[1] == ans and
                          e[2] == 'exit' and e[3] == NR['sendmsg'])
        req_back = first(ev, ans_send, b, lambda e: e[1] == req and
                         e[2] == 'exit' and e[3] in POLLS)
        req_wake = first(ev, ans_send, b, lambda e: e[2] == 'wakeup' and
                         e[3] == req)
        req_run = first(ev, req_wake, b, lambda e: e[2] == 'switch' and
                        e[3] == req) if req_wake is not None else None
        req_done = last(ev, ans_send, b, lambda e: e[1] == req and
                        e[2] == 'exit' and e[3] == NR['read'] and e[4] > 0)
        if None in (ans_back, send_exit, req_back, req_done):
            continue
        if ans_run is not None:
            seg['ans_wakeup'].append(t(ans_run) - t(ans_wake))
            seg.setdefault('ans_wakeup_x', []).append(ev[ans_wake][4])
        if req_run is not None:
            seg['req_wakeup'].append(t(req_run) - t(req_wake))
            seg.setdefault('req_wakeup_x', []).append(ev[req_wake][4])
        seg['send'].append(t(a_exit) - t(a))
        seg['to_ans'].append(t(ans_back) - t(a_exit))
        seg['ans'].append(t(ans_send) - t(ans_back))
        seg['reply'].append(t(send_exit) - t(ans_send))
        seg['to_req'].append(t(req_back) - t(send_exit))
        seg['req_read'].append(t(req_done) - t(req_back))
        seg['total'].append(t(req_done) - t(a))
    return seg, len(starts)


NAMES = dict((v, k) for k, v in NR.items())
NAMES.update({14: 'rt_sigprocmask', 232: 'epoll_wait', 281: 'epoll_pwait',
              426: 'io_uring_enter', 9: 'mmap', 11: 'munmap'})


def syscalls_per_trip(ev, who, trips):
    """Table rows: system calls per round trip of each thread in who
    (list of (tid, label)), by name."""
    rows = []
    for tid, label in who:
        counts = {}
        for e in ev:
            if e[1] == tid and e[2] == 'enter':
                counts[e[3]] = counts.get(e[3], 0) + 1
        calls = ', '.join('%s %.1f' % (NAMES.get(nr, 'nr%d' % nr), c / trips)
                          for nr, c in sorted(counts.items(),
                                              key=lambda kv: -kv[1])
                          if c / trips >= 0.05)
        rows.append('| %s | %.1f | %s |' % (
            label, sum(counts.values()) / trips, calls))
    return rows


def wake_rows(seg, who):
    """Wake-up table rows: (key, label) in who."""
    rows = []
    for key, label in who:
        lat, cross = seg.get(key, []), seg.get(key + '_x', [])
        same = [v for v, x in zip(lat, cross) if not x]
        other = [v for v, x in zip(lat, cross) if x]
        med = lambda v: us(statistics.median(v)) if v else '-'  # noqa: E731
        rows.append('| %s | %d | %d%% | %s | %s |' % (
            label, len(lat), 100 * len(other) // max(len(lat), 1),
            med(same), med(other)))
    return rows


WAKE_HEAD = ['', 'Wake-ups (wake-up -> running), by where the woken thread '
             'runs:', '', '| woken | count | on the other CPU | p50 us same '
             'CPU | p50 us other CPU |', '|---|---:|---:|---:|---:|']


def us(v):
    return '%.1f' % (v / 1000)


def stat_row(name, vals):
    if not vals:
        return '| %s | - | - |' % name
    s = sorted(vals)
    return '| %s | %s | %s |' % (name, us(statistics.median(s)),
                                 us(s[int(len(s) * 0.9)]))


def threads(pid):
    """tid -> comm of a process's threads."""
    out = {}
    for tid in os.listdir('/proc/%d/task' % pid):
        with open('/proc/%d/task/%s/comm' % (pid, tid)) as f:
            out[int(tid)] = f.read().strip()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--server', required=True)
    ap.add_argument('--socket-limit', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--size', type=int, default=4096)
    ap.add_argument('--dir', choices=('read', 'write'), default='read')
    ap.add_argument('--iters', type=int, default=5000)
    ap.add_argument('--cpus', help='run QEMU, server and socket-limit on '
                    'these CPUs only, e.g. 0 (default: all)')
    args = ap.parse_args()
    if args.cpus:
        try:
            os.sched_setaffinity(0, set(int(c) for c in args.cpus.split(',')))
        except (ValueError, OSError) as e:
            ap.error('--cpus %s: %s' % (args.cpus, e))
    if not shutil.which('perf'):
        ap.error('perf not found: install linux-perf '
                 '(scripts/install-deps.sh bench)')
    for p in (args.qemu, args.server, args.socket_limit):
        if not os.access(p, os.X_OK):
            ap.error('not an executable: %s' % p)
    if not 1 <= args.size <= rb.MiB or not 100 <= args.iters <= 200000:
        ap.error('--size must lie in 1..1048576, --iters in 100..200000')
    os.makedirs(args.out, exist_ok=True)
    out = os.path.abspath(args.out)
    report = ['# Message DMA profile', '',
              '%s %d bytes, %d repetitions per pass, on CPUs %s '
              '(bench/profile-message.py)'
              % (args.dir, args.size, args.iters,
                 ','.join(str(c) for c in sorted(os.sched_getaffinity(0)))),
              '']
    op = de.CMD_BENCH_READ if args.dir == 'read' else de.CMD_BENCH_WRITE
    src, dst = (rb.AREA_READ, 0) if args.dir == 'read' else (0, rb.AREA_WRITE)
    mode = next(m for m in rb.MODES if m[0] == 'message')
    bench_args = argparse.Namespace(server=args.server, qemu=args.qemu,
                                    baseline_qemu=args.qemu)
    with tempfile.TemporaryDirectory(prefix='vu-profile-') as tmp:
        s = rb.Session(bench_args, tmp, args.qemu)
        try:
            # thread names, so that the vfio-user thread can be told apart
            s.start_qemu(rb.machine_memory(mode[2], rb.GUEST_MEM) +
                         ['-name', 'profile,debug-threads=on'],
                         dev=s.device(mode[3]))
            s.setup_pci()
            check([md for b, sz, md in s.regions()
                   if b <= rb.AREA_READ < b + sz] == ['message'],
                  'guest RAM not registered for messages')
            s.qt.memwrite(rb.AREA_READ, os.urandom(args.size))
            qpid, spid = s.qemu.p.pid, s.server.p.pid
            names = threads(qpid)
            io = [t for t, n in names.items() if n.startswith('IO VFIO')]
            check(len(io) == 1, "QEMU's vfio-user thread not found: %s" % names)
            io, mainthr = io[0], qpid
            pids = '%d,%d' % (qpid, spid)

            def bench():
                m = s.bench(op, src, dst, args.size, args.iters, 120)
                return (int(m.group('p50')) / 1000, int(m.group('p99')) / 1000,
                        int(m.group('total')) / args.iters / 1000)

            s.bench(op, src, dst, args.size, 200, 60)       # warm up
            p50, p99, mean = bench()
            report += ['Untraced: p50 %.1f us, p99 %.1f us, mean %.1f us.'
                       % (p50, p99, mean), '']

            # 2. CPU time per thread
            stat_path = os.path.join(out, 'perf-stat.txt')
            p = perf_start(['stat', '--per-thread', '-e',
                            'task-clock,context-switches', '-p', pids,
                            '-o', stat_path], stat_path)
            p50s, _, mean_s = bench()
            perf_stop(p)
            rows = {}
            for line in open(stat_path):
                m = re.match(r'\s*(\S.*?)-(\d+)\s+([\d.,]+)\s+(msec\s+)?'
                             r'(task-clock|context-switches)', line)
                if m:
                    rows.setdefault((m.group(1), int(m.group(2))), {})[
                        m.group(5)] = float(m.group(3).replace(',', ''))
            report += ['## CPU time per round trip (perf stat --per-thread)',
                       '', 'Pass p50 %.1f us, mean %.1f us. Per round trip:'
                       % (p50s, mean_s), '',
                       '| thread | CPU us | context switches |',
                       '|---|---:|---:|']
            for (comm, tid), v in sorted(rows.items(),
                                         key=lambda kv: -kv[1].get(
                                             'task-clock', 0)):
                if v.get('task-clock', 0) * 1000 / args.iters < 0.05:
                    continue
                who = ('server' if tid == spid else 'QEMU main thread'
                       if tid == qpid else "QEMU vfio-user thread"
                       if tid == io else 'QEMU %s' % comm)
                report.append('| %s | %.1f | %.2f |' % (
                    who, v.get('task-clock', 0) * 1000 / args.iters,
                    v.get('context-switches', 0) / args.iters))
            report.append('')

            # 3. hand-overs
            data = os.path.join(out, 'sched.data')
            p = perf_start(['record', '-a', '-o', data] +
                           sum([['-e', e] for e in TRACE_EVENTS], []), data)
            p50t, _, _ = bench()
            perf_stop(p)
            ev = parse_trace(data)
            seg, polled, n = cut_qemu(ev, spid, io, mainthr)
            check(seg['total'], 'no complete round trip found in the trace')
            report += [
                '## Hand-overs of one round trip (perf record: sched and '
                'syscall tracepoints)', '',
                'Pass p50 %.1f us (tracing adds to it). %d round trips cut, '
                'of %d; in %d the vfio-user thread was still polling (no '
                'wake-up); %d served on the vfio-user thread (row "direct"), '
                'the others on the main loop (rows "io_read" to "main"). '
                'Median and 90th percentile:'
                % (p50t, len(seg['total']), n - 1, polled,
                   len(seg['direct'])), '',
                '| step | p50 us | p90 us |', '|---|---:|---:|']
            for key, name in (
                    ('send', 'server: sendmsg of the request'),
                    ('to_io', '-> QEMU vfio-user thread woken, back from '
                     'ppoll, at recvmsg'),
                    ('direct', 'vfio-user thread: recvmsg header + payload, '
                     'copy to or from guest RAM, reply built, up to sendmsg'),
                    ('io_read', 'vfio-user thread: recvmsg header + payload, '
                     'queue, qemu_bh_schedule -> eventfd write'),
                    ('wake_main', '-> main thread back from ppoll (eventfd)'),
                    ('main', 'main thread: eventfd read, BQL, bottom half, '
                     'pci_dma_read/write, reply built, up to sendmsg'),
                    ('reply', 'sendmsg of the reply'),
                    ('to_srv', '-> server back from poll'),
                    ('srv_read', 'server: recvmsg header, (poll,) read '
                     'payload'),
                    ('total', 'total (request sendmsg -> reply read)'),
                    ('io_wakeup', 'of which wake-up -> running: vfio-user '
                     'thread'),
                    ('main_wakeup', 'of which wake-up -> running: main thread'),
                    ('srv_wakeup', 'of which wake-up -> running: server')):
                report.append(stat_row(key + ': ' + name, seg[key]))
            report += WAKE_HEAD + wake_rows(seg, (
                ('io_wakeup', 'vfio-user thread (by the server)'),
                ('main_wakeup', 'main thread (by the vfio-user thread)'),
                ('srv_wakeup', 'server (by the thread that replied)')))
            report += ['', 'System calls per round trip:', '',
                       '| thread | calls | which |', '|---|---:|---|']
            report += syscalls_per_trip(ev, [(spid, 'server'),
                                             (io, 'QEMU vfio-user thread'),
                                             (mainthr, 'QEMU main thread')],
                                        max(n - 1, 1))
            report.append('')

            # 4. CPU profile
            cpu = os.path.join(out, 'cpu.data')
            p = perf_start(['record', '-e', 'cpu-clock', '-F', '10000', '-g',
                            '-p', pids, '-o', cpu], cpu)
            bench()
            perf_stop(p)
            report += ['## CPU samples (perf record -e cpu-clock -g; '
                       'share of all samples of server and QEMU)', '']
            for sort, limit, n in (('pid', '0.5', 8), ('sym', '0.8', 30)):
                rep = subprocess.run(
                    ['perf', 'report', '-i', cpu, '--stdio', '--no-children',
                     '--sort', sort, '-g', 'none', '--percent-limit', limit],
                    capture_output=True, text=True, timeout=300)
                with open(os.path.join(out, 'cpu-report-%s.txt' % sort),
                          'w') as f:
                    f.write(rep.stdout)
                top = [ln for ln in rep.stdout.splitlines()
                       if ln.strip() and not ln.startswith('#')]
                report += ['By %s:' % ('thread' if sort == 'pid'
                                       else 'function'), '', '```']
                report += top[:n] + ['```', '']
        finally:
            rc = s.close()
        check(rc == 0, 'server exited with status %s' % rc)

    # socket-limit under the same tracing
    data = os.path.join(out, 'limit.data')
    p = perf_start(['record', '-a', '-o', data] +
                   sum([['-e', e] for e in TRACE_EVENTS], []), data)
    lim = subprocess.Popen([args.socket_limit, str(args.iters),
                            str(args.size)], stdout=subprocess.PIPE, text=True)
    lim_out = lim.communicate(timeout=300)[0]
    perf_stop(p)
    check(lim.returncode == 0, 'socket-limit failed')
    ev = parse_trace(data)
    req = lim.pid
    answ = {e[1] for e in ev if e[1] not in (req, 0) and e[2] == 'enter' and
            e[3] == NR['sendmsg']}
    # the answering process: the one that sent as many messages as the parent
    counts = {t: sum(1 for e in ev if e[1] == t and e[2] == 'enter' and
                     e[3] == NR['sendmsg']) for t in answ}
    ans = max(counts, key=counts.get) if counts else None
    check(ans, 'socket-limit: answering process not found in the trace')
    seg, n = cut_limit(ev, req, ans)
    report += ['## socket-limit under the same tracing', '',
               '```', lim_out.strip(), '```', '',
               '%d round trips cut, of %d (read and write passes):'
               % (len(seg['total']), n - 1), '',
               '| step | p50 us | p90 us |', '|---|---:|---:|']
    for key, name in (('send', 'requester: sendmsg of the request'),
                      ('to_ans', '-> answering process back from poll'),
                      ('ans', 'answer: read header, (poll,) read payload, '
                       'copy, up to sendmsg'),
                      ('reply', 'answer: sendmsg of the reply'),
                      ('to_req', '-> requester back from poll'),
                      ('req_read', 'requester: read header, (poll,) read '
                       'payload'),
                      ('total', 'total'),
                      ('ans_wakeup', 'of which wake-up -> running: answer'),
                      ('req_wakeup', 'of which wake-up -> running: '
                       'requester')):
        report.append(stat_row(key + ': ' + name, seg[key]))
    report += WAKE_HEAD + wake_rows(seg, (
        ('ans_wakeup', 'answering process (by the requester)'),
        ('req_wakeup', 'requester (by the answering process)')))
    report += ['', 'System calls per round trip:', '',
               '| process | calls | which |', '|---|---:|---|']
    report += syscalls_per_trip(ev, [(req, 'requester'), (ans, 'answer')],
                                max(n - 1, 1))
    with open(os.path.join(out, 'profile.md'), 'w') as f:
        f.write('\n'.join(report) + '\n')
    print('\n'.join(report))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except TestFailure as e:
        print('profile-message: FAILED: %s' % e, file=sys.stderr)
        sys.exit(1)
