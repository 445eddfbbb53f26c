"""Child processes for the tests: each in a session of its own, so that
stopping one (killpg) also stops whatever it started; output lines
collected by reader threads; no preexec_fn (unsafe once threads run)."""

import atexit
import os
import queue
import re
import signal
import subprocess
import threading
import time

__unittest = True       # keep this module out of failure tracebacks


class TestFailure(AssertionError):
    """A check failed; the message says what and shows the evidence."""


class Timeout(TestFailure):
    """A peer stopped answering; the session cannot be trusted any more."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


_live = set()


def start(argv, **kw):
    """Popen in a new session; stop() or the end of the script kills it."""
    p = subprocess.Popen(argv, start_new_session=True,
                         stdin=kw.pop('stdin', subprocess.DEVNULL), **kw)
    _live.add(p)
    return p


def stop(p, grace=5, term=True):
    """SIGTERM (if term) and wait up to grace seconds, then SIGKILL; the
    whole process group goes.  Returns the exit status."""
    if p is None:
        return None
    if term and p.poll() is None:
        _signal_group(p, signal.SIGTERM)
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(p, signal.SIGKILL)    # leftovers of the group, too
    rc = p.wait()
    _live.discard(p)
    return rc


def _signal_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_all():
    for p in list(_live):
        stop(p, grace=1)


def _on_sigterm(sig, frame):
    # The test runner's time limit: unwind, so that finally blocks and the
    # atexit hook above stop the children.  KeyboardInterrupt, because
    # unittest records any other exception as the case's error and goes on
    # with the next case.
    raise KeyboardInterrupt('stopped by SIGTERM')


signal.signal(signal.SIGTERM, _on_sigterm)


class LineProc:
    """A child whose output lines are kept (self.log, optionally also in
    log_path) and can be waited for (expect)."""

    def __init__(self, argv, name, log_path=None):
        self.name = name
        self.lines = queue.Queue()
        self.log = []
        self.log_file = open(log_path, 'w') if log_path else None
        self.p = start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.threads = [threading.Thread(target=self._pump, args=(f, tag),
                                         daemon=True)
                        for f, tag in ((self.p.stdout, ''),
                                       (self.p.stderr, 'stderr: '))]
        for t in self.threads:
            t.start()

    def _pump(self, f, tag):
        for raw in iter(f.readline, b''):
            line = raw.decode(errors='replace').rstrip('\n')
            self.log.append(tag + line)
            if self.log_file:
                self.log_file.write(line + '\n')
                self.log_file.flush()
            if not tag:
                self.lines.put(line)
        if not tag:
            self.lines.put(None)    # EOF marker

    def tail(self, n=5):
        return ' | '.join(self.log[-n:])

    def expect(self, regex, timeout, partner=None):
        """Next stdout line matching regex (others are skipped); gives up
        early if this process or the partner exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if partner and partner.p.poll() is not None:
                    raise TestFailure('%s exited (rc=%s) while %s was '
                                      'expected to print /%s/: %s'
                                      % (partner.name, partner.p.returncode,
                                         self.name, regex, partner.tail()))
                if time.monotonic() > deadline:
                    raise Timeout('%s: no line matching /%s/ within %g s; '
                                  'last lines: %s'
                                  % (self.name, regex, timeout, self.tail()))
                continue
            if line is None:
                for t in self.threads:
                    t.join(1)
                raise TestFailure('%s exited (rc=%s) while waiting for /%s/: '
                                  '%s' % (self.name, self.p.wait(), regex,
                                          self.tail()))
            m = re.search(regex, line)
            if m:
                return m

    def drain(self):
        """Stdout lines that arrived and were not consumed yet."""
        out = []
        while not self.lines.empty():
            ln = self.lines.get_nowait()
            if ln is not None:
                out.append(ln)
        return out

    def stop(self, timeout=10, term=True):
        """End the process; returns its exit status (killed if it hangs)."""
        rc = stop(self.p, timeout, term)
        for t in self.threads:
            t.join(5)
        if self.log_file:
            self.log_file.close()
            self.log_file = None
        return rc
