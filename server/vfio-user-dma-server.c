/*
 * vfio-user-dma-server: a standalone vfio-user server exposing a small PCI
 * DMA engine, used to exercise the client's DMA access modes.
 *
 * Layers, each calling only the ones below it:
 *   vfio-user-dma-server.c  command line, socket, main loop, statistics
 *   commands.c              parses each request, replies
 *   device.c, bench.c       the DMA engine and its benchmark loop
 *   regions.c               DMA region table, mmap and file I/O access
 *   msgdma.c, memguard.c    message DMA; memcpy that survives SIGBUS
 *   transport.c             framing, fds, calls to the client
 * The main loop alone reads the sockets (the client's and, once VERSION
 * set it up, the twin socket for our DMA requests' replies) and serves
 * requests; a device command runs as a task that it suspends and resumes
 * (run_task).
 *
 * One client at a time; the server exits when that client goes away.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "commands.h"
#include "device.h"
#include "log.h"
#include "regions.h"
#include "transport.h"

static struct conn c = { .sock = -1, .twin = -1, .next_id = 1,
                         .peer_max_xfer = VU_OUR_MAX_XFER };
static bool task_running;

static void task_main(void)
{
    dev_run_pending(&c);
    task_running = false;   /* and back to c.loop_ctx */
}

/* Start the device's queued command as the task, or resume the task after
 * conn_take_reply; returns when it has finished or waits for a reply. */
static void run_task(void)
{
    static char stack[256 * 1024];

    if (!task_running) {
        getcontext(&c.task_ctx);
        c.task_ctx.uc_stack.ss_sp = stack;
        c.task_ctx.uc_stack.ss_size = sizeof(stack);
        c.task_ctx.uc_link = &c.loop_ctx;
        makecontext(&c.task_ctx, task_main, 0);
        task_running = true;
    }
    swapcontext(&c.loop_ctx, &c.task_ctx);
}

static void on_signal(int sig)
{
    (void)sig;
    conn_stop_requested = 1;
}

static void print_stats(FILE *f)
{
    const struct dma_stats *s = dma_stats();
    struct dev_counters dc = dev_counters();

    fprintf(f, "stats");
    for (int m = 0; m < MODE_COUNT; m++) {
        fprintf(f, " %s_bytes=%llu %s_ops=%llu", dma_mode_name(m),
                (unsigned long long)s->bytes[m], dma_mode_name(m),
                (unsigned long long)s->ops[m]);
    }
    fprintf(f, " commands=%llu errors=%llu irqs=%llu\n",
            (unsigned long long)dc.commands, (unsigned long long)dc.errors,
            (unsigned long long)dc.irqs);
}

static int write_stats_json(const char *path)
{
    const struct dma_stats *s = dma_stats();
    struct dev_counters dc = dev_counters();
    FILE *f = fopen(path, "w");

    if (!f) {
        fprintf(log_file, "error: cannot write %s\n", path);
        return -1;
    }
    fprintf(f, "{");
    for (int m = 0; m < MODE_COUNT; m++) {
        fprintf(f, "\"%s\": {\"bytes\": %llu, \"ops\": %llu}, ", dma_mode_name(m),
                (unsigned long long)s->bytes[m], (unsigned long long)s->ops[m]);
    }
    fprintf(f, "\"commands\": %llu, \"errors\": %llu, \"irqs\": %llu}\n",
            (unsigned long long)dc.commands, (unsigned long long)dc.errors,
            (unsigned long long)dc.irqs);
    return fclose(f) ? -1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vfio-user-dma-server --socket PATH [--legacy] [--baseline-dma-layout]\n"
            "                            [--no-twin-socket] [--stats FILE] [--log FILE]\n"
            "  --socket PATH    UNIX socket to listen on (must not exist, or be a stale socket)\n"
            "  --legacy         act like a server from before the DMA access-mode revision\n"
            "  --baseline-dma-layout\n"
            "                   DMA_READ/DMA_WRITE in the layout of the baseline, unpatched\n"
            "                   QEMU 10.2.2 (not the specification's; for benchmarking it)\n"
            "  --no-twin-socket decline the client's twin-socket offer: our DMA requests\n"
            "                   and its replies share the one socket with its requests\n"
            "  --stats FILE     write the per-access-mode counters as JSON on exit\n"
            "  --log FILE       log here instead of standard error\n");
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
        { "baseline-dma-layout", no_argument, NULL, 'O' },
        { "no-twin-socket", no_argument, NULL, 'T' },
        { "stats", required_argument, NULL, 'S' },
        { "log", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock_path = NULL, *stats_path = NULL, *log_path = NULL;
    struct sigaction sa = { .sa_handler = on_signal };
    int opt, lfd, status = 0;

    log_file = stderr;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's': sock_path = optarg; break;
        case 'L': c.legacy = true; break;
        case 'O': c.baseline_dma_layout = true; break;
        case 'T': c.no_twin = true; break;
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
    fprintf(log_file, "listening on %s%s%s%s\n", sock_path, c.legacy ? " (legacy)" : "",
            c.baseline_dma_layout ? " (baseline DMA message layout)" : "",
            c.no_twin ? " (no twin socket)" : "");

    if (wait_readable(lfd, -1) == 0) {
        c.sock = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    }
    close(lfd);
    unlink(sock_path);      /* one client only; nobody else may connect */
    if (c.sock < 0) {
        fprintf(log_file, "stopped before a client connected\n");
        return conn_stop_requested ? 0 : 1;
    }
    fprintf(log_file, "client connected\n");

    while (!c.dead && !conn_stop_requested) {
        struct vu_msg m;
        int err, wait = conn_wait_ms(&c);

        /* A doorbell write queued a command: run it now that its write has
         * been answered, so the client is free to serve our DMA requests. */
        if (!task_running && dev_has_pending()) {
            run_task();
            continue;
        }
        /* A client that keeps sending requests does not stretch the wait. */
        err = wait == 0 ? ETIMEDOUT : recv_msg(&c, &m, wait);
        if (conn_take_reply(&c, &m, err)) {
            run_task();
            continue;
        }
        if (err) {
            if (err != ECONNRESET && err != EINTR) {
                fprintf(log_file, "error: connection: %s\n", strerror(err));
                c.broken = true;
            }
            break;
        }
        dispatch(&c, &m);
        msg_free(&m);
    }
    /* A task still waiting for the client learns that it has gone. */
    if (conn_take_reply(&c, NULL, ECONNRESET)) {
        run_task();
    }
    if (c.broken) {
        status = 1;     /* tell whoever runs us that the client misbehaved */
    }
    fprintf(log_file, "client gone, shutting down\n");
    close(c.sock);
    if (c.twin >= 0) {
        close(c.twin);
    }
    region_remove_all(true);
    dev_close_irqs();
    print_stats(log_file);
    if (stats_path && write_stats_json(stats_path)) {
        status = 1;
    }
    return status;
}
