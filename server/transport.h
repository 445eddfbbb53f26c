/*
 * vfio-user transport: message framing on the UNIX socket, fds passed
 * along, and calls from the server to the client (DMA_READ/DMA_WRITE),
 * on the twin socket once VERSION has set one up.  Knows nothing about
 * what the messages mean.
 */
#ifndef SERVER_TRANSPORT_H
#define SERVER_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <ucontext.h>

/* Message header (little-endian; x86-64 only, so plain structs). */
struct vu_hdr {
    uint16_t id;
    uint16_t command;
    uint32_t size;          /* whole message, header included */
    uint32_t flags;
    uint32_t error;         /* errno of a failed request, in replies */
};
_Static_assert(sizeof(struct vu_hdr) == 16, "header layout");

#define VU_FLAG_TYPE_MASK   0xfu
#define VU_FLAG_REPLY       0x1u
#define VU_FLAG_NO_REPLY    0x10u
#define VU_FLAG_ERROR       0x20u

/* Most fds one message may carry; more means a confused peer. */
#define VU_MAX_FDS          8
/* What we tell the client it may send us in one data transfer. */
#define VU_OUR_MAX_XFER     (1024u * 1024u)
/* Largest payload we accept: a full data transfer plus its small header. */
#define VU_MAX_MSG          (VU_OUR_MAX_XFER + 64u)
/* How long we wait for the client to answer one of our requests, and for
 * the rest of a message whose header has arrived. */
#define VU_PEER_TIMEOUT_MS  10000

struct vu_msg {
    struct vu_hdr hdr;
    uint8_t *data;          /* payload, hdr.size - 16 bytes */
    size_t len;
    int fds[VU_MAX_FDS];
    int nfds;
    bool on_twin;           /* it came on the twin socket */
};

/*
 * One client connection.  Its device task (a command that moves data
 * through DMA_READ/DMA_WRITE) runs on a stack of its own: conn_call sends
 * the request and switches back to loop_ctx, the main loop, which stays
 * the only reader of the socket; the main loop switches to task_ctx again
 * once conn_take_reply has the answer (docs/server.md, "Source layout").
 */
struct conn {
    int sock;
    /* The server's end of the twin socket (docs/server.md, "Twin socket"):
     * our DMA requests and the client's replies to them; -1 without. */
    int twin;
    bool twin_read_last;    /* recv_msg's turn when both are readable */
    bool dead;              /* protocol broken or peer gone: stop serving */
    bool broken;            /* the client violated the protocol */
    uint16_t next_id;
    ucontext_t loop_ctx, task_ctx;
    /* The task's request in flight, and how it ended. */
    bool waiting;
    uint16_t call_id, call_cmd;
    long long call_deadline;    /* CLOCK_MONOTONIC ms */
    int call_err;
    struct vu_msg call_reply;
    /* Set by VERSION: the client's max_data_xfer_size. */
    bool negotiated;
    uint64_t peer_max_xfer;
    /* Options from the command line. */
    bool legacy;            /* behave like a pre-revision server */
    bool baseline_dma_layout;   /* DMA_READ/WRITE as QEMU 10.2.2 lays them out */
    bool no_twin;           /* decline the client's twin-socket offer */
};

/* Set by a signal handler: waits give up with EINTR. */
extern volatile sig_atomic_t conn_stop_requested;

/* Wait until fd is readable; 0, ETIMEDOUT, EINTR (stop requested) or an
 * errno.  timeout_ms -1: no limit. */
int wait_readable(int fd, int timeout_ms);

/* Receive one message from the main socket or the twin socket (m->on_twin
 * says which); timeout_ms applies to its first byte only.  Any error means
 * the stream can no longer be trusted. */
int recv_msg(struct conn *c, struct vu_msg *m, int timeout_ms);

/* Reply to a client request (nothing for posted requests); a failed send
 * marks the connection dead.  send_reply_fd also passes fd (if >= 0). */
void send_reply(struct conn *c, const struct vu_msg *req, int err,
                const void *payload, size_t len);
void send_reply_fd(struct conn *c, const struct vu_msg *req, int err,
                   const void *payload, size_t len, int fd);

/* Make the twin socket: c->twin gets our end, the return value (or -errno)
 * is the client's end, for the VERSION reply; the caller closes it once
 * sent. */
int conn_open_twin(struct conn *c);

/*
 * From the task: send a server->client request (on the twin socket if there
 * is one), let the main loop run
 * until the reply is there or VU_PEER_TIMEOUT_MS have passed, and return 0
 * with *reply filled (free it with msg_free), or a positive errno.
 */
int conn_call(struct conn *c, uint16_t cmd, const void *payload, size_t len,
              struct vu_msg *reply);
/* For the main loop: how long recv_msg may wait (-1: no call in flight). */
int conn_wait_ms(const struct conn *c);
/*
 * For the main loop, after recv_msg returned err (0: m holds a message):
 * true if that ends the task's call (its reply, a timeout, a broken
 * connection), which then owns m; the main loop must resume the task.
 */
bool conn_take_reply(struct conn *c, struct vu_msg *m, int err);

void msg_close_fds(struct vu_msg *m);
void msg_free(struct vu_msg *m);

#endif
