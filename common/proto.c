/*
 * proto.c - the shoal wire protocol (docs/PROTOCOL.md): framing, receive
 * with validation, send, batches.
 *
 * Receiving always consumes every part of a multipart message, even a
 * malformed one, so that the next proto_recv starts at a message boundary.
 * Bodies are checked by a cheap pre-scan before msgpack_unpack sees them:
 * msgpack-c allocates a container's slots from the declared element count,
 * so a 5-byte body announcing 2^32 elements would otherwise make it try to
 * allocate ~100 GB.  The pre-scan refuses any container that claims more
 * elements than there are bytes left, which bounds the decode to about
 * sizeof(msgpack_object) bytes per body byte.
 */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mp.h"

/* Bits of proto_msg_t.inited: which members need releasing. */
#define PM_BODY 1
#define PM_ZONE 2

/* Batch bodies start with a reserved array32 header: 0xdd + u32 BE count. */
#define BATCH_HDR 5

void proto_hdr_encode(uint8_t *out, int type, unsigned flags)
{
    out[0] = PROTO_MAGIC0;
    out[1] = PROTO_MAGIC1;
    out[2] = PROTO_VERSION;
    out[3] = (uint8_t)type;
    out[4] = (uint8_t)(flags >> 8);
    out[5] = (uint8_t)flags;
    out[6] = 0;
    out[7] = 0;
}

int proto_hdr_decode(const void *buf, size_t len, proto_hdr_t *h)
{
    const uint8_t *b = buf;
    if (!b || len != PROTO_HDR_SIZE || b[0] != PROTO_MAGIC0 || b[1] != PROTO_MAGIC1) {
        errno = EBADMSG;
        return -1;
    }
    h->version = b[2];
    h->type = b[3];
    h->flags = (uint16_t)((b[4] << 8) | b[5]);
    if (h->version != PROTO_VERSION) {
        errno = EPROTONOSUPPORT;
        return -1;
    }
    return 0;
}

const char *proto_type_name(int type)
{
    switch (type) {
    case MSG_HELLO: return "HELLO";
    case MSG_WELCOME: return "WELCOME";
    case MSG_ERROR: return "ERROR";
    case MSG_HEARTBEAT: return "HEARTBEAT";
    case MSG_BYE: return "BYE";
    case MSG_SUBMIT: return "SUBMIT";
    case MSG_RESULT: return "RESULT";
    case MSG_RELEASE: return "RELEASE";
    case MSG_CANCEL: return "CANCEL";
    case MSG_UPLOAD_LIB: return "UPLOAD_LIB";
    case MSG_LIB_ACK: return "LIB_ACK";
    case MSG_STATUS: return "STATUS";
    case MSG_STATUS_REPLY: return "STATUS_REPLY";
    case MSG_COMPUTE: return "COMPUTE";
    case MSG_TASK_DONE: return "TASK_DONE";
    case MSG_WCANCEL: return "WCANCEL";
    case MSG_LIBRARY: return "LIBRARY";
    case MSG_SCATTER: return "SCATTER";
    case MSG_REFETCH: return "REFETCH";
    case MSG_FREE: return "FREE";
    case MSG_STEAL: return "STEAL";
    case MSG_STEAL_REPLY: return "STEAL_REPLY";
    case MSG_PAUSE: return "PAUSE";
    case MSG_GET: return "GET";
    case MSG_DATA: return "DATA";
    case MSG_PUT: return "PUT";
    case MSG_PUT_ACK: return "PUT_ACK";
    default: return "UNKNOWN";
    }
}

/* ---- body pre-scan ------------------------------------------------------ */

static inline uint32_t s_be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t s_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Check that buf holds exactly one well-formed MessagePack object and that
 * no container claims more elements than could possibly follow.  Iterative:
 * `pending` counts objects still expected; each container adds its element
 * count.  Since every object takes at least one byte, pending may never
 * exceed the bytes left.
 */
