"""TAP output for the test scripts: unittest cases run by pycotap, like
QEMU's tests/functional.  A case is named by its description, not by its
method; what a case prints and why it failed follow its result line as
'# ' comments."""

import signal
import sys
import unittest

import pycotap

import procs

__unittest = True


class Case(unittest.TestCase):
    """A test case whose TAP name is its docstring's first line (or
    self.name, for generated cases)."""

    name = None
    # what assert*() raise, so that check() failures are reported alike
    # (without the frames of tests/lib)
    failureException = procs.TestFailure

    def on_failure(self, fn):
        """Call fn (which prints evidence) if this case fails."""
        self._evidence.append(fn)

    def run(self, result=None):
        self._evidence = []
        method = getattr(self, self._testMethodName)

        def with_evidence():
            try:
                method()
            except BaseException:
                for fn in self._evidence:
                    fn()
                raise
        setattr(self, self._testMethodName, with_evidence)
        return super().run(result)

    def id(self):
        if self.name:
            return self.name
        doc = self._testMethodDoc
        return doc.strip().splitlines()[0] if doc else self._testMethodName

    __str__ = id


class FunctionCase(unittest.FunctionTestCase):
    """A case made of a name and a function (for tables of cases)."""

    failureException = procs.TestFailure

    def __init__(self, name, fn, setUp=None, tearDown=None):
        super().__init__(fn, setUp=setUp, tearDown=tearDown)
        self.name = name

    def id(self):
        return self.name

    __str__ = id


def ordered(*classes):
    """The cases of each class in the order they are defined (not sorted
    by name), classes in the order given."""
    suite = unittest.TestSuite()
    for cls in classes:
        names = [n for n in cls.__dict__ if n.startswith('test')]
        suite.addTests(cls(n) for n in names)
    return suite


class _Result(pycotap.TAPTestResult):
    """pycotap's result, knowing which case is running."""

    current = None
    reported = False

    def startTest(self, test):
        super().startTest(test)
        self.current = test

    def stopTest(self, test):
        super().stopTest(test)
        self.current = None

    def interrupted(self):
        """Report the running case as failed, with its output so far."""
        self._reset_streams()
        sys.stdout.flush()
        if self.current is not None and not self.reported:
            self.reported = True
            self.print_raw('not ok %d %s\n' % (self.testsRun, self.current.id()))
            for ln in self.message.getvalue().splitlines()[-40:]:
                self.print_raw('# %s\n' % ln)
            self.print_raw('# interrupted (SIGTERM: the time limit, or Ctrl-C)\n')


def run(suite):
    """Run a suite, print TAP on stdout; exit status 0 if all passed.  A
    SIGTERM (the runner's time limit) fails the running case, with its
    output so far, and ends the run (children are stopped by procs)."""
    sys.stdout.flush()
    log = pycotap.LogMode.LogToDiagnostics
    result = _Result(sys.stdout, sys.stderr, log, log)

    def on_sigterm(sig, frame):
        result.interrupted()        # now: cleaning up may take a while
        raise KeyboardInterrupt('stopped by SIGTERM')
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        suite(result)
    except KeyboardInterrupt:
        result.interrupted()
        return 1
    result.printErrors()
    return 0 if result.wasSuccessful() else 1


class Sequence:
    """Cases that share peers (a server, a QEMU) and run in order.  Once
    one leaves the peers unusable (a timeout, gone() true, or an
    unexpected exception), the later ones fail as not run instead of each
    waiting for its own timeout.  show() prints the evidence of a failure
    (e.g. the peers' last log lines)."""

    def __init__(self, gone=lambda: False, show=lambda: None):
        self.broken = None
        self.gone, self.show = gone, show

    def case(self, name, fn, always=False, breaks=False):
        """A case running fn; always: run even when the peers are broken
        (e.g. shutting them down); breaks: a failure of this one makes
        the peers unusable (e.g. their setup)."""
        def run():
            if self.broken and not always:
                raise AssertionError('not run: ' + self.broken)
            try:
                fn()
            except AssertionError as e:
                if breaks or isinstance(e, procs.Timeout) or self.gone():
                    self.broken = '"%s" failed' % name
                self.show()
                raise
            except Exception:
                self.broken = 'unexpected error in "%s"' % name
                self.show()
                raise
        return FunctionCase(name, run)

    def cases(self, table):
        return [self.case(name, fn) for name, fn in table]
