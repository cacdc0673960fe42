/* test_proto.c - framing, validation and batching over real zmq sockets. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "mp.h"
#include "proto.h"

static void *s_ctx, *s_router, *s_dealer;
static char s_endpoint[256];
static const char s_id[] = "dealer-1";

static void s_timeouts(void *sock)
{
    int ms = 5000;
    ck_assert_int_eq(zmq_setsockopt(sock, ZMQ_RCVTIMEO, &ms, sizeof ms), 0);
    ck_assert_int_eq(zmq_setsockopt(sock, ZMQ_SNDTIMEO, &ms, sizeof ms), 0);
}

/* A ROUTER on an ephemeral loopback port and a DEALER with a known routing
 * id; returns once the router can route to it. */
static void s_pair(const char *transport, int64_t max_frame)
{
    s_ctx = zmq_ctx_new();
    ck_assert_ptr_nonnull(s_ctx);
    s_router = zmq_socket(s_ctx, ZMQ_ROUTER);
    s_dealer = zmq_socket(s_ctx, ZMQ_DEALER);
    ck_assert_int_eq(proto_sock_setup(s_router, max_frame), 0);
    ck_assert_int_eq(proto_sock_setup(s_dealer, 0), 0);
    s_timeouts(s_router);
    s_timeouts(s_dealer);
    ck_assert_int_eq(zmq_setsockopt(s_dealer, ZMQ_ROUTING_ID, s_id, strlen(s_id)), 0);
    if (!strcmp(transport, "tcp")) {
        ck_assert_int_eq(zmq_bind(s_router, "tcp://127.0.0.1:*"), 0);
    } else {
        char ep[64];
        snprintf(ep, sizeof ep, "inproc://proto-%d", (int)getpid());
        ck_assert_int_eq(zmq_bind(s_router, ep), 0);
    }
    size_t len = sizeof s_endpoint;
    ck_assert_int_eq(zmq_getsockopt(s_router, ZMQ_LAST_ENDPOINT, s_endpoint, &len), 0);
    ck_assert_int_eq(zmq_connect(s_dealer, s_endpoint), 0);
    /* Handshake: the router learns the dealer's id from its first message. */
    ck_assert_int_eq(proto_send(s_dealer, NULL, 0, MSG_HEARTBEAT, NULL, 0, NULL, 0), 0);
    proto_msg_t m;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, MSG_HEARTBEAT);
    ck_assert(mp_is_nil(&m.body));
    proto_msg_close(&m);
}

static void s_pair_close(void)
{
    zmq_close(s_dealer);
    zmq_close(s_router);
    zmq_ctx_term(s_ctx);
}

/* Send raw frames from the dealer, bypassing proto_send. */
static void s_raw(int n, const void *const *data, const size_t *len)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_ge(zmq_send(s_dealer, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0), 0);
}

/* The router must get a good message after any bad one: the socket stays in
 * step with message boundaries. */
