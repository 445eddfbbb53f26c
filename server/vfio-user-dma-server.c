/*
 * vfio-user-dma-server: a standalone vfio-user server exposing a small PCI
 * DMA engine, used to exercise the client's DMA access modes.
 *
 * This file: command line, the UNIX socket, message framing and the
 * vfio-user commands that are not about DMA regions or the device model.
 * One client at a time; the server exits when that client goes away.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

/* How long we wait for the client to answer one of our DMA requests, and
 * for the rest of a message whose header has arrived. */
#define PEER_TIMEOUT_MS 10000

FILE *log_file;
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

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
static int wait_readable(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    for (;;) {
        int r = poll(&p, 1, timeout_ms);
        if (r > 0) {
            return 0;
        }
        if (r == 0) {
            return ETIMEDOUT;
        }
        if (errno != EINTR) {
            return errno;
        }
        if (stop_requested) {
            return EINTR;
        }
    }
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
    long long deadline = now_ms() + PEER_TIMEOUT_MS;

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
 * Receive one message.  timeout_ms applies to the first byte only (-1: wait
 * for ever).  Any error means the stream can no longer be trusted.
 */
static int recv_msg(struct conn *c, struct vu_msg *m, int timeout_ms)
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
    int err;

    memset(m, 0, sizeof(*m));
    err = wait_readable(c->sock, timeout_ms);
    if (err) {
        return err;
    }
    do {
        n = recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC);
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
        err = read_full(c->sock, (uint8_t *)&m->hdr + n, sizeof(m->hdr) - (size_t)n);
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
        err = read_full(c->sock, m->data, m->len);
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

static int send_msg(struct conn *c, const struct vu_hdr *hdr,
                    const void *payload, size_t len)
{
    struct iovec iov[2] = {
        { .iov_base = (void *)hdr, .iov_len = sizeof(*hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
    size_t left = sizeof(*hdr) + len;

    while (left > 0) {
        ssize_t n = sendmsg(c->sock, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
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

static void send_reply(struct conn *c, const struct vu_msg *req, int err,
                       const void *payload, size_t len)
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
    }
    h.size = (uint32_t)(sizeof(h) + len);
    if (send_msg(c, &h, payload, len)) {
        c->dead = true;
    }
}

/* ---- individual commands ---- */

static int handle_version(struct conn *c, struct vu_msg *m,
                          char *reply, size_t *reply_len)
{
    uint16_t major;
    size_t caps_len;
    uint64_t max_xfer = VU_OUR_MAX_XFER;    /* the spec's default */

    if (c->negotiated || m->len < 4) {
        return EINVAL;
    }
    memcpy(&major, m->data, 2);
    if (major != 0) {
        return ENOTSUP;
    }
    caps_len = strnlen((char *)m->data + 4, m->len - 4);
    if (caps_len > 0) {
        struct json_tokener *tok = json_tokener_new();
        struct json_object *root, *caps, *v;
        int err = 0;

        if (!tok) {
            return ENOMEM;
        }
        root = json_tokener_parse_ex(tok, (char *)m->data + 4, (int)caps_len);
        if (!root || json_tokener_get_error(tok) != json_tokener_success ||
            !json_object_is_type(root, json_type_object)) {
            fprintf(log_file, "error: client capabilities are not a JSON object\n");
            err = EINVAL;
        } else if (json_object_object_get_ex(root, "capabilities", &caps)) {
            if (!json_object_is_type(caps, json_type_object)) {
                err = EINVAL;
            } else if (json_object_object_get_ex(caps, "max_data_xfer_size", &v)) {
                int64_t x = json_object_get_int64(v);
                /* Must at least carry one page; the upper bound keeps our
                 * own buffers sane. */
                if (!json_object_is_type(v, json_type_int) ||
                    x < 4096 || x > 64 * 1024 * 1024) {
                    fprintf(log_file, "error: bad client max_data_xfer_size\n");
                    err = EINVAL;
                } else {
                    max_xfer = (uint64_t)x;
                }
            }
        }
        json_object_put(root);
        json_tokener_free(tok);
        if (err) {
            return err;
        }
    }
    c->peer_max_xfer = max_xfer;
    c->negotiated = true;

    /* major 0, minor 0, then our capabilities as a NUL-terminated string */
    memset(reply, 0, 4);
    int n = snprintf(reply + 4, 256,
                     "{\"capabilities\":{\"max_msg_fds\":%d,"
                     "\"max_data_xfer_size\":%u,\"pgsizes\":4096,"
                     "\"max_dma_maps\":1024}}", VU_MAX_FDS, VU_OUR_MAX_XFER);
    *reply_len = 4 + (size_t)n + 1;
    fprintf(log_file, "version: client max_data_xfer_size=%llu%s\n",
            (unsigned long long)max_xfer, c->legacy ? " (legacy server mode)" : "");
    return 0;
}

static int handle_region_info(struct vu_msg *m, uint32_t *r)
{
    uint32_t index;

    if (m->len < 32) {
        return EINVAL;
    }
    memcpy(&index, m->data + 8, 4);
    if (index >= DEV_NUM_REGIONS) {
        return EINVAL;
    }
    uint64_t size = dev_region_size(index);
    r[0] = 32;                                  /* argsz */
    r[1] = size ? 0x3 : 0;                      /* readable | writeable */
    r[2] = index;
    r[3] = 0;                                   /* no capabilities */
    memcpy(&r[4], &size, 8);
    memset(&r[6], 0, 8);                        /* offset: unused, no fds */
    return 0;
}

static int handle_irq_info(struct vu_msg *m, uint32_t *r)
{
    uint32_t index;

    if (m->len < 16) {
        return EINVAL;
    }
    memcpy(&index, m->data + 8, 4);
    if (index >= DEV_NUM_IRQS) {
        return EINVAL;
    }
    r[0] = 16;
    /* eventfd (1); INTx is maskable (2) and auto-masked (4); MSI and the
     * error notifier have a fixed vector count (8). */
    r[1] = index == DEV_IRQ_INTX ? 0x7 : (index == DEV_IRQ_MSI || index == DEV_IRQ_ERR) ? 0x9 : 0x1;
    r[2] = index;
    r[3] = (uint32_t)dev_irq_count(index);
    return 0;
}

static int handle_region_rw(struct vu_msg *m, bool write, uint8_t **reply,
                            size_t *reply_len)
{
    uint64_t offset;
    uint32_t region, count;

    if (m->len < 16) {
        return EINVAL;
    }
    memcpy(&offset, m->data, 8);
    memcpy(&region, m->data + 8, 4);
    memcpy(&count, m->data + 12, 4);
    if (region >= DEV_NUM_REGIONS || count > VU_OUR_MAX_XFER) {
        return EINVAL;
    }
    if (write) {
        if (m->len != 16 + (size_t)count) {
            return EINVAL;
        }
        int err = dev_region_write(region, offset, m->data + 16, count);
        if (err) {
            return err;
        }
        *reply = m->data;           /* echo offset/region/count */
        *reply_len = 16;
        return 0;
    }
    if (m->len != 16) {
        return EINVAL;
    }
    uint8_t *buf = malloc(16 + (size_t)count);
    if (!buf) {
        return ENOMEM;
    }
    memcpy(buf, m->data, 16);
    int err = dev_region_read(region, offset, buf + 16, count);
    if (err) {
        free(buf);
        return err;
    }
    *reply = buf;
    *reply_len = 16 + count;
    return 0;
}

/* Serve one client request (and send its reply). */
static void dispatch(struct conn *c, struct vu_msg *m)
{
    uint32_t small[16];
    char version_reply[300];
    uint8_t *reply = NULL, *owned = NULL;
    size_t reply_len = 0;
    int err;

    if ((m->hdr.flags & VU_FLAG_TYPE_MASK) != 0) {
        if ((m->hdr.flags & VU_FLAG_TYPE_MASK) == VU_FLAG_REPLY) {
            /* e.g. the answer to a DMA request that had timed out */
            fprintf(log_file, "warning: unexpected reply id %u command %u\n",
                    m->hdr.id, m->hdr.command);
        } else {
            fprintf(log_file, "error: bad message type 0x%x\n", m->hdr.flags);
            c->dead = c->broken = true;
        }
        return;
    }
    if (!c->negotiated && m->hdr.command != VU_VERSION) {
        fprintf(log_file, "error: command %u before VERSION\n", m->hdr.command);
        send_reply(c, m, EINVAL, NULL, 0);
        return;
    }
    if (m->nfds > 0 && m->hdr.command != VU_DMA_MAP &&
        m->hdr.command != VU_DEVICE_SET_IRQS) {
        send_reply(c, m, EINVAL, NULL, 0);
        return;
    }

    switch (m->hdr.command) {
    case VU_VERSION:
        err = handle_version(c, m, version_reply, &reply_len);
        reply = (uint8_t *)version_reply;
        break;
    case VU_DMA_MAP:
        err = dma_map(c, m);
        break;
    case VU_DMA_UNMAP:
        err = dma_unmap(c, m);
        reply = m->data;            /* echo the request's payload */
        reply_len = err ? 0 : m->len;
        break;
    case VU_DEVICE_GET_INFO:
        if (m->len < 16) {
            err = EINVAL;
            break;
        }
        small[0] = 16;
        small[1] = 0x3;             /* reset supported | PCI device */
        small[2] = DEV_NUM_REGIONS;
        small[3] = DEV_NUM_IRQS;
        reply = (uint8_t *)small;
        reply_len = 16;
        err = 0;
        break;
    case VU_DEVICE_GET_REGION_INFO:
        err = handle_region_info(m, small);
        reply = (uint8_t *)small;
        reply_len = 32;
        break;
    case VU_DEVICE_GET_IRQ_INFO:
        err = handle_irq_info(m, small);
        reply = (uint8_t *)small;
        reply_len = 16;
        break;
    case VU_DEVICE_SET_IRQS:
        err = dev_set_irqs(m);
        break;
    case VU_REGION_READ:
    case VU_REGION_WRITE:
        err = handle_region_rw(m, m->hdr.command == VU_REGION_WRITE,
                               &reply, &reply_len);
        if (!err && reply != m->data) {
            owned = reply;
        }
        break;
    case VU_DEVICE_RESET:
        dev_reset();
        err = 0;
        break;
    default:
        err = ENOSYS;
        break;
    }
    msg_close_fds(m);       /* whatever a handler did not keep */
    send_reply(c, m, err, reply, reply_len);
    free(owned);
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
    err = send_msg(c, &h, payload, len);
    if (err) {
        c->dead = true;
        return err;
    }
    for (;;) {
        struct vu_msg m;

        err = recv_msg(c, &m, PEER_TIMEOUT_MS);
        if (err == ETIMEDOUT) {
            fprintf(log_file, "error: no reply to command %u id %u within %d ms\n",
                    cmd, h.id, PEER_TIMEOUT_MS);
            return ETIMEDOUT;
        }
        if (err) {
            c->dead = true;
            c->broken = err != ECONNRESET;
            return err;
        }
        if ((m.hdr.flags & VU_FLAG_TYPE_MASK) == VU_FLAG_REPLY && m.hdr.id == h.id) {
            msg_close_fds(&m);
            if (m.hdr.command != cmd) {
                fprintf(log_file, "error: reply to id %u is for command %u, not %u\n",
                        h.id, m.hdr.command, cmd);
                msg_free(&m);
                c->dead = c->broken = true;
                return EPROTO;
            }
            if (m.hdr.flags & VU_FLAG_ERROR) {
                err = m.hdr.error ? (int)m.hdr.error : EIO;
                msg_free(&m);
                return err;
            }
            *reply = m;
            return 0;
        }
        /* The client may need our answer before it can answer us (its vCPU
         * can wait on a register read while holding its big lock), so serve
         * requests that arrive meanwhile. */
        c->depth++;
        dispatch(c, &m);
        c->depth--;
        msg_free(&m);
        if (c->dead) {
            return ECONNRESET;
        }
    }
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vfio-user-dma-server --socket PATH [--legacy] [--old-dma-layout]\n"
            "                            [--stats FILE] [--log FILE]\n"
            "  --socket PATH     UNIX socket to listen on (must not exist, or be a stale socket)\n"
            "  --legacy          act like a server from before the DMA access-mode revision\n"
            "  --old-dma-layout  DMA_READ/DMA_WRITE in the layout of unpatched QEMU 10.2.2\n"
            "                    (not the specification's; only for benchmarking that client)\n"
            "  --stats FILE      write the per-access-mode counters as JSON on exit\n"
            "  --log FILE        log here instead of standard error\n");
}

static int make_listener(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "error: socket path too long: %s\n", path);
        return -1;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "error: %s exists and is not a socket\n", path);
            return -1;
        }
        unlink(path);
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 1) < 0) {
        fprintf(stderr, "error: cannot listen on %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "legacy", no_argument, NULL, 'L' },
        { "old-dma-layout", no_argument, NULL, 'O' },
        { "stats", required_argument, NULL, 'S' },
        { "log", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock_path = NULL, *stats_path = NULL, *log_path = NULL;
    struct conn c = { .sock = -1, .next_id = 1, .peer_max_xfer = VU_OUR_MAX_XFER };
    struct sigaction sa = { .sa_handler = on_signal };
    int opt, lfd, status = 0;

    log_file = stderr;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's': sock_path = optarg; break;
        case 'L': c.legacy = true; break;
        case 'O': c.old_dma_layout = true; break;
        case 'S': stats_path = optarg; break;
        case 'l': log_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!sock_path || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (log_path && !(log_file = fopen(log_path, "a"))) {
        fprintf(stderr, "error: cannot open log %s: %s\n", log_path, strerror(errno));
        return 1;
    }
    setvbuf(log_file, NULL, _IOLBF, 0);

    /* No SA_RESTART: a signal must interrupt poll() so we can shut down. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    dev_init();
    lfd = make_listener(sock_path);
    if (lfd < 0) {
        return 1;
    }
    fprintf(log_file, "listening on %s%s%s\n", sock_path, c.legacy ? " (legacy)" : "",
            c.old_dma_layout ? " (old DMA message layout)" : "");

    if (wait_readable(lfd, -1) == 0) {
        c.sock = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    }
    close(lfd);
    unlink(sock_path);      /* one client only; nobody else may connect */
    if (c.sock < 0) {
        fprintf(log_file, "stopped before a client connected\n");
        return stop_requested ? 0 : 1;
    }
    fprintf(log_file, "client connected\n");

    while (!c.dead && !stop_requested) {
        struct vu_msg m;
        int err = recv_msg(&c, &m, -1);

        if (err) {
            if (err != ECONNRESET && err != EINTR) {
                fprintf(log_file, "error: connection: %s\n", strerror(err));
                c.broken = true;
            }
            break;
        }
        dispatch(&c, &m);
        msg_free(&m);
        /* A doorbell write queued a command: run it now that its write has
         * been answered, so the client is free to serve our DMA requests. */
        dev_run_pending(&c);
    }
    if (c.broken) {
        status = 1;     /* tell whoever runs us that the client misbehaved */
    }
    fprintf(log_file, "client gone, shutting down\n");
    close(c.sock);
    dma_unmap_all();
    dev_close_irqs();
    dev_print_stats(log_file);
    if (stats_path && dev_write_stats_json(stats_path)) {
        status = 1;
    }
    return status;
}
