"""2 MiB huge pages for tests that back guest RAM with hugetlb: reserved
for the test when running as root, given back afterwards."""

import os

NR = '/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages'
FREE = '/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages'
PAGE = 2 << 20


def _read(path):
    with open(path) as f:
        return int(f.read())


def _write(path, value):
    with open(path, 'w') as f:         # sysfs wants a plain write
        f.write('%d\n' % value)


class Reservation:
    """At least `pages` free 2 MiB huge pages while it lasts.  self.reason
    is None if they are there, else why not (for a skip message); release()
    gives back what this reservation added."""

    def __init__(self, pages):
        self.added = 0
        self.reason = None
        try:
            free = _read(FREE)
        except OSError:
            self.reason = 'no 2 MiB huge pages on this kernel (%s)' % FREE
            return
        if free >= pages:
            return
        if os.geteuid() != 0:
            self.reason = ('%d free 2 MiB huge pages, %d needed, and not root '
                           'to reserve them (echo N > %s)' % (free, pages, NR))
            return
        try:
            before = _read(NR)
            _write(NR, before + pages - free)
            self.added = _read(NR) - before
        except OSError as e:
            self.reason = 'cannot reserve huge pages: %s' % e
            return
        if _read(FREE) < pages:
            self.reason = ('the kernel gave only %d of %d huge pages'
                           % (_read(FREE), pages))
            self.release()

    def release(self):
        if self.added > 0:
            try:
                _write(NR, max(_read(NR) - self.added, 0))
            except OSError:
                pass
            self.added = 0
