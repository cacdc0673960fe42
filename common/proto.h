/*
 * proto.h - the shoal wire protocol: framing, message types, batching.
 * docs/PROTOCOL.md is the specification; this is its one implementation.
 *
 * A message is a ZeroMQ multipart:
 *     [routing id]  (only as seen by/sent from the scheduler's ROUTER socket)
 *     header        PROTO_HDR_SIZE bytes: 'S' 'H' version type flags(u16 BE) 0 0
 *     body          one MessagePack object (for batched types: an array of items)
 *     data frames   0..PROTO_MAX_DATA_FRAMES raw byte frames (large buffers)
 *
 * Buffer ownership: a proto_msg_t owns the zmq frames it received; `body`
 * points into the msgpack zone of the message and is valid until
 * proto_msg_close().  Copy out anything that must outlive it.
 */
#ifndef SHOAL_PROTO_H
#define SHOAL_PROTO_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define PROTO_MAGIC0 'S'
#define PROTO_MAGIC1 'H'
#define PROTO_VERSION 1
#define PROTO_HDR_SIZE 8
#define PROTO_MAX_DATA_FRAMES 16
#define PROTO_MAX_IDENT 256
/* Default bound on one frame; ZMQ_MAXMSGSIZE is set to it on every socket so
 * a larger frame drops the sender's connection instead of exhausting memory. */
#define PROTO_DEFAULT_MAX_FRAME (1LL << 30)

typedef enum msg_type {
    MSG_NONE = 0,
    /* any peer <-> scheduler */
    MSG_HELLO = 1,        /* peer -> sched: register (map) */
    MSG_WELCOME = 2,      /* sched -> peer: registered (map) */
    MSG_ERROR = 3,        /* either way: {"code", "message"} */
    MSG_HEARTBEAT = 4,    /* peer -> sched, echoed back; body nil */
    MSG_BYE = 5,          /* either way: orderly goodbye; body nil */
    /* client <-> scheduler */
    MSG_SUBMIT = 10,      /* batch of task submissions */
    MSG_RESULT = 11,      /* batch of task outcomes */
    MSG_RELEASE = 12,     /* array of task ids the client no longer wants */
    MSG_CANCEL = 13,      /* array of task ids to cancel */
    MSG_UPLOAD_LIB = 14,  /* {"req","name"} + data frame: the .so bytes */
    MSG_LIB_ACK = 15,     /* {"req","name","hash","ok","error"} */
    MSG_STATUS = 16,      /* {"req"} */
    MSG_STATUS_REPLY = 17,
    MSG_SCATTER = 18,     /* batch of [id, nbytes, [worker ids]]: data already PUT */
    MSG_REFETCH = 19,     /* [id...]: holders failed, send a fresh RESULT */
    /* scheduler <-> worker */
    MSG_COMPUTE = 20,     /* batch of tasks to run */
    MSG_TASK_DONE = 21,   /* batch of task outcomes */
    MSG_WCANCEL = 22,     /* array of task ids to abandon */
    MSG_LIBRARY = 23,     /* {"name","hash"} + data frame: load this library */
    MSG_FREE = 24,        /* [id...]: drop these stored results */
    MSG_STEAL = 25,       /* [id...]: give these queued tasks back */
    MSG_STEAL_REPLY = 26, /* [[id, ok]...] */
    MSG_PAUSE = 27,       /* worker -> sched: {"paused": bool} */
    MSG_HAVE = 28,        /* worker -> sched: [id...]: fetched copies it keeps */
    /* anyone <-> a worker's data endpoint (docs/DATAPLANE.md) */
    MSG_GET = 30,         /* {"req", "ids": [id...]} (at most PROTO_MAX_DATA_FRAMES) */
    MSG_DATA = 31,        /* {"req", "items": [[id, found, nbytes]...]} + frames */
    MSG_PUT = 32,         /* {"req", "ids": [id...]} + one frame per id */
    MSG_PUT_ACK = 33,     /* {"req", "ok", "error"} */
    MSG_TYPE_MAX = 48,    /* dispatch tables have this many slots */
} msg_type_t;

/* Error codes carried in MSG_ERROR. */
enum {
    PERR_BAD_MESSAGE = 1,     /* malformed header or body */
    PERR_VERSION = 2,         /* protocol version mismatch */
    PERR_UNKNOWN_TYPE = 3,    /* no handler for this type */
    PERR_NOT_REGISTERED = 4,  /* message before HELLO (or after a restart) */
    PERR_TOO_LARGE = 5,       /* a bound was exceeded */
    PERR_BAD_REQUEST = 6,     /* well-formed but invalid (unknown id...) */
};

