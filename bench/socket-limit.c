/*
 * socket-limit: the machine's limit for message DMA in bench/run-bench.py.
 * Two processes on a UNIX stream socket play the vfio-user server and
 * client of a DMA_READ/DMA_WRITE exchange, with nobody in between: the
 * parent sends the requests and times each round trip the way the
 * server's benchmark command times a message transfer (server/bench.c),
 * checks included and untimed; the child answers each request at once,
 * from the thread that read it.  Prints one JSON object per size and
 * direction, like memcpy-bench.
 *
 *   socket-limit ITERS SIZE...
 *
 * Messages: a 16-byte vfio-user header, then address (u64) and count (u64);
 * a DMA_WRITE request and a DMA_READ reply carry the data after them, a
 * DMA_WRITE reply echoes address and count only (the specification's
 * layout, as the patched client sends it).
 *
 * "read": the parent asks for SIZE bytes of the child's "guest memory" into
 * a poisoned buffer and compares them with a first, untimed read.  "write":
 * the parent sends its buffer with the repetition number folded in, then
 * reads it back (untimed) and compares.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-timing.h"

enum { DMA_READ = 11, DMA_WRITE = 12 };
#define FLAG_REPLY      0x1u
#define FLAG_ERROR      0x20u
#define GUEST_BASE      0x1000000ull    /* "guest address" of child memory */
#define WAIT_MS         10000           /* a peer silent this long is gone */

struct hdr {
    uint16_t id;
    uint16_t command;
    uint32_t size;          /* whole message, header included */
    uint32_t flags;
    uint32_t error;
};
_Static_assert(sizeof(struct hdr) == 16, "vfio-user header");

struct dma {
    uint64_t addr;
    uint64_t count;
};

/* Wait until fd is readable; 0, or an errno (ETIMEDOUT after ms). */
static int wait_in(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    for (;;) {
        int r = poll(&p, 1, ms);
        if (r > 0) {
            return 0;
        }
        if (r == 0) {
            return ETIMEDOUT;
        }
        if (errno != EINTR) {
            return errno;
        }
    }
}