static int s_prescan(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (off >= len)
            return -1;
        uint8_t c = buf[off++];
        size_t skip = 0;   /* payload bytes after the type byte (and length) */
        uint64_t elems = 0; /* objects this one contains */
        size_t lenbytes = 0;

        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool */
        } else if ((c & 0xe0) == 0xa0) {
            skip = c & 0x1f;                    /* fixstr */
        } else if ((c & 0xf0) == 0x90) {
            elems = c & 0x0f;                   /* fixarray */
        } else if ((c & 0xf0) == 0x80) {
            elems = 2u * (c & 0x0f);            /* fixmap */
        } else {
            switch (c) {
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: case 0xca: skip = 4; break;
            case 0xcf: case 0xd3: case 0xcb: skip = 8; break;
            case 0xd4: skip = 2; break;          /* fixext 1: type + 1 */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xc4: case 0xd9: lenbytes = 1; break; /* bin8, str8 */
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xc7: lenbytes = 1; break;      /* ext8: len + type */
            case 0xc8: lenbytes = 2; break;
            case 0xc9: lenbytes = 4; break;
            case 0xdc: case 0xde: lenbytes = 2; break; /* array16, map16 */
            case 0xdd: case 0xdf: lenbytes = 4; break;
            default:
                return -1; /* 0xc1 is never used */
            }
            if (lenbytes) {
                if (len - off < lenbytes)
                    return -1;
                uint32_t n = lenbytes == 1 ? buf[off]
                           : lenbytes == 2 ? s_be16(buf + off) : s_be32(buf + off);
                off += lenbytes;
                if (c == 0xdc || c == 0xdd)
                    elems = n;
                else if (c == 0xde || c == 0xdf)
                    elems = 2ull * n;
                else if (c >= 0xc7 && c <= 0xc9)
                    skip = (size_t)n + 1; /* ext: type byte + data */
                else
                    skip = n;
            }
        }
        if (len - off < skip)
            return -1;
        off += skip;
        pending--;
        pending += elems;
        if (pending > len - off)
            return -1;
    }
    return off == len ? 0 : -1;
}

/* ---- receive ------------------------------------------------------------ */

static void s_msg_reset(proto_msg_t *m)
{
    m->inited = 0;
    m->ident_len = 0;
    m->srcfd = -1;
    m->nframes = 0;
    memset(&m->hdr, 0, sizeof m->hdr);
    m->body.type = MSGPACK_OBJECT_NIL;
}

void proto_msg_close(proto_msg_t *m)
{
    if (!m)
        return;
    if (m->inited & PM_BODY)
        zmq_msg_close(&m->body_frame);
    if (m->inited & PM_ZONE)
        msgpack_zone_destroy(&m->zone);
    for (size_t i = 0; i < m->nframes && i < PROTO_MAX_DATA_FRAMES; i++)
        zmq_msg_close(&m->frames[i]);
    m->nframes = 0;
    m->inited = 0;
    m->body.type = MSGPACK_OBJECT_NIL;
}

static int s_decode_body(proto_msg_t *m)
{
    size_t len = zmq_msg_size(&m->body_frame);
    const uint8_t *data = zmq_msg_data(&m->body_frame);
    if (len == 0) {
        m->body.type = MSGPACK_OBJECT_NIL;
        return 0;
    }
    if (s_prescan(data, len) < 0) {
        errno = EBADMSG;
        return -1;
    }
    /* Objects take 24 bytes each and at most one per body byte; size the
     * chunks so that a big batch needs few of them. */
    size_t chunk = len * 4;
    if (chunk < 1024)
        chunk = 1024;
    if (chunk > (1u << 20))
        chunk = 1u << 20;
    if (!msgpack_zone_init(&m->zone, chunk)) {
        errno = ENOMEM;
        return -1;
    }
    m->inited |= PM_ZONE;
    size_t off = 0;
    msgpack_unpack_return r =
        msgpack_unpack((const char *)data, len, &off, &m->zone, &m->body);
    /* EXTRA_BYTES (trailing data), CONTINUE (truncated) and PARSE_ERROR are
     * malformed input.  So is NOMEM in practice: msgpack-c reports nesting
     * deeper than its fixed parse stack (32 levels) that way, and the
     * pre-scan has already bounded the memory a legitimate body can use. */
    if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
        m->body.type = MSGPACK_OBJECT_NIL;
        errno = EBADMSG;
        return -1;
    }
    return 0;
}

