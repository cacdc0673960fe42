/*
 * proto.c - the shoal wire protocol (docs/PROTOCOL.md): framing, receive
 * with validation, send, batches.
 *
 * Receiving always consumes every part of a multipart message, even a
 * malformed one, so that the next proto_recv starts at a message boundary.
 * Bodies are decoded by our own one-pass decoder (s_decode) into the same
 * msgpack_object trees msgpack_unpack builds, validating as it goes.  It
 * replaced a pre-scan followed by msgpack_unpack: msgpack-c allocates a
 * container's slots from the declared element count, so a 5-byte body
 * announcing 2^32 elements would make it try to allocate ~100 GB, and the
 * pre-scan that prevented that walked every body a second time.  The
 * decoder refuses any container that claims more elements than there are
 * bytes left before allocating anything for it, which bounds a decode to
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
    case MSG_HAVE: return "HAVE";
    case MSG_GET: return "GET";
    case MSG_DATA: return "DATA";
    case MSG_PUT: return "PUT";
    case MSG_PUT_ACK: return "PUT_ACK";
    default: return "UNKNOWN";
    }
}

/* ---- body decoding ------------------------------------------------------- */

static inline uint32_t s_be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static inline uint32_t s_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t s_be64(const uint8_t *p)
{
    return (uint64_t)s_be32(p) << 32 | s_be32(p + 4);
}

/* Containers nested deeper than this are refused (msgpack-c's own parser
 * stops at the same depth; no shoal message comes close). */
#define DECODE_MAX_DEPTH 32

/* A container being filled: where its next element goes, how many are left
 * (a map of n pairs is filled as 2n objects: msgpack_object_kv is a key
 * object followed by a value object). */
typedef struct dframe {
    msgpack_object *next;
    size_t left;
} dframe_t;

/*
 * Decode buf[0..len), which must be exactly one MessagePack object, into
 * *root, allocating containers' element arrays from z.  Strings, binaries
 * and extension data point into buf (which must outlive the objects).
 * One pass, no recursion.  The same checks the former pre-scan made keep
 * the allocation in proportion to the input: every object takes at least
 * one byte, so the objects still expected may never outnumber the bytes
 * left; a container that claims more is refused before anything is
 * allocated for it, and the element arrays of a body of n bytes take at
 * most n * sizeof(msgpack_object) bytes.
 *
 * The container being filled is kept in locals (next, left); the ones
 * around it are saved on st[], and `outer` is the sum of their `left`, so
 * that outer + left is the number of objects still expected after the one
 * being read.
 *
 * 0, or -1 with errno EBADMSG (malformed) or ENOMEM.
 */
