"""Our vfio-user-dma-server (server/) as the tests run it, and the parser
of its log lines (docs/server.md, "Log lines meant for scripts")."""

import json
import os
import re

from procs import LineProc, TestFailure, check

__unittest = True

START_TIMEOUT = 10

REGION_RE = re.compile(r'^dma-region iova=0x([0-9a-f]+) size=0x([0-9a-f]+) '
                       r'mode=(\S+) fd=(\S+) prot=(\S+)')
UNMAP_RE = re.compile(r'^dma-unmap iova=0x([0-9a-f]+) size=0x([0-9a-f]+)')


def regions(lines):
    """Every dma-region line, in order, as dicts (iova, size, mode, fd,
    prot)."""
    out = []
    for ln in lines:
        m = REGION_RE.match(ln)
        if m:
            out.append({'iova': int(m.group(1), 16),
                        'size': int(m.group(2), 16), 'mode': m.group(3),
                        'fd': m.group(4) == 'yes', 'prot': m.group(5)})
    return out


def live_regions(lines):
    """The regions still mapped after all the lines (dma-unmap applied)."""
    live = {}
    for ln in lines:
        for r in regions([ln]):
            live[(r['iova'], r['size'])] = r
        m = UNMAP_RE.match(ln)
        if m:
            live.pop((int(m.group(1), 16), int(m.group(2), 16)), None)
    return sorted(live.values(), key=lambda r: r['iova'])


def modes_covering(lines, addr, size=1):
    """Modes of the mappings that covered [addr, addr + size), in order."""
    return [r['mode'] for r in regions(lines)
            if r['iova'] <= addr and addr + size <= r['iova'] + r['size']]


def errors(lines):
    """The server's error lines, the evidence when something failed."""
    return [ln for ln in lines if ln.startswith('error:')]


class DmaServer(LineProc):
    """The server on a socket in workdir, logging to workdir/server.log
    and to self.log; ready (and this returns) once it says 'listening'."""

    def __init__(self, binary, workdir, args=(), name='server'):
        self.sock_path = os.path.join(workdir, 'dma.sock')
        self.stats_path = os.path.join(workdir, 'stats.json')
        self.log_path = os.path.join(workdir, 'server.log')
        super().__init__([binary, '--socket', self.sock_path, '--stats',
                          self.stats_path, '--log', '/dev/stdout'] +
                         list(args), name, log_path=self.log_path)
        try:
            self.expect(r'^listening on ', START_TIMEOUT)
        except TestFailure:
            self.stop()
            raise

    def stats(self):
        """The counters it wrote on exit (None if it wrote none)."""
        try:
            with open(self.stats_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def last_error(self):
        e = errors(self.log)
        return e[-1] if e else None

    def exit_status(self, timeout=10):
        """Wait for it to leave by itself (after its client went away);
        a server that does not is a failure."""
        try:
            rc = self.p.wait(timeout)
        except Exception:
            self.stop()
            raise TestFailure('server still running %g s after its client '
                              'left: %s' % (timeout, self.tail()))
        self.stop()
        return rc

    def check_exit(self, want=0, timeout=10):
        rc = self.exit_status(timeout)
        check(rc == want, 'server exit status %s, expected %s; last error: %s'
              % (rc, want, self.last_error()))