static inline void s_take_srcfd(proto_msg_t *m, zmq_msg_t *part)
{
    if (m->srcfd < 0) {
        int fd = zmq_msg_get(part, ZMQ_SRCFD);
        if (fd >= 0)
            m->srcfd = fd;
    }
}

int proto_recv(void *sock, int router, proto_msg_t *m, int flags)
{
    enum { ST_IDENT, ST_HDR, ST_BODY, ST_DATA } st = router ? ST_IDENT : ST_HDR;
    zmq_msg_t scratch;
    int bad = 0;     /* errno to report once all parts are consumed */
    int fatal = 0;   /* a zmq error: the message could not be read */

    s_msg_reset(m);
    zmq_msg_init(&scratch);
    if (zmq_msg_recv(&scratch, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(&scratch);
        errno = e;
        return -1;
    }

    zmq_msg_t *part = &scratch;
    for (;;) {
        int more = zmq_msg_more(part);
        s_take_srcfd(m, part);
        switch (st) {
        case ST_IDENT: {
            size_t n = zmq_msg_size(part);
            if (n == 0 || n > PROTO_MAX_IDENT) {
                bad = EBADMSG;
            } else {
                memcpy(m->ident, zmq_msg_data(part), n);
                m->ident_len = n;
            }
            st = ST_HDR;
            break;
        }
        case ST_HDR:
            if (!bad && proto_hdr_decode(zmq_msg_data(part), zmq_msg_size(part), &m->hdr) < 0)
                bad = errno;
            st = ST_BODY;
            break;
        case ST_BODY:
            st = ST_DATA;
            break;
        case ST_DATA:
            if (part == &scratch && !bad)
                bad = EBADMSG; /* more than PROTO_MAX_DATA_FRAMES */
            break;
        }
        if (part == &scratch)
            zmq_msg_close(&scratch);
        if (!more)
            break;

        /* Pick where the next part goes: the body and data frames are kept
         * (zero-copy: the decoded body points into its frame), the rest is
         * looked at and dropped. */
        if (!bad && st == ST_BODY) {
            part = &m->body_frame;
            m->inited |= PM_BODY;
        } else if (!bad && st == ST_DATA && m->nframes < PROTO_MAX_DATA_FRAMES) {
            part = &m->frames[m->nframes++];
        } else {
            part = &scratch;
        }
        zmq_msg_init(part);
        int rc;
        /* The remaining parts of a multipart are already here (zmq delivers
         * messages atomically), so a blocking receive does not wait. */
        while ((rc = zmq_msg_recv(part, sock, 0)) < 0 && errno == EINTR)
            ;
        if (rc < 0) {
            fatal = errno;
            if (part == &scratch)
                zmq_msg_close(&scratch);
            break;
        }
    }

    if (fatal) {
        proto_msg_close(m);
        errno = fatal;
        return -1;
    }
    if (!bad && st < ST_BODY)
        bad = EBADMSG; /* no header frame */
    if (!bad && (m->inited & PM_BODY) && s_decode_body(m) < 0)
        bad = errno;
    if (bad) {
        /* Keep ident and hdr so the caller can answer; drop the payload. */
        proto_msg_close(m);
        errno = bad;
        return -1;
    }
    return 0;
}

const void *proto_frame_data(proto_msg_t *m, size_t i)
{
    if (!m || i >= m->nframes)
        return NULL;
    return zmq_msg_data(&m->frames[i]);
}

size_t proto_frame_size(proto_msg_t *m, size_t i)
{
    if (!m || i >= m->nframes)
        return 0;
    return zmq_msg_size(&m->frames[i]);
}

/* ---- send --------------------------------------------------------------- */

static int s_send(void *sock, const void *buf, size_t len, int more)
{
    int flags = more ? ZMQ_SNDMORE : 0;
    for (;;) {
        if (zmq_send(sock, buf, len, flags) >= 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int s_send_msg(void *sock, zmq_msg_t *msg, int more)
{
    int flags = more ? ZMQ_SNDMORE : 0;
    for (;;) {
        if (zmq_msg_send(msg, sock, flags) >= 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* Give back zero-copy frames that were never handed to zmq, so free_fn is
 * called exactly once whatever happens. */
static void s_release_frames(const proto_frame_t *frames, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++)
        if (frames[i].free_fn)
            frames[i].free_fn((void *)frames[i].data, frames[i].hint);
}

/*
 * Send [ident] header, then the body (body_msg if not NULL, else the bytes),
 * then the data frames.  On a ROUTER with ZMQ_ROUTER_MANDATORY an unknown
 * peer fails on the first part and zmq discards nothing else because nothing
 * else was queued, so the socket stays clean for the next message.  Later
 * parts cannot fail for lack of room: high-water marks are off.
 */
static int s_send_all(void *sock, const void *ident, size_t ident_len, int type,
                      zmq_msg_t *body_msg, const void *body, size_t len,
                      const proto_frame_t *frames, size_t nframes)
{
    uint8_t hdr[PROTO_HDR_SIZE];
    size_t sent_frames = 0;
    int e;

    if (nframes > PROTO_MAX_DATA_FRAMES || (nframes && !frames) || type < 0 || type > 255 ||
        (ident && (ident_len == 0 || ident_len > PROTO_MAX_IDENT))) {
        e = EINVAL;
        goto error;
    }
    proto_hdr_encode(hdr, type, 0);
    if (ident && s_send(sock, ident, ident_len, 1) < 0) {
        e = errno;
        goto error;
    }
    if (s_send(sock, hdr, sizeof hdr, 1) < 0) {
        e = errno;
        goto error;
    }
    if (body_msg) {
        if (s_send_msg(sock, body_msg, nframes > 0) < 0) {
            e = errno;
            goto error;
        }
    } else {
        static const uint8_t nil = 0xc0;
        if (!body || len == 0) {
            body = &nil;
            len = 1;
        }
        if (s_send(sock, body, len, nframes > 0) < 0) {
            e = errno;
            goto error;
        }
    }
    for (size_t i = 0; i < nframes; i++) {
        int more = i + 1 < nframes;
        const proto_frame_t *f = &frames[i];
        if (f->free_fn) {
            zmq_msg_t msg;
            /* zmq_msg_init_data takes ownership only on success. */
            if (zmq_msg_init_data(&msg, (void *)f->data, f->len, f->free_fn, f->hint) < 0) {
                e = errno;
                goto error;
            }
            sent_frames = i + 1;
            if (s_send_msg(sock, &msg, more) < 0) {
                e = errno;
                zmq_msg_close(&msg); /* calls free_fn */
                goto error;
            }
        } else {
            sent_frames = i + 1;
            if (s_send(sock, f->data, f->len, more) < 0) {
                e = errno;
                goto error;
            }
        }
    }
    return 0;
error:
    if (body_msg)
        zmq_msg_close(body_msg);
    if (frames)
        s_release_frames(frames, sent_frames, nframes <= PROTO_MAX_DATA_FRAMES ? nframes : 0);
    errno = e;
    return -1;
}

int proto_send(void *sock, const void *ident, size_t ident_len, int type, const void *body,
               size_t len, const proto_frame_t *frames, size_t nframes)
{
    return s_send_all(sock, ident, ident_len, type, NULL, body, len, frames, nframes);
}

int proto_send_error(void *sock, const void *ident, size_t ident_len, int code,
                     const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0)
        text[0] = '\0';

    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    int rc = -1;
    if (msgpack_pack_map(&pk, 2) || mp_pack_cstr(&pk, "code") ||
        msgpack_pack_int(&pk, code) || mp_pack_cstr(&pk, "message") ||
        mp_pack_cstr(&pk, text)) {
        errno = ENOMEM;
        goto out;
    }
    rc = proto_send(sock, ident, ident_len, MSG_ERROR, sbuf.data, sbuf.size, NULL, 0);
out:;
    int e = errno;
    msgpack_sbuffer_destroy(&sbuf);
    errno = e;
    return rc;
}

/* ---- batches ------------------------------------------------------------ */

void proto_batch_init(proto_batch_t *b, int type)
{
    msgpack_sbuffer_init(&b->sbuf);
    msgpack_packer_init(&b->pk, &b->sbuf, msgpack_sbuffer_write);
    b->count = 0;
    b->type = type;
}

msgpack_packer *proto_batch_add(proto_batch_t *b)
{
    /* Re-point the packer: the batch may have been moved (e.g. inside a
     * realloc'd array) since it was initialised. */
    b->pk.data = &b->sbuf;
    if (b->sbuf.size == 0) {
        static const char reserve[BATCH_HDR] = {(char)0xdd, 0, 0, 0, 0};
        /* Items are packed without checking each write (msgpack packers
         * cannot be unwound), so an allocation failure here cannot be
         * reported usefully: the batch would be corrupt.  Fail loudly. */
        if (msgpack_sbuffer_write(&b->sbuf, reserve, BATCH_HDR) != 0) {
            log_err("out of memory starting a %s batch", proto_type_name(b->type));
            abort();
        }
    }
    b->count++;
    return &b->pk;
}

static void s_free_buf(void *data, void *hint)
{
    (void)hint;
    free(data);
}

int proto_batch_send(proto_batch_t *b, void *sock, const void *ident, size_t ident_len)
{
    if (b->count == 0)
        return 0;
    uint8_t *d = (uint8_t *)b->sbuf.data;
    d[0] = 0xdd;
    d[1] = (uint8_t)(b->count >> 24);
    d[2] = (uint8_t)(b->count >> 16);
    d[3] = (uint8_t)(b->count >> 8);
    d[4] = (uint8_t)b->count;

    size_t size = b->sbuf.size;
    char *data = msgpack_sbuffer_release(&b->sbuf);
    b->count = 0;
    b->pk.data = &b->sbuf;

    /* Hand the buffer to zmq: no copy of a possibly multi-megabyte body.
     * Whether the send works or not the batch is now empty: a peer that is
     * unreachable is gone, and its items with it. */
    zmq_msg_t msg;
    if (zmq_msg_init_data(&msg, data, size, s_free_buf, NULL) < 0) {
        int e = errno;
        free(data);
        errno = e;
        return -1;
    }
    return s_send_all(sock, ident, ident_len, b->type, &msg, NULL, 0, NULL, 0);
}

void proto_batch_destroy(proto_batch_t *b)
{
    if (!b)
        return;
    msgpack_sbuffer_destroy(&b->sbuf);
    msgpack_sbuffer_init(&b->sbuf);
    b->count = 0;
}

int proto_sock_setup(void *sock, int64_t max_frame)
{
    int zero = 0, one = 1, linger = 1000;
    if (max_frame <= 0)
        max_frame = PROTO_DEFAULT_MAX_FRAME;
    if (zmq_setsockopt(sock, ZMQ_SNDHWM, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(sock, ZMQ_RCVHWM, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame) < 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_setsockopt(sock, ZMQ_TCP_KEEPALIVE, &one, sizeof one) < 0 ||
        zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one) < 0)
        return -1;
    /* A ROUTER must report unknown peers (EHOSTUNREACH) instead of silently
     * dropping what is sent to them. */
    int type = 0;
    size_t tlen = sizeof type;
    if (zmq_getsockopt(sock, ZMQ_TYPE, &type, &tlen) < 0)
        return -1;
    if (type == ZMQ_ROUTER &&
        zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0)
        return -1;
    return 0;
}
