/*
 * vfio-user transport (transport.h): framing, fds, replies, and calls to
 * the client, whose replies the main loop hands back to the waiting task;
 * the twin socket, when VERSION made one, carries those calls.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "transport.h"

volatile sig_atomic_t conn_stop_requested;

void msg_close_fds(struct vu_msg *m)
{
    for (int i = 0; i < m->nfds; i++) {
        if (m->fds[i] >= 0) {
            close(m->fds[i]);
            m->fds[i] = -1;
        }
    }
    m->nfds = 0;
}

void msg_free(struct vu_msg *m)
{
    msg_close_fds(m);
    free(m->data);
    m->data = NULL;
    m->len = 0;
}

/* Wait until the socket is readable; 0, ETIMEDOUT, EINTR (on a stop
 * request) or another errno. */
/*
 * poll() until one of p[0..n) is ready: 0, or ETIMEDOUT, EINTR (stop
 * requested), another errno.
 */
static int poll_ready(struct pollfd *p, nfds_t n, int timeout_ms)
{
    for (;;) {
        int r = poll(p, n, timeout_ms);
        if (r > 0) {
            return 0;
        }
        if (r == 0) {
            return ETIMEDOUT;
        }
        if (errno != EINTR) {
            return errno;
        }
        if (conn_stop_requested) {
            return EINTR;
        }
    }
}

int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return poll_ready(&p, 1, timeout_ms);
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/*
 * Read the rest of a message.  The deadline covers the whole message, not
 * each piece: a client that lost track of message boundaries keeps sending
 * small requests, which must not keep a bogus huge message alive.
 */
static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    long long deadline = now_ms() + VU_PEER_TIMEOUT_MS;

    while (len > 0) {
        long long left = deadline - now_ms();
        int err = left > 0 ? wait_readable(fd, (int)left) : ETIMEDOUT;
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

/*
 * Wait until the main socket or the twin socket is readable and pick one:
 * when both are, the one not read last time, so that a client answering
 * our DMA at once cannot starve its own requests (or the reverse).  0 with
 * *fd set, or ETIMEDOUT, EINTR (stop requested), another errno.
 */
static int wait_either(struct conn *c, int timeout_ms, int *fd)
{
    struct pollfd p[2] = {
        { .fd = c->sock, .events = POLLIN },
        { .fd = c->twin, .events = POLLIN },
    };
    nfds_t n = c->twin >= 0 ? 2 : 1;
    int err = poll_ready(p, n, timeout_ms);
    bool main_ready = p[0].revents != 0;
    bool twin_ready = n == 2 && p[1].revents != 0;
    bool take_twin = twin_ready && (!main_ready || !c->twin_read_last);

    if (err) {
        return err;
    }
    c->twin_read_last = take_twin;
    *fd = take_twin ? c->twin : c->sock;
    return 0;
}

/*
 * Receive one message from either socket.  timeout_ms applies to the first
 * byte only (-1: wait for ever).  Any error means the stream can no longer
 * be trusted.
 */
int recv_msg(struct conn *c, struct vu_msg *m, int timeout_ms)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { .iov_base = &m->hdr, .iov_len = sizeof(m->hdr) };
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
    };
    ssize_t n;
    int err, fd = -1;

    memset(m, 0, sizeof(*m));
    err = wait_either(c, timeout_ms, &fd);
    if (err) {
        return err;
    }
    m->on_twin = fd == c->twin;
    do {
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
        return ECONNRESET;
    }
    if (n < 0) {
        return errno;
    }

    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            if (m->nfds < VU_MAX_FDS) {
                m->fds[m->nfds++] = fd;
            } else {
                close(fd);
            }
        }
    }
    if (mh.msg_flags & MSG_CTRUNC) {
        fprintf(log_file, "error: client sent more than %d fds in one message\n",
                VU_MAX_FDS);
        msg_close_fds(m);
        return EPROTO;
    }

    if (n < (ssize_t)sizeof(m->hdr)) {
        err = read_full(fd, (uint8_t *)&m->hdr + n, sizeof(m->hdr) - (size_t)n);
        if (err) {
            msg_close_fds(m);
            return err == ETIMEDOUT ? EPROTO : err;
        }
    }
    if (m->hdr.size < sizeof(m->hdr) || m->hdr.size > sizeof(m->hdr) + VU_MAX_MSG) {
        fprintf(log_file, "error: bad message size %u (command %u)\n",
                m->hdr.size, m->hdr.command);
        msg_close_fds(m);
        return EPROTO;
    }
    m->len = m->hdr.size - sizeof(m->hdr);
    if (m->len > 0) {
        m->data = malloc(m->len);
        if (!m->data) {
            msg_close_fds(m);
            return ENOMEM;
        }
        err = read_full(fd, m->data, m->len);
        if (err) {
            /* The stream cannot be resynchronised after a partial message. */
            fprintf(log_file, "error: message (command %u id %u) of %u bytes "
                    "incomplete: %s\n", m->hdr.command, m->hdr.id, m->hdr.size,
                    strerror(err));
            msg_free(m);
            return err == ETIMEDOUT ? EPROTO : err;
        }
    }
    return 0;
}