static void s_expect_good_after(void)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    mp_pack_cstr(&pk, "good");
    msgpack_pack_int(&pk, 77);
    static const char blob[] = "frame-data";
    proto_frame_t f = {blob, sizeof blob, NULL, NULL};
    ck_assert_int_eq(proto_send(s_dealer, NULL, 0, MSG_STATUS, sb.data, sb.size, &f, 1), 0);
    msgpack_sbuffer_destroy(&sb);

    proto_msg_t m;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, MSG_STATUS);
    ck_assert_uint_eq(m.ident_len, strlen(s_id));
    ck_assert_mem_eq(m.ident, s_id, m.ident_len);
    const msgpack_object *it;
    size_t n;
    ck_assert_int_eq(mp_array(&m.body, &it, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert(mp_str_eq(&it[0], "good"));
    ck_assert_uint_eq(m.nframes, 1);
    ck_assert_uint_eq(proto_frame_size(&m, 0), sizeof blob);
    ck_assert_mem_eq(proto_frame_data(&m, 0), blob, sizeof blob);
    proto_msg_close(&m);
    /* And nothing else is queued. */
    ck_assert_int_eq(proto_recv(s_router, 1, &m, ZMQ_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
}

/* Receive a message that must be refused with `err`; check that ident is
 * known so the scheduler could reply. */
static void s_expect_bad(int err)
{
    proto_msg_t m;
    errno = 0;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), -1);
    ck_assert_int_eq(errno, err);
    ck_assert_uint_eq(m.ident_len, strlen(s_id));
    ck_assert_mem_eq(m.ident, s_id, m.ident_len);
    proto_msg_close(&m);
    proto_msg_close(&m); /* idempotent */
}

START_TEST(test_header)
{
    uint8_t b[PROTO_HDR_SIZE];
    proto_hdr_t h;
    proto_hdr_encode(b, MSG_TASK_DONE, 0x1234);
    ck_assert_int_eq(b[0], 'S');
    ck_assert_int_eq(b[1], 'H');
    ck_assert_int_eq(proto_hdr_decode(b, sizeof b, &h), 0);
    ck_assert_int_eq(h.version, PROTO_VERSION);
    ck_assert_int_eq(h.type, MSG_TASK_DONE);
    ck_assert_int_eq(h.flags, 0x1234);

    errno = 0;
    ck_assert_int_eq(proto_hdr_decode(b, sizeof b - 1, &h), -1);
    ck_assert_int_eq(errno, EBADMSG);
    ck_assert_int_eq(proto_hdr_decode(NULL, 0, &h), -1);
    uint8_t big[PROTO_HDR_SIZE + 1] = {'S', 'H', PROTO_VERSION, 1};
    ck_assert_int_eq(proto_hdr_decode(big, sizeof big, &h), -1);
    ck_assert_int_eq(errno, EBADMSG);
    b[1] = 'X';
    ck_assert_int_eq(proto_hdr_decode(b, sizeof b, &h), -1);
    ck_assert_int_eq(errno, EBADMSG);
    b[1] = 'H';
    b[2] = PROTO_VERSION + 1;
    ck_assert_int_eq(proto_hdr_decode(b, sizeof b, &h), -1);
    ck_assert_int_eq(errno, EPROTONOSUPPORT);
    ck_assert_int_eq(h.version, PROTO_VERSION + 1);

    ck_assert_str_eq(proto_type_name(MSG_SUBMIT), "SUBMIT");
    ck_assert_str_eq(proto_type_name(MSG_TASK_DONE), "TASK_DONE");
    ck_assert_str_eq(proto_type_name(MSG_LIBRARY), "LIBRARY");
    ck_assert_str_eq(proto_type_name(0), "UNKNOWN");
    ck_assert_str_eq(proto_type_name(29), "UNKNOWN");
    ck_assert_str_eq(proto_type_name(MSG_DATA), "DATA");
    ck_assert_str_eq(proto_type_name(-5), "UNKNOWN");
}
END_TEST

static int s_freed;
static void s_count_free(void *data, void *hint)
{
    ck_assert_ptr_eq(hint, (void *)0x5eed);
    free(data);
    __atomic_add_fetch(&s_freed, 1, __ATOMIC_SEQ_CST);
}

START_TEST(test_roundtrip_tcp)
{
    s_pair("tcp", 0);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    mp_pack_cstr(&pk, "role");
    mp_pack_cstr(&pk, "worker");
    mp_pack_cstr(&pk, "pid");
    msgpack_pack_int(&pk, 4242);

    size_t biglen = 3 << 20;
    char *big = malloc(biglen);
    for (size_t i = 0; i < biglen; i++)
        big[i] = (char)(i * 31);
    proto_frame_t frames[3] = {
        {"abc", 3, NULL, NULL},
        {big, biglen, s_count_free, (void *)0x5eed},
        {"", 0, NULL, NULL},
    };
    s_freed = 0;
    ck_assert_int_eq(proto_send(s_dealer, NULL, 0, MSG_HELLO, sb.data, sb.size, frames, 3), 0);
    msgpack_sbuffer_destroy(&sb);

    proto_msg_t m;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, MSG_HELLO);
    ck_assert_int_eq(m.hdr.version, PROTO_VERSION);
    ck_assert_mem_eq(m.ident, s_id, strlen(s_id));
    /* Over TCP the source fd is known (the scheduler uses it to match
     * socket-monitor disconnects to peers). */
    ck_assert_int_ge(m.srcfd, 0);
    ck_assert(mp_str_eq(mp_map_get(&m.body, "role"), "worker"));
    uint64_t pid;
    ck_assert_int_eq(mp_u64(mp_map_get(&m.body, "pid"), &pid), 0);
    ck_assert_uint_eq(pid, 4242);
    ck_assert_uint_eq(m.nframes, 3);
    ck_assert_uint_eq(proto_frame_size(&m, 0), 3);
    ck_assert_mem_eq(proto_frame_data(&m, 0), "abc", 3);
    ck_assert_uint_eq(proto_frame_size(&m, 1), biglen);
    const char *got = proto_frame_data(&m, 1);
    for (size_t i = 0; i < biglen; i += 4093)
        ck_assert_int_eq(got[i], (char)(i * 31));
    ck_assert_uint_eq(proto_frame_size(&m, 2), 0);
    ck_assert_ptr_null(proto_frame_data(&m, 3));
    ck_assert_uint_eq(proto_frame_size(&m, 3), 0);
    proto_msg_close(&m);
    /* zmq released the zero-copy frame exactly once (it is done with it
     * once the message has been delivered). */
    ck_assert_int_eq(__atomic_load_n(&s_freed, __ATOMIC_SEQ_CST), 1);

    /* Reply router -> dealer: no ident on the dealer side. */
    ck_assert_int_eq(proto_send(s_router, s_id, strlen(s_id), MSG_WELCOME, NULL, 0, NULL, 0),
                     0);
    ck_assert_int_eq(proto_recv(s_dealer, 0, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, MSG_WELCOME);
    ck_assert_uint_eq(m.ident_len, 0);
    ck_assert(mp_is_nil(&m.body));
    ck_assert_uint_eq(m.nframes, 0);
    proto_msg_close(&m);
    s_pair_close();
}
END_TEST

START_TEST(test_eagain)
{
    s_pair("inproc", 0);
    proto_msg_t m;
    errno = 0;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, ZMQ_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    proto_msg_close(&m); /* harmless after a failed receive */
    s_pair_close();
}
END_TEST

START_TEST(test_unreachable)
{
    s_pair("inproc", 0);
    char *buf = malloc(100);
    memset(buf, 1, 100);
    proto_frame_t f = {buf, 100, s_count_free, (void *)0x5eed};
    s_freed = 0;
    errno = 0;
    ck_assert_int_eq(proto_send(s_router, "nobody", 6, MSG_COMPUTE, "\xc0", 1, &f, 1), -1);
    ck_assert_int_eq(errno, EHOSTUNREACH);
    /* The zero-copy frame was released although it was never sent. */
    ck_assert_int_eq(s_freed, 1);

    proto_batch_t b;
    proto_batch_init(&b, MSG_COMPUTE);
    msgpack_pack_int(proto_batch_add(&b), 1);
    ck_assert_int_eq(proto_batch_send(&b, s_router, "nobody", 6), -1);
    ck_assert_int_eq(errno, EHOSTUNREACH);
    ck_assert_uint_eq(proto_batch_count(&b), 0);

    /* Nothing half-sent: the next message to the real peer is intact. */
    msgpack_pack_int(proto_batch_add(&b), 2);
    ck_assert_int_eq(proto_batch_send(&b, s_router, s_id, strlen(s_id)), 0);
    proto_msg_t m;
    ck_assert_int_eq(proto_recv(s_dealer, 0, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, MSG_COMPUTE);
    const msgpack_object *it;
    size_t n;
    ck_assert_int_eq(mp_array(&m.body, &it, &n), 0);
    ck_assert_uint_eq(n, 1);
    uint64_t v;
    ck_assert_int_eq(mp_u64(&it[0], &v), 0);
    ck_assert_uint_eq(v, 2);
    proto_msg_close(&m);
    ck_assert_int_eq(proto_recv(s_dealer, 0, &m, ZMQ_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    proto_batch_destroy(&b);

    /* Invalid arguments. */
    errno = 0;
    ck_assert_int_eq(proto_send(s_dealer, NULL, 0, MSG_STATUS, NULL, 0, NULL,
                                PROTO_MAX_DATA_FRAMES + 1), -1);
    ck_assert_int_eq(errno, EINVAL);
    s_pair_close();
}
END_TEST

static void s_check_batch(int type, uint32_t expect, uint64_t base)
{
    proto_msg_t m;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, type);
    const msgpack_object *it;
    size_t n;
    ck_assert_int_eq(mp_array(&m.body, &it, &n), 0);
    ck_assert_uint_eq(n, expect);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *f;
        size_t fn;
        ck_assert_int_eq(mp_array(&it[i], &f, &fn), 0);
        ck_assert_uint_eq(fn, 4);
        uint64_t id;
        ck_assert_int_eq(mp_u64(&f[0], &id), 0);
        ck_assert_uint_eq(id, base + i);
        ck_assert(mp_str_eq(&f[1], "noop"));
        const void *p;
        size_t pl;
        ck_assert_int_eq(mp_bin(&f[2], &p, &pl), 0);
        ck_assert_uint_eq(pl, 8);
        ck_assert_mem_eq(p, &id, 8);
        ck_assert(mp_is_nil(&f[3]));
    }
    proto_msg_close(&m);
}

static void s_fill(proto_batch_t *b, uint32_t n, uint64_t base)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = base + i;
        msgpack_packer *pk = proto_batch_add(b);
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint64(pk, id);
        mp_pack_cstr(pk, "noop");
        mp_pack_bin(pk, &id, 8);
        msgpack_pack_nil(pk);
    }
}

