/*
 * The command layer (commands.h): every vfio-user request the server
 * serves, parsed here and handed to the region table (regions.h) or the
 * device (device.h) with typed arguments.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "device.h"
#include "log.h"
#include "protocol.h"
#include "regions.h"

/*
 * The client's "twin_socket" capability: 1 offered, 0 not (absent, or
 * "supported" false or absent), -EINVAL malformed.
 */
static int twin_offered(struct json_object *caps)
{
    struct json_object *twin, *v;

    if (!json_object_object_get_ex(caps, "twin_socket", &twin)) {
        return 0;
    }
    if (!json_object_is_type(twin, json_type_object)) {
        return -EINVAL;
    }
    if (!json_object_object_get_ex(twin, "supported", &v)) {
        return 0;
    }
    if (!json_object_is_type(v, json_type_boolean)) {
        return -EINVAL;
    }
    return json_object_get_boolean(v) ? 1 : 0;
}

/*
 * VERSION.  If the client offers the twin socket and we were not told to
 * decline, *twin_fd gets the client's end of a new twin socket, to go with
 * the reply as its fd 0 (the caller closes it after sending).
 */
static int handle_version(struct conn *c, struct vu_msg *m,
                          char *reply, size_t *reply_len, int *twin_fd)
{
    uint16_t major;
    size_t caps_len;
    uint64_t max_xfer = VU_OUR_MAX_XFER;    /* the spec's default */
    int offered = 0;
    const char *twin_caps = "";

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
            if (!err && (offered = twin_offered(caps)) < 0) {
                fprintf(log_file, "error: bad client twin_socket capability\n");
                err = EINVAL;
            }
        }
        json_object_put(root);
        json_tokener_free(tok);
        if (err) {
            return err;
        }
    }
    if (offered && !c->no_twin) {
        *twin_fd = conn_open_twin(c);
        if (*twin_fd < 0) {
            fprintf(log_file, "error: cannot make the twin socket: %s\n",
                    strerror(-*twin_fd));
            return -*twin_fd;
        }
        twin_caps = ",\"twin_socket\":{\"supported\":true,\"fd_index\":0}";
    } else if (offered) {
        twin_caps = ",\"twin_socket\":{\"supported\":false}";
    }
    c->peer_max_xfer = max_xfer;
    c->negotiated = true;

    /* major 0, minor 0, then our capabilities as a NUL-terminated string */
    memset(reply, 0, 4);
    int n = snprintf(reply + 4, 256,
                     "{\"capabilities\":{\"max_msg_fds\":%d,"
                     "\"max_data_xfer_size\":%u,\"pgsizes\":4096,"
                     "\"max_dma_maps\":1024%s}}", VU_MAX_FDS, VU_OUR_MAX_XFER,
                     twin_caps);
    *reply_len = 4 + (size_t)n + 1;
    fprintf(log_file, "version: client max_data_xfer_size=%llu twin-socket=%s%s\n",
            (unsigned long long)max_xfer,
            !offered ? "not-offered" : c->twin >= 0 ? "on" : "declined",
            c->legacy ? " (legacy server mode)" : "");
    return 0;
}

static int handle_dma_map(struct conn *c, struct vu_msg *m)
{
    struct vfio_user_dma_map req;
    int fd = m->nfds == 1 ? m->fds[0] : -1;
    uint32_t modes = VFIO_USER_DMA_MAP_FLAG_MMAP | VFIO_USER_DMA_MAP_FLAG_FILE_IO;
    uint32_t prot = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    enum dma_mode mode;
    int err;

    if (m->len < sizeof(req) || m->nfds > 1) {
        return EINVAL;
    }
    memcpy(&req, m->data, sizeof(req));
    if (req.argsz < sizeof(req)) {
        return EINVAL;
    }
    /* Which flag bits this server understands. */
    if (req.flags & ~(prot | (c->legacy ? 0 : modes))) {
        fprintf(log_file, "dma-map refused iova=0x%llx: unknown flags 0x%x\n",
                (unsigned long long)req.addr, req.flags);
        return EINVAL;
    }
    if ((req.flags & modes) == modes) {
        fprintf(log_file, "dma-map refused iova=0x%llx: two access modes\n",
                (unsigned long long)req.addr);
        return EINVAL;
    }
    if ((req.flags & modes) && fd < 0) {
        fprintf(log_file, "dma-map refused iova=0x%llx: access mode needs an fd\n",
                (unsigned long long)req.addr);
        return EINVAL;
    }
    if (req.flags & VFIO_USER_DMA_MAP_FLAG_FILE_IO) {
        mode = MODE_FILE_IO;
    } else if (fd >= 0) {
        mode = MODE_MMAP;       /* explicit, or the pre-revision default */
    } else {
        mode = MODE_MESSAGE;
    }
    /* VFIO_DMA_MAP_FLAG_READ/WRITE are DMA_PROT_READ/WRITE */
    err = region_add(req.addr, req.size, req.flags & prot, mode, fd, req.offset);
    if (!err && mode == MODE_FILE_IO) {
        m->fds[0] = -1;         /* the region keeps it */
    }
    return err;
}