static int s_decode(const uint8_t *buf, size_t len, msgpack_zone *z, msgpack_object *root)
{
    dframe_t st[DECODE_MAX_DEPTH];
    int depth = 0;
    const uint8_t *p = buf, *end = buf + len;
    msgpack_object *next = root;
    size_t left = 1, outer = 0;

    for (;;) {
        while (left == 0) {
            if (depth == 0)
                goto done;
            depth--;
            next = st[depth].next;
            left = st[depth].left;
            outer -= left;
        }
        msgpack_object *o = next++;
        left--;
        if (p >= end)
            goto bad;
        uint8_t c = *p++;
        size_t n; /* container elements, or payload bytes */
        size_t lb; /* bytes of a length field */
        int map = 0;

        switch (c) {
        case 0x00 ... 0x7f:
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = c;
            continue;
        case 0xe0 ... 0xff:
            o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
            o->via.i64 = (int8_t)c;
            continue;
        case 0x80 ... 0x8f:
            n = c & 0x0f;
            map = 1;
            goto container;
        case 0x90 ... 0x9f:
            n = c & 0x0f;
            goto container;
        case 0xa0 ... 0xbf:
            n = c & 0x1f;
            goto str;
        case 0xc0:
            o->type = MSGPACK_OBJECT_NIL;
            continue;
        case 0xc2:
        case 0xc3:
            o->type = MSGPACK_OBJECT_BOOLEAN;
            o->via.boolean = c == 0xc3;
            continue;
        case 0xc4: case 0xc5: case 0xc6:        /* bin 8/16/32 */
            lb = c == 0xc4 ? 1 : c == 0xc5 ? 2 : 4;
            if ((size_t)(end - p) < lb)
                goto bad;
            n = lb == 1 ? p[0] : lb == 2 ? s_be16(p) : s_be32(p);
            p += lb;
            if ((size_t)(end - p) < n)
                goto bad;
            o->type = MSGPACK_OBJECT_BIN;
            o->via.bin.size = (uint32_t)n;
            o->via.bin.ptr = (const char *)p;
            p += n;
            continue;
        case 0xc7: case 0xc8: case 0xc9:        /* ext 8/16/32: len, type, data */
            lb = c == 0xc7 ? 1 : c == 0xc8 ? 2 : 4;
            if ((size_t)(end - p) < lb + 1)
                goto bad;
            n = lb == 1 ? p[0] : lb == 2 ? s_be16(p) : s_be32(p);
            p += lb;
            if ((size_t)(end - p) - 1 < n)
                goto bad;
            o->type = MSGPACK_OBJECT_EXT;
            o->via.ext.type = (int8_t)p[0];
            o->via.ext.size = (uint32_t)n;
            o->via.ext.ptr = (const char *)p + 1;
            p += 1 + n;
            continue;
        case 0xca: {
            if (end - p < 4)
                goto bad;
            union { uint32_t u; float f; } v = {.u = s_be32(p)};
            p += 4;
            o->type = MSGPACK_OBJECT_FLOAT32;
            o->via.f64 = v.f;
            continue;
        }
        case 0xcb: {
            if (end - p < 8)
                goto bad;
            union { uint64_t u; double d; } v = {.u = s_be64(p)};
            p += 8;
            o->type = MSGPACK_OBJECT_FLOAT64;
            o->via.f64 = v.d;
            continue;
        }
        case 0xcc:
            if (end - p < 1)
                goto bad;
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = p[0];
            p += 1;
            continue;
        case 0xcd:
            if (end - p < 2)
                goto bad;
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = s_be16(p);
            p += 2;
            continue;
        case 0xce:
            if (end - p < 4)
                goto bad;
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = s_be32(p);
            p += 4;
            continue;
        case 0xcf:
            if (end - p < 8)
                goto bad;
            o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
            o->via.u64 = s_be64(p);
            p += 8;
            continue;
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            size_t nb = (size_t)1 << (c - 0xd0);
            if ((size_t)(end - p) < nb)
                goto bad;
            int64_t v = nb == 1 ? (int8_t)p[0] : nb == 2 ? (int16_t)s_be16(p)
                      : nb == 4 ? (int32_t)s_be32(p) : (int64_t)s_be64(p);
            p += nb;
            /* As msgpack-c does: a signed encoding of a value >= 0 is a
             * positive integer. */
            if (v < 0) {
                o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
                o->via.i64 = v;
            } else {
                o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
                o->via.u64 = (uint64_t)v;
            }
            continue;
        }
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext 1..16 */
            n = (size_t)1 << (c - 0xd4);
            if ((size_t)(end - p) < 1 + n)
                goto bad;
            o->type = MSGPACK_OBJECT_EXT;
            o->via.ext.type = (int8_t)p[0];
            o->via.ext.size = (uint32_t)n;
            o->via.ext.ptr = (const char *)p + 1;
            p += 1 + n;
            continue;
        case 0xd9: case 0xda: case 0xdb:        /* str 8/16/32 */
            lb = c == 0xd9 ? 1 : c == 0xda ? 2 : 4;
            if ((size_t)(end - p) < lb)
                goto bad;
            n = lb == 1 ? p[0] : lb == 2 ? s_be16(p) : s_be32(p);
            p += lb;
            goto str;
        case 0xdc: case 0xdd:                   /* array 16/32 */
        case 0xde: case 0xdf:                   /* map 16/32 */
            lb = (c == 0xdc || c == 0xde) ? 2 : 4;
            if ((size_t)(end - p) < lb)
                goto bad;
            n = lb == 2 ? s_be16(p) : s_be32(p);
            p += lb;
            map = c >= 0xde;
            goto container;
        default:
            goto bad; /* 0xc1: never used */
        }

    str:
        if ((size_t)(end - p) < n)
            goto bad;
        o->type = MSGPACK_OBJECT_STR;
        o->via.str.size = (uint32_t)n;
        o->via.str.ptr = (const char *)p;
        p += n;
        continue;

    container: {
        size_t elems = map ? 2 * n : n;
        /* Everything still expected must fit in what is left. */
        if (outer + left + elems > (size_t)(end - p))
            goto bad;
        /* An empty container points somewhere valid, as msgpack-c's do. */
        static msgpack_object no_elems[1];
        msgpack_object *kids = no_elems;
        if (elems) {
            if (depth == DECODE_MAX_DEPTH)
                goto bad;
            kids = msgpack_zone_malloc(z, elems * sizeof(msgpack_object));
            if (!kids) {
                errno = ENOMEM;
                return -1;
            }
        }
        if (map) {
            o->type = MSGPACK_OBJECT_MAP;
            o->via.map.size = (uint32_t)n;
            o->via.map.ptr = (msgpack_object_kv *)kids;
        } else {
            o->type = MSGPACK_OBJECT_ARRAY;
            o->via.array.size = (uint32_t)n;
            o->via.array.ptr = kids;
        }
        if (elems) {
            st[depth].next = next;
            st[depth].left = left;
            depth++;
            outer += left;
            next = kids;
            left = elems;
        }
    }
    }
done:
    if (p != end)
        goto bad; /* trailing bytes */
    return 0;
bad:
    errno = EBADMSG;
    return -1;
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
    /* Element arrays take up to 24 bytes per body byte, typically a third
     * of that; size the chunks so that a big batch needs few of them. */
    size_t chunk = len * 8;
    if (chunk < 1024)
        chunk = 1024;
    if (chunk > (1u << 20))
        chunk = 1u << 20;
    if (!msgpack_zone_init(&m->zone, chunk)) {
        errno = ENOMEM;
        return -1;
    }
    m->inited |= PM_ZONE;
    if (s_decode(data, len, &m->zone, &m->body) < 0) {
        m->body.type = MSGPACK_OBJECT_NIL;
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