START_TEST(test_batch)
{
    s_pair("tcp", 0);
    proto_batch_t b;
    proto_batch_init(&b, MSG_SUBMIT);
    ck_assert_uint_eq(proto_batch_count(&b), 0);
    ck_assert_uint_eq(proto_batch_bytes(&b), 0);
    /* An empty batch sends nothing. */
    ck_assert_int_eq(proto_batch_send(&b, s_dealer, NULL, 0), 0);

    s_fill(&b, 10000, 1ULL << 40);
    ck_assert_uint_eq(proto_batch_count(&b), 10000);
    ck_assert_uint_gt(proto_batch_bytes(&b), 10000 * 10);
    ck_assert_int_eq(proto_batch_send(&b, s_dealer, NULL, 0), 0);
    ck_assert_uint_eq(proto_batch_count(&b), 0);
    ck_assert_uint_eq(proto_batch_bytes(&b), 0);

    /* Reuse after a send; small counts also use the array32 header. */
    s_fill(&b, 1, 500);
    ck_assert_int_eq(proto_batch_send(&b, s_dealer, NULL, 0), 0);
    /* A batch moved to another address keeps working (packer re-pointed). */
    proto_batch_t moved;
    s_fill(&b, 3, 900);
    memcpy(&moved, &b, sizeof b);
    s_fill(&moved, 2, 903);
    ck_assert_int_eq(proto_batch_send(&moved, s_dealer, NULL, 0), 0);

    s_check_batch(MSG_SUBMIT, 10000, 1ULL << 40);
    s_check_batch(MSG_SUBMIT, 1, 500);
    s_check_batch(MSG_SUBMIT, 5, 900);
    proto_msg_t m;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, ZMQ_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    proto_batch_destroy(&moved);
    proto_batch_destroy(NULL);

    /* Router -> dealer batch with an ident. */
    proto_batch_t r;
    proto_batch_init(&r, MSG_RESULT);
    for (int i = 0; i < 100; i++)
        msgpack_pack_int(proto_batch_add(&r), i);
    ck_assert_int_eq(proto_batch_send(&r, s_router, s_id, strlen(s_id)), 0);
    ck_assert_int_eq(proto_recv(s_dealer, 0, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, MSG_RESULT);
    const msgpack_object *it;
    size_t n;
    ck_assert_int_eq(mp_array(&m.body, &it, &n), 0);
    ck_assert_uint_eq(n, 100);
    proto_msg_close(&m);
    proto_batch_destroy(&r);
    s_pair_close();
}
END_TEST

START_TEST(test_malformed)
{
    s_pair("inproc", 0);
    uint8_t hdr[PROTO_HDR_SIZE];
    proto_hdr_encode(hdr, MSG_SUBMIT, 0);
    static const uint8_t nil = 0xc0;

    /* Header too short. */
    {
        const void *d[] = {hdr, &nil};
        size_t l[] = {7, 1};
        s_raw(2, d, l);
        s_expect_bad(EBADMSG);
        s_expect_good_after();
    }
    /* Bad magic. */
    {
        uint8_t bad[PROTO_HDR_SIZE];
        memcpy(bad, hdr, sizeof bad);
        bad[0] = 'X';
        const void *d[] = {bad, &nil, "x"};
        size_t l[] = {sizeof bad, 1, 1};
        s_raw(3, d, l);
        s_expect_bad(EBADMSG);
        s_expect_good_after();
    }
    /* Wrong version: EPROTONOSUPPORT with the version reported. */
    {
        uint8_t v2[PROTO_HDR_SIZE];
        memcpy(v2, hdr, sizeof v2);
        v2[2] = 2;
        const void *d[] = {v2, &nil, "frame"};
        size_t l[] = {sizeof v2, 1, 5};
        s_raw(3, d, l);
        proto_msg_t m;
        errno = 0;
        ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), -1);
        ck_assert_int_eq(errno, EPROTONOSUPPORT);
        ck_assert_int_eq(m.hdr.version, 2);
        ck_assert_int_eq(m.hdr.type, MSG_SUBMIT);
        ck_assert_mem_eq(m.ident, s_id, strlen(s_id));
        proto_msg_close(&m);
        s_expect_good_after();
    }
    /* Only a header and no body: accepted, the body is nil. */
    {
        const void *d[] = {hdr};
        size_t l[] = {sizeof hdr};
        s_raw(1, d, l);
        proto_msg_t m;
        ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
        ck_assert(mp_is_nil(&m.body));
        proto_msg_close(&m);
        /* An empty body frame is nil too. */
        const void *d2[] = {hdr, ""};
        size_t l2[] = {sizeof hdr, 0};
        s_raw(2, d2, l2);
        ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
        ck_assert(mp_is_nil(&m.body));
        proto_msg_close(&m);
        s_expect_good_after();
    }
    /* Bodies that are not exactly one well-formed object. */
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
    } bodies[] = {
        {"truncated array", "\x93\x01\x02", 3},
        {"truncated str", "\xa5hel", 4},
        {"truncated uint64", "\xcf\x00\x01", 3},
        {"reserved byte", "\xc1", 1},
        {"garbage", "\xc1\xff\x00\x13", 4},
        {"trailing bytes", "\x01\x02", 2},
        {"trailing nil", "\x91\x01\xc0", 3},
        {"huge array claim", "\xdd\xff\xff\xff\xff", 5},
        {"huge map claim", "\xdf\x7f\xff\xff\xff\x01", 6},
        {"huge bin claim", "\xc6\xff\xff\xff\xf0\x00", 6},
        {"huge str claim", "\xdb\x10\x00\x00\x00", 5},
        {"huge ext claim", "\xc9\x7f\x00\x00\x00\x01", 6},
        {"array claims more than bytes", "\xdc\x00\x10\x01\x01\x01", 6},
        {"map missing value", "\x81\xa1k", 3},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        const void *d[] = {hdr, bodies[i].bytes};
        size_t l[] = {sizeof hdr, bodies[i].len};
        s_raw(2, d, l);
        proto_msg_t m;
        errno = 0;
        int rc = proto_recv(s_router, 1, &m, 0);
        int e = errno;
        if (rc == 0)
            proto_msg_close(&m);
        ck_assert_msg(rc == -1 && e == EBADMSG, "%s: rc %d errno %d", bodies[i].what, rc, e);
        s_expect_good_after();
    }
    /* Nesting deeper than any real message: refused, no stack overflow. */
    {
        enum { DEPTH = 100000 };
        char *deep = malloc(DEPTH + 1);
        memset(deep, 0x91, DEPTH);
        deep[DEPTH] = 0x01;
        const void *d[] = {hdr, deep};
        size_t l[] = {sizeof hdr, DEPTH + 1};
        s_raw(2, d, l);
        s_expect_bad(EBADMSG);
        free(deep);
        s_expect_good_after();
    }
    /* Too many data frames (with a valid header and body). */
    {
        const void *d[2 + PROTO_MAX_DATA_FRAMES + 1];
        size_t l[2 + PROTO_MAX_DATA_FRAMES + 1];
        d[0] = hdr;
        l[0] = sizeof hdr;
        d[1] = &nil;
        l[1] = 1;
        for (int i = 0; i < PROTO_MAX_DATA_FRAMES + 1; i++) {
            d[2 + i] = "data";
            l[2 + i] = 4;
        }
        s_raw(2 + PROTO_MAX_DATA_FRAMES + 1, d, l);
        s_expect_bad(EBADMSG);
        s_expect_good_after();
        /* Exactly the maximum is fine. */
        s_raw(2 + PROTO_MAX_DATA_FRAMES, d, l);
        proto_msg_t m;
        ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
        ck_assert_uint_eq(m.nframes, PROTO_MAX_DATA_FRAMES);
        for (size_t i = 0; i < m.nframes; i++)
            ck_assert_mem_eq(proto_frame_data(&m, i), "data", 4);
        proto_msg_close(&m);
    }
    /* Bad header and many frames at once: still fully consumed. */
    {
        const void *d[40];
        size_t l[40];
        for (int i = 0; i < 40; i++) {
            d[i] = "zz";
            l[i] = 2;
        }
        s_raw(40, d, l);
        s_expect_bad(EBADMSG);
        s_expect_good_after();
    }
    s_pair_close();
}
END_TEST