static int handle_dma_unmap(struct vu_msg *m)
{
    struct vfio_user_dma_unmap req;

    if (m->len < sizeof(req)) {
        return EINVAL;
    }
    memcpy(&req, m->data, sizeof(req));
    if (req.argsz < sizeof(req) || (req.flags & ~VFIO_DMA_UNMAP_FLAG_ALL)) {
        return EINVAL;      /* dirty-page bitmaps are not supported */
    }
    if (req.flags & VFIO_DMA_UNMAP_FLAG_ALL) {
        if (req.addr || req.size) {
            return EINVAL;
        }
        region_remove_all(false);
        return 0;
    }
    return region_remove_range(req.addr, req.size);
}

static int handle_device_info(struct vu_msg *m, struct vfio_device_info *r)
{
    if (m->len < 16) {
        return EINVAL;
    }
    r->argsz = 16;          /* without cap_offset, which we do not use */
    r->flags = VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_PCI;
    r->num_regions = VFIO_PCI_NUM_REGIONS;
    r->num_irqs = VFIO_PCI_NUM_IRQS;
    return 0;
}

static int handle_region_info(struct vu_msg *m, struct vfio_region_info *r)
{
    struct vfio_region_info req;

    if (m->len < sizeof(req)) {
        return EINVAL;
    }
    memcpy(&req, m->data, sizeof(req));
    if (req.index >= VFIO_PCI_NUM_REGIONS) {
        return EINVAL;
    }
    uint64_t size = dev_region_size(req.index);
    *r = (struct vfio_region_info){
        .argsz = sizeof(*r),
        .flags = size ? VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE : 0,
        .index = req.index,
        .size = size,       /* offset 0, no capabilities, no fds */
    };
    return 0;
}

static int handle_irq_info(struct vu_msg *m, struct vfio_irq_info *r)
{
    struct vfio_irq_info req;

    if (m->len < sizeof(req)) {
        return EINVAL;
    }
    memcpy(&req, m->data, sizeof(req));
    if (req.index >= VFIO_PCI_NUM_IRQS) {
        return EINVAL;
    }
    *r = (struct vfio_irq_info){ .argsz = sizeof(*r), .index = req.index,
                                 .count = dev_irq_count(req.index) };
    /* INTx is maskable and auto-masked; MSI and the error notifier have a
     * fixed vector count. */
    r->flags = VFIO_IRQ_INFO_EVENTFD;
    if (req.index == VFIO_PCI_INTX_IRQ_INDEX) {
        r->flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    } else if (req.index == VFIO_PCI_MSI_IRQ_INDEX || req.index == VFIO_PCI_ERR_IRQ_INDEX) {
        r->flags |= VFIO_IRQ_INFO_NORESIZE;
    }
    return 0;
}

static int handle_set_irqs(struct vu_msg *m)
{
    struct vfio_irq_set req;
    uint32_t data, action, n;

    if (m->len < sizeof(req)) {
        return EINVAL;
    }
    memcpy(&req, m->data, sizeof(req));
    data = req.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    action = req.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    if (req.argsz < sizeof(req) ||
        (req.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)) ||
        req.index >= VFIO_PCI_NUM_IRQS ||
        (data != VFIO_IRQ_SET_DATA_NONE && data != VFIO_IRQ_SET_DATA_BOOL &&
         data != VFIO_IRQ_SET_DATA_EVENTFD) ||
        (action != VFIO_IRQ_SET_ACTION_MASK && action != VFIO_IRQ_SET_ACTION_UNMASK &&
         action != VFIO_IRQ_SET_ACTION_TRIGGER)) {
        return EINVAL;
    }
    /* TRIGGER with no data and count 0 switches the whole index off. */
    if (action == VFIO_IRQ_SET_ACTION_TRIGGER && data == VFIO_IRQ_SET_DATA_NONE &&
        req.count == 0) {
        dev_irq_set_eventfd(req.index, -1);
        return 0;
    }
    n = dev_irq_count(req.index);
    if (req.start > n || req.count > n - req.start || req.count == 0) {
        return EINVAL;
    }
    /* From here on the index has exactly one vector: start 0, count 1. */
    if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
        if (action != VFIO_IRQ_SET_ACTION_TRIGGER || m->nfds > 1) {
            return EINVAL;
        }
        dev_irq_set_eventfd(req.index, m->nfds ? m->fds[0] : -1);
        if (m->nfds) {
            m->fds[0] = -1;     /* the device keeps it */
        }
        return 0;
    }
    if (data == VFIO_IRQ_SET_DATA_BOOL) {
        if (m->len < sizeof(req) + (size_t)req.count) {
            return EINVAL;
        }
        if (!m->data[sizeof(req)]) {
            return 0;
        }
    }
    if (action == VFIO_IRQ_SET_ACTION_TRIGGER) {
        dev_irq_trigger(req.index);
        return 0;
    }
    return dev_irq_mask(req.index, action == VFIO_IRQ_SET_ACTION_MASK);
}