/* Task outcome status on the wire (MSG_RESULT / MSG_TASK_DONE).
 * TASK_MISSING (TASK_DONE only): dependencies could not be fetched from any
 * holder; the payload lists their ids. */
enum { TASK_OK = 0, TASK_ERR = 1, TASK_CANCELLED = 2, TASK_MISSING = 3 };

/* Results up to this many packed bytes ride along in TASK_DONE and live on the
 * scheduler; larger ones stay in the worker's store (docs/DATAPLANE.md). */
#define PROTO_INLINE_MAX (64u * 1024u)

typedef struct proto_hdr {
    uint8_t version;
    uint8_t type;
    uint16_t flags;
} proto_hdr_t;

/* Encode a header into out[PROTO_HDR_SIZE]. */
void proto_hdr_encode(uint8_t *out, int type, unsigned flags);
/* Decode; -1 with errno EBADMSG (size/magic) or EPROTONOSUPPORT (version,
 * h->version still filled). */
int proto_hdr_decode(const void *buf, size_t len, proto_hdr_t *h);
/* "SUBMIT", "TASK_DONE", ... or "UNKNOWN". */
const char *proto_type_name(int type);

typedef struct proto_msg {
    uint8_t ident[PROTO_MAX_IDENT];  /* routing id (ROUTER sockets only) */
    size_t ident_len;
    int srcfd;                       /* fd the message came in on, or -1 */
    proto_hdr_t hdr;
    msgpack_object body;             /* decoded body (nil if empty) */
    msgpack_zone zone;               /* owns what body points into */
    zmq_msg_t body_frame;
    size_t nframes;                  /* data frames */
    zmq_msg_t frames[PROTO_MAX_DATA_FRAMES];
    int inited;
} proto_msg_t;

/* Receive one whole multipart message (non-blocking if flags has
 * ZMQ_DONTWAIT).  `router` says the first frame is a routing id.
 * Returns 0 on success.  On failure returns -1 with errno:
 *   EAGAIN      nothing to receive;
 *   EBADMSG     malformed (bad header, undecodable or trailing body bytes,
 *               too many frames) - all parts were consumed, m->ident is set
 *               if known so the caller can reply with an error;
 *   EPROTONOSUPPORT  version mismatch (likewise, m->hdr.version set);
 *   other       zmq errors.
 * On success and on EBADMSG/EPROTONOSUPPORT, call proto_msg_close(m) after. */
int proto_recv(void *sock, int router, proto_msg_t *m, int flags);
void proto_msg_close(proto_msg_t *m);
/* Data frame i of a received message. */
const void *proto_frame_data(proto_msg_t *m, size_t i);
size_t proto_frame_size(proto_msg_t *m, size_t i);

/* A raw buffer to send as a data frame.  If `free_fn` is set the frame is sent
 * zero-copy and free_fn(data, hint) is called by zmq when it is done;
 * otherwise the bytes are copied. */
typedef struct proto_frame {
    const void *data;
    size_t len;
    void (*free_fn)(void *data, void *hint);
    void *hint;
} proto_frame_t;

/* Send one message: [ident] header body frames...  `ident` NULL for
 * DEALER sockets.  body/len is one packed msgpack object (copied).
 * Returns 0, or -1 with errno (EHOSTUNREACH: unknown ROUTER peer). */
int proto_send(void *sock, const void *ident, size_t ident_len, int type,
               const void *body, size_t len, const proto_frame_t *frames,
               size_t nframes);

/* Send MSG_ERROR {"code": code, "message": text}. */
int proto_send_error(void *sock, const void *ident, size_t ident_len, int code,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A batch: many items of one message type in one body (a msgpack array).
 * Items are packed straight into the body buffer; the array header is fixed
 * up when the batch is sent, and the buffer is handed to zmq without a copy. */
typedef struct proto_batch {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    uint32_t count;
    int type;
} proto_batch_t;

void proto_batch_init(proto_batch_t *b, int type);
/* Start a new item: returns the packer to pack exactly one object into. */
msgpack_packer *proto_batch_add(proto_batch_t *b);
static inline uint32_t proto_batch_count(const proto_batch_t *b) { return b->count; }
static inline size_t proto_batch_bytes(const proto_batch_t *b) { return b->sbuf.size; }
/* Send the batch if it has items and reset it (empty, same type).  0 or -1. */
int proto_batch_send(proto_batch_t *b, void *sock, const void *ident, size_t ident_len);
void proto_batch_destroy(proto_batch_t *b);

/* Set the options every shoal socket uses: no high-water-mark drops, a
 * bounded message size, short linger, TCP keepalive.  0 or -1. */
int proto_sock_setup(void *sock, int64_t max_frame);

#endif