START_TEST(test_send_error)
{
    s_pair("inproc", 0);
    ck_assert_int_eq(proto_send_error(s_router, s_id, strlen(s_id), PERR_VERSION,
                                      "version %d not supported", 9), 0);
    proto_msg_t m;
    ck_assert_int_eq(proto_recv(s_dealer, 0, &m, 0), 0);
    ck_assert_int_eq(m.hdr.type, MSG_ERROR);
    uint64_t code;
    ck_assert_int_eq(mp_u64(mp_map_get(&m.body, "code"), &code), 0);
    ck_assert_uint_eq(code, PERR_VERSION);
    ck_assert(mp_str_eq(mp_map_get(&m.body, "message"), "version 9 not supported"));
    proto_msg_close(&m);

    /* Long messages are truncated, not overflowed. */
    char longtext[5000];
    memset(longtext, 'a', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = '\0';
    ck_assert_int_eq(proto_send_error(s_dealer, NULL, 0, PERR_BAD_MESSAGE, "%s", longtext), 0);
    ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), 0);
    const char *s;
    size_t n;
    ck_assert_int_eq(mp_str(mp_map_get(&m.body, "message"), &s, &n), 0);
    ck_assert_uint_gt(n, 100);
    ck_assert_uint_lt(n, sizeof longtext);
    proto_msg_close(&m);

    errno = 0;
    ck_assert_int_eq(proto_send_error(s_router, "ghost", 5, PERR_BAD_MESSAGE, "x"), -1);
    ck_assert_int_eq(errno, EHOSTUNREACH);
    s_pair_close();
}
END_TEST