static int handle_region_rw(struct vu_msg *m, bool write, uint8_t **reply,
                            size_t *reply_len)
{
    struct vfio_user_region_access req;

    if (m->len < sizeof(req)) {
        return EINVAL;
    }
    memcpy(&req, m->data, sizeof(req));
    if (req.region >= VFIO_PCI_NUM_REGIONS || req.count > VU_OUR_MAX_XFER) {
        return EINVAL;
    }
    if (write) {
        if (m->len != sizeof(req) + (size_t)req.count) {
            return EINVAL;
        }
        int err = dev_region_rw(req.region, req.offset, m->data + sizeof(req),
                                req.count, true);
        if (err) {
            return err;
        }
        *reply = m->data;           /* echo offset/region/count */
        *reply_len = sizeof(req);
        return 0;
    }
    if (m->len != sizeof(req)) {
        return EINVAL;
    }
    uint8_t *buf = malloc(sizeof(req) + (size_t)req.count);
    if (!buf) {
        return ENOMEM;
    }
    memcpy(buf, &req, sizeof(req));
    int err = dev_region_rw(req.region, req.offset, buf + sizeof(req), req.count, false);
    if (err) {
        free(buf);
        return err;
    }
    *reply = buf;
    *reply_len = sizeof(req) + req.count;
    return 0;
}

void dispatch(struct conn *c, struct vu_msg *m)
{
    union {
        struct vfio_device_info device;
        struct vfio_region_info region;
        struct vfio_irq_info irq;
    } info;
    char version_reply[340];
    uint8_t *reply = NULL, *owned = NULL;
    size_t reply_len = 0;
    int err, reply_fd = -1;

    if (m->on_twin && (m->hdr.flags & VU_FLAG_TYPE_MASK) != VU_FLAG_REPLY) {
        /* The twin socket is ours to ask on: the client only answers there. */
        fprintf(log_file, "error: command %u sent on the twin socket\n",
                m->hdr.command);
        c->dead = c->broken = true;
        return;
    }
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
    if (!c->negotiated && m->hdr.command != VFIO_USER_VERSION) {
        fprintf(log_file, "error: command %u before VERSION\n", m->hdr.command);
        send_reply(c, m, EINVAL, NULL, 0);
        return;
    }
    if (m->nfds > 0 && m->hdr.command != VFIO_USER_DMA_MAP &&
        m->hdr.command != VFIO_USER_DEVICE_SET_IRQS) {
        send_reply(c, m, EINVAL, NULL, 0);
        return;
    }

    switch (m->hdr.command) {
    case VFIO_USER_VERSION:
        err = handle_version(c, m, version_reply, &reply_len, &reply_fd);
        reply = (uint8_t *)version_reply;
        break;
    case VFIO_USER_DMA_MAP:
        err = handle_dma_map(c, m);
        break;
    case VFIO_USER_DMA_UNMAP:
        err = handle_dma_unmap(m);
        reply = m->data;            /* echo the request's payload */
        reply_len = err ? 0 : m->len;
        break;
    case VFIO_USER_DEVICE_GET_INFO:
        err = handle_device_info(m, &info.device);
        reply = (uint8_t *)&info.device;
        reply_len = 16;
        break;
    case VFIO_USER_DEVICE_GET_REGION_INFO:
        err = handle_region_info(m, &info.region);
        reply = (uint8_t *)&info.region;
        reply_len = sizeof(info.region);
        break;
    case VFIO_USER_DEVICE_GET_IRQ_INFO:
        err = handle_irq_info(m, &info.irq);
        reply = (uint8_t *)&info.irq;
        reply_len = sizeof(info.irq);
        break;
    case VFIO_USER_DEVICE_SET_IRQS:
        err = handle_set_irqs(m);
        break;
    case VFIO_USER_REGION_READ:
    case VFIO_USER_REGION_WRITE:
        err = handle_region_rw(m, m->hdr.command == VFIO_USER_REGION_WRITE,
                               &reply, &reply_len);
        if (!err && reply != m->data) {
            owned = reply;
        }
        break;
    case VFIO_USER_DEVICE_RESET:
        dev_reset();
        err = 0;
        break;
    default:
        err = ENOSYS;
        break;
    }
    msg_close_fds(m);       /* whatever a handler did not keep */
    send_reply_fd(c, m, err, reply, reply_len, reply_fd);
    if (reply_fd >= 0) {
        close(reply_fd);    /* the client has its own copy now */
    }
    free(owned);
}