/* Read exactly len bytes, waiting for each piece; ECONNRESET on EOF. */
static int read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        int err = wait_in(fd, WAIT_MS);
        if (err) {
            return err;
        }
        ssize_t n = read(fd, p, len);
        if (n == 0) {
            return ECONNRESET;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Send header, fixed part and data (any of the last two may be empty). */
static int send_parts(int fd, struct hdr *h, const void *fixed, size_t flen,
                      const void *data, size_t dlen)
{
    struct iovec iov[3] = {
        { .iov_base = h, .iov_len = sizeof(*h) },
        { .iov_base = (void *)fixed, .iov_len = flen },
        { .iov_base = (void *)data, .iov_len = dlen },
    };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 3 };

    while (mh.msg_iovlen > 0) {
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* SO_SNDTIMEO ran out: the peer stopped reading */
            return errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
        }
        while (mh.msg_iovlen > 0 && (size_t)n >= mh.msg_iov->iov_len) {
            n -= (ssize_t)mh.msg_iov->iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen > 0) {
            mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + n;
            mh.msg_iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/*
 * The client's side: answer every request until the parent closes the
 * socket.  Each message is read into a buffer of its own and each reply
 * built in one, as the client does; only the hand-over between its threads
 * is missing.  Returns the exit status.
 */
static int answer(int fd, uint8_t *guest, size_t guest_len)
{
    for (;;) {
        struct hdr h;
        struct dma d;
        uint8_t *msg, *reply;
        size_t plen;
        int err = wait_in(fd, 60 * 1000);

        if (!err) {
            ssize_t n = read(fd, &h, sizeof(h));
            err = n == 0 ? ECONNRESET : n < 0 ? errno
                  : n < (ssize_t)sizeof(h) ? read_all(fd, (uint8_t *)&h + n,
                                                      sizeof(h) - (size_t)n)
                  : 0;
        }
        if (err == ECONNRESET) {
            return 0;           /* the parent is done */
        }
        if (err) {
            fprintf(stderr, "socket-limit: client: %s\n", strerror(err));
            return 1;
        }
        if (h.size < sizeof(h) + sizeof(d) ||
            h.size > sizeof(h) + sizeof(d) + guest_len ||
            (h.command != DMA_READ && h.command != DMA_WRITE)) {
            fprintf(stderr, "socket-limit: client: bad request (command %u, "
                    "%u bytes)\n", h.command, h.size);
            return 1;
        }
        plen = h.size - sizeof(h);
        msg = malloc(plen);
        if (!msg || read_all(fd, msg, plen)) {
            fprintf(stderr, "socket-limit: client: request incomplete\n");
            return 1;
        }
        memcpy(&d, msg, sizeof(d));
        if (d.addr < GUEST_BASE || d.count > guest_len ||
            d.addr - GUEST_BASE > guest_len - d.count ||
            (h.command == DMA_WRITE && plen != sizeof(d) + d.count)) {
            fprintf(stderr, "socket-limit: client: request outside memory\n");
            return 1;
        }
        uint8_t *mem = guest + (d.addr - GUEST_BASE);
        size_t rlen = sizeof(d) + (h.command == DMA_READ ? d.count : 0);

        reply = malloc(sizeof(h) + rlen);
        if (!reply) {
            fprintf(stderr, "socket-limit: client: out of memory\n");
            return 1;
        }
        if (h.command == DMA_WRITE) {
            memcpy(mem, msg + sizeof(d), d.count);
        } else {
            memcpy(reply + sizeof(h) + sizeof(d), mem, d.count);
        }
        h.flags = FLAG_REPLY;
        h.error = 0;
        h.size = (uint32_t)(sizeof(h) + rlen);
        memcpy(reply, &h, sizeof(h));
        memcpy(reply + sizeof(h), &d, sizeof(d));
        err = send_parts(fd, (struct hdr *)reply, reply + sizeof(h), rlen,
                         NULL, 0);
        free(msg);
        free(reply);
        if (err) {
            fprintf(stderr, "socket-limit: client: send: %s\n", strerror(err));
            return 1;
        }
    }
}

/*
 * The server's side of one transfer, step by step as msg_dma() and the
 * transport do it: request built in a fresh buffer and sent with one
 * sendmsg, wait, header, payload into a fresh buffer, checks, copy out.
 */
static uint16_t next_id;

static int xfer(int fd, uint64_t addr, uint8_t *buf, uint64_t len, int write)
{
    struct hdr h = {
        .id = next_id++,
        .command = write ? DMA_WRITE : DMA_READ,
        .size = (uint32_t)(sizeof(h) + sizeof(struct dma) + (write ? len : 0)),
    };
    struct hdr r;
    struct dma d = { addr, len }, got;
    size_t want = sizeof(d) + (write ? 0 : len);
    uint8_t *req = malloc(sizeof(d) + (write ? len : 0)), *payload;
    int err;

    if (!req) {
        return ENOMEM;
    }
    memcpy(req, &d, sizeof(d));
    if (write) {
        memcpy(req + sizeof(d), buf, len);
    }
    err = send_parts(fd, &h, req, h.size - sizeof(h), NULL, 0);
    free(req);
    if (!err) {
        err = read_all(fd, &r, sizeof(r));
    }
    if (err) {
        return err;
    }
    if (r.id != h.id || r.command != h.command ||
        (r.flags & 0xf) != FLAG_REPLY || (r.flags & FLAG_ERROR) ||
        r.size != sizeof(r) + want) {
        fprintf(stderr, "socket-limit: unexpected reply (id %u command %u "
                "flags 0x%x size %u)\n", r.id, r.command, r.flags, r.size);
        return EPROTO;
    }
    payload = malloc(want);
    if (!payload) {
        return ENOMEM;
    }
    err = read_all(fd, payload, want);
    if (!err) {
        memcpy(&got, payload, sizeof(got));
        if (got.addr != addr || got.count != len) {
            err = EPROTO;
        } else if (!write) {
            memcpy(buf, payload + sizeof(got), len);
        }
    }
    free(payload);
    return err;
}

/* Device buffers 16 bytes past a page boundary, as in the server. */
static uint8_t *alloc_at(size_t len, size_t skew, void **base)
{
    if (posix_memalign(base, 4096, len + 4096)) {
        return NULL;
    }
    return (uint8_t *)*base + skew;
}

/*
 * What the child's guest memory holds, kept by the parent: reads are
 * compared with a first read, as in the server, and that first read with
 * this, so a client that consistently answers wrong is caught too.
 */
static uint8_t *model;

static void model_init(size_t len)
{
    for (size_t i = 0; i < len; i++) {
        model[i] = (uint8_t)(i * 13 + 1);
    }
}

/* One size and direction, timed like server/bench.c; 0 or an errno. */
static int run(int fd, unsigned long iters, size_t len, int write)
{
    void *b_dev = NULL, *b_chk = NULL;
    uint8_t *buf = alloc_at(len, 16, &b_dev);
    uint8_t *check = alloc_at(len, 16, &b_chk);
    uint64_t *lat = calloc(iters, sizeof(*lat)), total = 0;
    uint64_t addr = GUEST_BASE;
    int err = 0;

    if (!buf || !check || !lat) {
        return ENOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(i * 7 + 3);
    }
    if (!write) {
        err = xfer(fd, addr, check, len, 0);    /* the reference */
        if (!err && memcmp(check, model, len)) {
            err = EIO;
        }
    }
    for (unsigned long i = 0; i < iters && !err; i++) {
        uint64_t t0, t1;

        if (write) {
            stamp(buf, len, i + 1);
            t0 = now_ns();
            err = xfer(fd, addr, buf, len, 1);
            t1 = now_ns();
            if (!err) {
                err = xfer(fd, addr, check, len, 0);
            }
            if (!err && memcmp(check, buf, len)) {
                err = EIO;
            }
            if (i + 1 == iters) {
                memcpy(model, buf, len);        /* what the guest keeps */
            }
            stamp(buf, len, i + 1);
        } else {
            memset(buf, 0x5a ^ (int)(i & 0xff), len);
            t0 = now_ns();
            err = xfer(fd, addr, buf, len, 0);
            t1 = now_ns();
            if (!err && memcmp(check, buf, len)) {
                err = EIO;
            }
        }
        lat[i] = t1 - t0;
        total += t1 - t0;
    }
    if (!err) {
        qsort(lat, iters, sizeof(*lat), cmp_u64);
        printf("{\"dir\": \"%s\", \"len\": %zu, \"iters\": %lu, "
               "\"total_ns\": %llu, \"p50_ns\": %llu, \"p99_ns\": %llu}\n",
               write ? "write" : "read", len, iters,
               (unsigned long long)total,
               (unsigned long long)percentile(lat, iters, 50),
               (unsigned long long)percentile(lat, iters, 99));
        fflush(stdout);
    }
    free(b_dev);
    free(b_chk);
    free(lat);
    return err;
}

int main(int argc, char **argv)
{
    unsigned long iters;
    size_t sizes[16], max_len = 0;
    int nsizes = argc - 2, sv[2], status, err = 0;
    char *end;
    pid_t pid, got;

    if (argc < 3 || nsizes > 16) {
        fprintf(stderr, "usage: socket-limit ITERS SIZE... (at most 16 sizes)\n");
        return 2;
    }
    errno = 0;
    iters = strtoul(argv[1], &end, 0);
    if (errno || *end || iters == 0 || iters > 10000000) {
        fprintf(stderr, "socket-limit: bad iteration count %s\n", argv[1]);
        return 2;
    }
    for (int i = 0; i < nsizes; i++) {
        errno = 0;
        unsigned long long len = strtoull(argv[i + 2], &end, 0);
        /* one message per transfer, as the server's limit allows */
        if (errno || *end || len == 0 || len > (1ull << 20)) {
            fprintf(stderr, "socket-limit: bad size %s (1 .. 1048576)\n",
                    argv[i + 2]);
            return 2;
        }
        sizes[i] = (size_t)len;
        max_len = sizes[i] > max_len ? sizes[i] : max_len;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        perror("socket-limit: socketpair");
        return 1;
    }
    /* a send to a peer that stopped reading must not block for ever */
    struct timeval send_limit = { .tv_sec = WAIT_MS / 1000 };
    for (int i = 0; i < 2; i++) {
        if (setsockopt(sv[i], SOL_SOCKET, SO_SNDTIMEO, &send_limit,
                       sizeof(send_limit))) {
            perror("socket-limit: SO_SNDTIMEO");
            return 1;
        }
    }
    pid = fork();
    if (pid < 0) {
        perror("socket-limit: fork");
        return 1;
    }
    if (pid == 0) {
        void *base;
        uint8_t *guest;

        close(sv[0]);
        /* guest memory: page-aligned, like a mapping of guest RAM */
        guest = alloc_at(max_len, 0, &base);
        if (!guest) {
            _exit(1);
        }
        model = guest;
        model_init(max_len);
        _exit(answer(sv[1], guest, max_len));
    }
    close(sv[1]);
    model = malloc(max_len);
    if (!model) {
        fprintf(stderr, "socket-limit: out of memory\n");
        return 1;
    }
    model_init(max_len);
    for (int i = 0; i < nsizes && !err; i++) {
        err = run(sv[0], iters, sizes[i], 0);
        if (!err) {
            err = run(sv[0], iters, sizes[i], 1);
        }
        if (err) {
            fprintf(stderr, "socket-limit: %zu bytes: %s\n", sizes[i],
                    err == EIO ? "moved wrong data" : strerror(err));
        }
    }
    close(sv[0]);           /* the child sees EOF and exits */
    /* give it WAIT_MS to do so, then end it */
    for (int waited = 0; (got = waitpid(pid, &status, WNOHANG)) == 0;
         waited += 10) {
        if (waited >= WAIT_MS) {
            kill(pid, SIGKILL);
        }
        usleep(10000);
    }
    if (got != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "socket-limit: the answering process failed\n");
        err = err ? err : EPROTO;
    }
    return err ? 1 : 0;
}