START_TEST(test_sock_setup)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    ck_assert_int_eq(proto_sock_setup(s, 12345), 0);
    int v;
    size_t len = sizeof v;
    ck_assert_int_eq(zmq_getsockopt(s, ZMQ_SNDHWM, &v, &len), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(zmq_getsockopt(s, ZMQ_RCVHWM, &v, &len), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(zmq_getsockopt(s, ZMQ_LINGER, &v, &len), 0);
    ck_assert_int_eq(v, 1000);
    ck_assert_int_eq(zmq_getsockopt(s, ZMQ_TCP_KEEPALIVE, &v, &len), 0);
    ck_assert_int_eq(v, 1);
    int64_t mx;
    len = sizeof mx;
    ck_assert_int_eq(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &mx, &len), 0);
    ck_assert_int_eq(mx, 12345);
    ck_assert_int_eq(proto_sock_setup(s, 0), 0);
    ck_assert_int_eq(zmq_getsockopt(s, ZMQ_MAXMSGSIZE, &mx, &len), 0);
    ck_assert_int_eq(mx, PROTO_DEFAULT_MAX_FRAME);
    zmq_close(s);
    zmq_ctx_term(ctx);
}
END_TEST

/* A frame over the limit drops the sender's connection instead of being
 * buffered; the receiver never sees it. */
START_TEST(test_max_frame)
{
    s_pair("tcp", 4096);
    static char big[8192];
    proto_frame_t f = {big, sizeof big, NULL, NULL};
    ck_assert_int_eq(proto_send(s_dealer, NULL, 0, MSG_UPLOAD_LIB, NULL, 0, &f, 1), 0);
    int ms = 500;
    zmq_setsockopt(s_router, ZMQ_RCVTIMEO, &ms, sizeof ms);
    proto_msg_t m;
    errno = 0;
    ck_assert_int_eq(proto_recv(s_router, 1, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    s_pair_close();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("proto");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_header);
    tcase_add_test(tc, test_roundtrip_tcp);
    tcase_add_test(tc, test_eagain);
    tcase_add_test(tc, test_unreachable);
    tcase_add_test(tc, test_batch);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_send_error);
    tcase_add_test(tc, test_sock_setup);
    tcase_add_test(tc, test_max_frame);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