/* Send one message on sock; fd (if >= 0) goes with its first byte. */
static int send_msg(int sock, const struct vu_hdr *hdr,
                    const void *payload, size_t len, int fd)
{
    struct iovec iov[2] = {
        { .iov_base = (void *)hdr, .iov_len = sizeof(*hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
    size_t left = sizeof(*hdr) + len;

    if (fd >= 0) {
        struct cmsghdr *cm;

        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof(ctl.buf);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    }
    while (left > 0) {
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        /* The fd went with the bytes sent; not again with the rest. */
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
        left -= (size_t)n;
        /* Partial write: advance the iovecs. */
        while (n > 0 && mh.msg_iovlen > 0) {
            size_t step = (size_t)n < mh.msg_iov->iov_len ? (size_t)n
                                                           : mh.msg_iov->iov_len;
            mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + step;
            mh.msg_iov->iov_len -= step;
            n -= (ssize_t)step;
            if (mh.msg_iov->iov_len == 0) {
                mh.msg_iov++;
                mh.msg_iovlen--;
            }
        }
    }
    return 0;
}

void send_reply(struct conn *c, const struct vu_msg *req, int err,
                const void *payload, size_t len)
{
    send_reply_fd(c, req, err, payload, len, -1);
}

void send_reply_fd(struct conn *c, const struct vu_msg *req, int err,
                   const void *payload, size_t len, int fd)
{
    struct vu_hdr h = {
        .id = req->hdr.id,
        .command = req->hdr.command,
        .flags = VU_FLAG_REPLY | (err ? VU_FLAG_ERROR : 0),
        .error = (uint32_t)err,
    };

    if (req->hdr.flags & VU_FLAG_NO_REPLY) {
        if (err) {
            fprintf(log_file, "warning: posted command %u failed: %s\n",
                    req->hdr.command, strerror(err));
        }
        return;
    }
    if (err) {
        len = 0;
        fd = -1;
    }
    h.size = (uint32_t)(sizeof(h) + len);
    if (send_msg(c->sock, &h, payload, len, fd)) {
        c->dead = true;
    }
}

int conn_open_twin(struct conn *c)
{
    int sv[2];

    if (c->twin >= 0) {
        return -EEXIST;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        return -errno;
    }
    c->twin = sv[0];
    return sv[1];
}

int conn_call(struct conn *c, uint16_t cmd, const void *payload, size_t len,
              struct vu_msg *reply)
{
    struct vu_hdr h = {
        .id = c->next_id++,
        .command = cmd,
        .size = (uint32_t)(sizeof(h) + len),
        .flags = 0,
    };
    int err;

    if (c->dead) {
        return ECONNRESET;
    }
    /* With the twin socket our requests never meet the client's on one
     * stream: each side has a socket on which it alone asks. */
    err = send_msg(c->twin >= 0 ? c->twin : c->sock, &h, payload, len, -1);
    if (err) {
        c->dead = true;
        return err;
    }
    c->waiting = true;
    c->call_id = h.id;
    c->call_cmd = cmd;
    c->call_deadline = now_ms() + VU_PEER_TIMEOUT_MS;
    /* The client may need our answer before it can answer us (its vCPU can
     * wait on a register read while holding its big lock): the main loop
     * serves its requests until conn_take_reply has our reply. */
    swapcontext(&c->task_ctx, &c->loop_ctx);
    *reply = c->call_reply;
    return c->call_err;
}

int conn_wait_ms(const struct conn *c)
{
    long long left = c->call_deadline - now_ms();

    return !c->waiting ? -1 : left > 0 ? (int)left : 0;
}

bool conn_take_reply(struct conn *c, struct vu_msg *m, int err)
{
    if (!c->waiting || (!err && ((m->hdr.flags & VU_FLAG_TYPE_MASK) != VU_FLAG_REPLY ||
                                 m->hdr.id != c->call_id ||
                                 m->on_twin != (c->twin >= 0)))) {
        /* No call in flight, or a request to serve; with the twin socket,
         * our reply comes on it and on nothing else. */
        return false;
    }
    c->waiting = false;
    memset(&c->call_reply, 0, sizeof(c->call_reply));
    if (err == ETIMEDOUT) {
        fprintf(log_file, "error: no reply to command %u id %u within %d ms\n",
                c->call_cmd, c->call_id, VU_PEER_TIMEOUT_MS);
    } else if (err) {
        c->dead = true;
        c->broken |= err != ECONNRESET;
    } else if (m->hdr.command != c->call_cmd) {
        fprintf(log_file, "error: reply to id %u is for command %u, not %u\n",
                c->call_id, m->hdr.command, c->call_cmd);
        msg_free(m);
        c->dead = c->broken = true;
        err = EPROTO;
    } else if (m->hdr.flags & VU_FLAG_ERROR) {
        err = m->hdr.error ? (int)m->hdr.error : EIO;
        msg_free(m);
    } else {
        msg_close_fds(m);
        c->call_reply = *m;
    }
    c->call_err = err;
    return true;
}
