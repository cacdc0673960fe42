/*
 * test_data.c - unit tests of the client's data plane (docs/DATAPLANE.md)
 * against a fake world: one thread of the test plays the scheduler (a
 * ROUTER speaking just enough of the protocol) and up to three workers'
 * data endpoints (ROUTERs answering GET with DATA and PUT with PUT_ACK).
 *
 *   - RESULT items with the result kept on workers: the future is FINISHED,
 *     its bytes are fetched when asked for (256 KiB and 64 MiB, checked
 *     byte for byte), many at once by gather;
 *   - failover: a dead holder address, a holder without the data, a mute
 *     holder (the request deadline), then REFETCH when every holder failed (answered with new holders, with an
 *     error, or never usefully: the result is declared lost);
 *   - scatter: PUTs round robin and broadcast, a worker refusing, the
 *     SCATTER message, small pieces kept here and large ones fetched back;
 *   - SUBMIT options (resources, workers) on the wire, bad resource strings;
 *   - the extra worker fields of STATUS_REPLY.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shoal.h"

#include "exec.h"
#include "mp.h"
#include "proto.h"
#include "util.h"

#define NW 3             /* fake workers */
#define MAX_OBJ 64       /* objects a fake worker stores */
#define MAX_SEEN 256     /* ids the fake scheduler remembers */

typedef struct fobj {
    uint64_t id;
    void *data;
    size_t len;
} fobj_t;

enum { W_SERVE = 0, W_NOTFOUND = 1, W_REFUSE = 2, W_MUTE = 3 };

typedef struct fworker {
    void *sock;
    char addr[128];
    char name[32];
    uint64_t id;
    int mode;
    int paused;
    int in_status;       /* listed in STATUS_REPLY */
    fobj_t obj[MAX_OBJ];
    int nobj;
    int ngets, nget_ids, nputs, nput_ids;
} fworker_t;

/* What the fake scheduler says to a REFETCH. */
enum { RF_HOLDERS = 0, RF_ERROR = 1, RF_DEAD = 2 };

typedef struct world {
    void *ctx, *sched;
    char endpoint[128];
    pthread_t th;
    int stop;
    pthread_mutex_t mu;
    fworker_t w[NW];
    uint8_t ident[256];
    size_t ident_len;
    /* scheduler behaviour */
    char holders[4][128];   /* RESULT holders for "big" tasks */
    int nholders;
    int refetch_mode;
    char dead_addr[128];
    /* what it saw (under mu) */
    int nrefetch, nscatter_items, nsubmit, nrelease;
    int submit_fields;      /* fields of the last SUBMIT item */
    char submit_opts[512];  /* its options map, as text */
    uint64_t scat_id[MAX_SEEN], scat_nbytes[MAX_SEEN];
    int scat_nw[MAX_SEEN];
    uint64_t scat_w0[MAX_SEEN];
    int submit_after_scatter; /* a SUBMIT came after a SCATTER */
    uint64_t sub_dep;       /* first dependency of the last SUBMIT */
} world_t;

/* ---- helpers ------------------------------------------------------------------- */

static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A packed bin of n bytes with a recognisable pattern (seeded). */
static void *make_bin(size_t n, unsigned seed, size_t *plen)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char *raw = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(raw);
    for (size_t i = 0; i < n; i++)
        raw[i] = (char)((i * 131u + seed * 7u) >> 3);
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, raw, n);
    free(raw);
    *plen = sb.size;
    return sb.data; /* malloc'd by the sbuffer */
}

static void world_store(world_t *wd, int w, uint64_t id, const void *data, size_t len)
{
    pthread_mutex_lock(&wd->mu);
    fworker_t *fw = &wd->w[w];
    ck_assert_int_lt(fw->nobj, MAX_OBJ);
    fw->obj[fw->nobj].id = id;
    fw->obj[fw->nobj].data = malloc(len);
    memcpy(fw->obj[fw->nobj].data, data, len);
    fw->obj[fw->nobj].len = len;
    fw->nobj++;
    pthread_mutex_unlock(&wd->mu);
}

static int world_get(world_t *wd, const int *field)
{
    pthread_mutex_lock(&wd->mu);
    int v = *field;
    pthread_mutex_unlock(&wd->mu);
    return v;
}

/* Wait (bounded) until *field reaches want: messages the client has sent
 * are in flight when its call returns. */
static int world_wait(world_t *wd, const int *field, int want, double timeout)
{
    double end = util_now() + timeout;
    while (world_get(wd, field) < want && util_now() < end)
        usleep(2000);
    return world_get(wd, field);
}

/* ---- the fake scheduler ------------------------------------------------------------ */

static void sched_send(world_t *wd, int type, msgpack_sbuffer *sb)
{
    proto_send(wd->sched, wd->ident, wd->ident_len, type, sb ? sb->data : NULL,
               sb ? sb->size : 0, NULL, 0);
}

/* RESULT [id, 0, nil, worker, nbytes, [holders]] (locked: reads the holders). */
static void sched_result_remote(world_t *wd, uint64_t id, uint64_t nbytes, char (*hs)[128],
                                int nh)
{
    proto_batch_t b;
    proto_batch_init(&b, MSG_RESULT);
    msgpack_packer *pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 6);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_int(pk, 0);
    msgpack_pack_nil(pk);
    mp_pack_cstr(pk, "wbig");
    msgpack_pack_uint64(pk, nbytes);
    msgpack_pack_array(pk, (uint32_t)nh);
    for (int i = 0; i < nh; i++)
        mp_pack_cstr(pk, hs[i]);
    proto_batch_send(&b, wd->sched, wd->ident, wd->ident_len);
    proto_batch_destroy(&b);
}

static void sched_result_inline(world_t *wd, uint64_t id, int st, const void *p, size_t n)
{
    proto_batch_t b;
    proto_batch_init(&b, MSG_RESULT);
    msgpack_packer *pk = proto_batch_add(&b);
    msgpack_pack_array(pk, 6);
    msgpack_pack_uint64(pk, id);
    msgpack_pack_int(pk, st);
    if (st == 0)
        mp_pack_bin(pk, p, n);
    else
        mp_pack_strn(pk, p, n);
    mp_pack_cstr(pk, "wsmall");
    msgpack_pack_uint64(pk, n);
    msgpack_pack_array(pk, 0);
    proto_batch_send(&b, wd->sched, wd->ident, wd->ident_len);
    proto_batch_destroy(&b);
}

/* The object stored under id on any fake worker: its size, or 0. */
static size_t world_size_of(world_t *wd, uint64_t id)
{
    for (int w = 0; w < NW; w++)
        for (int i = 0; i < wd->w[w].nobj; i++)
            if (wd->w[w].obj[i].id == id)
                return wd->w[w].obj[i].len;
    return 0;
}

/* Render a small msgpack object as text (for assertions on options). */
static void obj_text(const msgpack_object *o, char *buf, size_t cap)
{
    FILE *f = fmemopen(buf, cap, "w");
    ck_assert_ptr_nonnull(f);
    msgpack_object_print(f, *o);
    fclose(f);
}

static void sched_on_submit(world_t *wd, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n;
    if (mp_array(&m->body, &items, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *it, *deps;
        size_t k, nd;
        uint64_t id;
        const char *func;
        size_t flen;
        const void *args;
        size_t alen;
        if (mp_array(&items[i], &it, &k) < 0 || k < 7 || k > 8 || mp_u64(&it[0], &id) < 0 ||
            mp_str(&it[1], &func, &flen) < 0 || mp_bin(&it[2], &args, &alen) < 0 ||
            mp_array(&it[3], &deps, &nd) < 0)
            continue;
        pthread_mutex_lock(&wd->mu);
        wd->nsubmit++;
        wd->submit_fields = (int)k;
        wd->submit_opts[0] = '\0';
        if (k == 8)
            obj_text(&it[7], wd->submit_opts, sizeof wd->submit_opts);
        wd->sub_dep = 0;
        if (nd)
            mp_u64(&deps[0], &wd->sub_dep);
        if (wd->nscatter_items)
            wd->submit_after_scatter = 1;
        if (flen == 3 && memcmp(func, "big", 3) == 0)
            sched_result_remote(wd, id, world_size_of(wd, id), wd->holders, wd->nholders);
        else if (flen == 2 && memcmp(func, "ok", 2) == 0)
            sched_result_inline(wd, id, 0, "\xc0", 1);
        pthread_mutex_unlock(&wd->mu);
    }
}

static void sched_on_refetch(world_t *wd, proto_msg_t *m)
{
    const msgpack_object *ids;
    size_t n;
    if (mp_array(&m->body, &ids, &n) < 0)
        return;
    pthread_mutex_lock(&wd->mu);
    for (size_t i = 0; i < n; i++) {
        uint64_t id;
        if (mp_u64(&ids[i], &id) < 0)
            continue;
        wd->nrefetch++;
        if (wd->refetch_mode == RF_ERROR) {
            sched_result_inline(wd, id, 1, "recomputing failed: boom", 24);
        } else if (wd->refetch_mode == RF_DEAD) {
            char hs[1][128];
            snprintf(hs[0], sizeof hs[0], "%s", wd->dead_addr);
            sched_result_remote(wd, id, 10, hs, 1);
        } else {
            /* "Recomputed" on worker 0. */
            char hs[1][128];
            snprintf(hs[0], sizeof hs[0], "%s", wd->w[0].addr);
            sched_result_remote(wd, id, world_size_of(wd, id), hs, 1);
        }
    }
    pthread_mutex_unlock(&wd->mu);
}

static void sched_on_scatter(world_t *wd, proto_msg_t *m)
{
    const msgpack_object *items;
    size_t n;
    if (mp_array(&m->body, &items, &n) < 0)
        return;
    pthread_mutex_lock(&wd->mu);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *it, *ws;
        size_t k, nw;
        int at = wd->nscatter_items;
        if (at >= MAX_SEEN || mp_array(&items[i], &it, &k) < 0 || k != 3 ||
            mp_u64(&it[0], &wd->scat_id[at]) < 0 || mp_u64(&it[1], &wd->scat_nbytes[at]) < 0 ||
            mp_array(&it[2], &ws, &nw) < 0)
            continue;
        wd->scat_nw[at] = (int)nw;
        wd->scat_w0[at] = 0;
        if (nw)
            mp_u64(&ws[0], &wd->scat_w0[at]);
        wd->nscatter_items++;
    }
    pthread_mutex_unlock(&wd->mu);
}

static void sched_on_status(world_t *wd, proto_msg_t *m)
{
    uint64_t req = 0;
    mp_u64(mp_map_get(&m->body, "req"), &req);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pthread_mutex_lock(&wd->mu);
    int n = 0;
    for (int w = 0; w < NW; w++)
        n += wd->w[w].in_status;
    msgpack_pack_map(&pk, 4);
    mp_pack_cstr(&pk, "req");
    msgpack_pack_uint64(&pk, req);
    mp_pack_cstr(&pk, "clients");
    msgpack_pack_int(&pk, 1);
    mp_pack_cstr(&pk, "tasks");
    msgpack_pack_map(&pk, 0);
    mp_pack_cstr(&pk, "workers");
    msgpack_pack_array(&pk, (uint32_t)n);
    for (int w = 0; w < NW; w++) {
        fworker_t *fw = &wd->w[w];
        if (!fw->in_status)
            continue;
        msgpack_pack_array(&pk, 10);
        mp_pack_cstr(&pk, fw->name);
        mp_pack_cstr(&pk, "hostx");
        msgpack_pack_int(&pk, 1000 + w);
        msgpack_pack_int(&pk, 2);
        msgpack_pack_int(&pk, 0);
        msgpack_pack_int(&pk, 5);
        msgpack_pack_uint64(&pk, fw->id);
        mp_pack_cstr(&pk, fw->addr);
        msgpack_pack_uint64(&pk, (uint64_t)fw->nobj * 1000);
        fw->paused ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    }
    pthread_mutex_unlock(&wd->mu);
    sched_send(wd, MSG_STATUS_REPLY, &sb);
    msgpack_sbuffer_destroy(&sb);
}

static void sched_handle(world_t *wd, proto_msg_t *m)
{
    memcpy(wd->ident, m->ident, m->ident_len);
    wd->ident_len = m->ident_len;
    switch (m->hdr.type) {
    case MSG_HELLO: {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        mp_pack_cstr(&pk, "id");
        msgpack_pack_uint64(&pk, 9);
        mp_pack_cstr(&pk, "name");
        mp_pack_cstr(&pk, "fake");
        mp_pack_cstr(&pk, "nworkers");
        msgpack_pack_int(&pk, NW);
        sched_send(wd, MSG_WELCOME, &sb);
        msgpack_sbuffer_destroy(&sb);
        break;
    }
    case MSG_HEARTBEAT: sched_send(wd, MSG_HEARTBEAT, NULL); break;
    case MSG_SUBMIT: sched_on_submit(wd, m); break;
    case MSG_REFETCH: sched_on_refetch(wd, m); break;
    case MSG_SCATTER: sched_on_scatter(wd, m); break;
    case MSG_STATUS: sched_on_status(wd, m); break;
    case MSG_RELEASE: {
        const msgpack_object *ids;
        size_t n;
        if (mp_array(&m->body, &ids, &n) == 0) {
            pthread_mutex_lock(&wd->mu);
            wd->nrelease += (int)n;
            pthread_mutex_unlock(&wd->mu);
        }
        break;
    }
    default: break;
    }
}

/* ---- the fake workers' data endpoints ------------------------------------------------- */

static void worker_handle(world_t *wd, fworker_t *fw, proto_msg_t *m)
{
    uint64_t req = 0;
    const msgpack_object *ids;
    size_t n;
    mp_u64(mp_map_get(&m->body, "req"), &req);
    if (mp_array(mp_map_get(&m->body, "ids"), &ids, &n) < 0 || n > PROTO_MAX_DATA_FRAMES) {
        proto_send_error(fw->sock, m->ident, m->ident_len, PERR_BAD_REQUEST, "bad request");
        return;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pthread_mutex_lock(&wd->mu);
    if (fw->mode == W_MUTE) {
        fw->ngets += m->hdr.type == MSG_GET; /* heard, never answered */
    } else if (m->hdr.type == MSG_GET) {
        proto_frame_t fr[PROTO_MAX_DATA_FRAMES];
        size_t nf = 0;
        fw->ngets++;
        fw->nget_ids += (int)n;
        msgpack_pack_map(&pk, 2);
        mp_pack_cstr(&pk, "req");
        msgpack_pack_uint64(&pk, req);
        mp_pack_cstr(&pk, "items");
        msgpack_pack_array(&pk, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            uint64_t id = 0;
            mp_u64(&ids[i], &id);
            fobj_t *o = NULL;
            for (int j = 0; j < fw->nobj && fw->mode != W_NOTFOUND; j++)
                if (fw->obj[j].id == id)
                    o = &fw->obj[j];
            msgpack_pack_array(&pk, 3);
            msgpack_pack_uint64(&pk, id);
            if (o) {
                msgpack_pack_true(&pk);
                msgpack_pack_uint64(&pk, o->len);
                fr[nf++] = (proto_frame_t){.data = o->data, .len = o->len};
            } else {
                msgpack_pack_false(&pk);
                msgpack_pack_uint64(&pk, 0);
            }
        }
        proto_send(fw->sock, m->ident, m->ident_len, MSG_DATA, sb.data, sb.size, fr, nf);
    } else if (m->hdr.type == MSG_PUT) {
        int ok = fw->mode != W_REFUSE && m->nframes == n;
        fw->nputs++;
        for (size_t i = 0; ok && i < n && fw->nobj < MAX_OBJ; i++) {
            uint64_t id = 0;
            mp_u64(&ids[i], &id);
            fobj_t *o = &fw->obj[fw->nobj++];
            o->id = id;
            o->len = proto_frame_size(m, i);
            o->data = malloc(o->len);
            memcpy(o->data, proto_frame_data(m, i), o->len);
            fw->nput_ids++;
        }
        msgpack_pack_map(&pk, 3);
        mp_pack_cstr(&pk, "req");
        msgpack_pack_uint64(&pk, req);
        mp_pack_cstr(&pk, "ok");
        ok ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
        mp_pack_cstr(&pk, "error");
        ok ? msgpack_pack_nil(&pk) : mp_pack_cstr(&pk, "store full (fake)");
        proto_send(fw->sock, m->ident, m->ident_len, MSG_PUT_ACK, sb.data, sb.size, NULL, 0);
    }
    pthread_mutex_unlock(&wd->mu);
    msgpack_sbuffer_destroy(&sb);
}

static void *world_main(void *arg)
{
    world_t *wd = arg;
    while (!__atomic_load_n(&wd->stop, __ATOMIC_ACQUIRE)) {
        zmq_pollitem_t pi[1 + NW];
        pi[0] = (zmq_pollitem_t){.socket = wd->sched, .events = ZMQ_POLLIN};
        for (int w = 0; w < NW; w++)
            pi[1 + w] = (zmq_pollitem_t){.socket = wd->w[w].sock, .events = ZMQ_POLLIN};
        zmq_poll(pi, 1 + NW, 10);
        for (int s = 0; s < 1 + NW; s++) {
            void *sock = s ? wd->w[s - 1].sock : wd->sched;
            for (;;) {
                proto_msg_t m;
                if (proto_recv(sock, 1, &m, ZMQ_DONTWAIT) < 0) {
                    if (errno == EBADMSG || errno == EPROTONOSUPPORT) {
                        proto_msg_close(&m);
                        continue;
                    }
                    break;
                }
                if (s == 0)
                    sched_handle(wd, &m);
                else
                    worker_handle(wd, &wd->w[s - 1], &m);
                proto_msg_close(&m);
            }
        }
    }
    return NULL;
}

static void *bind_router(void *ctx, char *addr, size_t cap)
{
    void *s = zmq_socket(ctx, ZMQ_ROUTER);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(proto_sock_setup(s, 0), 0);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    ck_assert_int_eq(zmq_bind(s, "tcp://127.0.0.1:*"), 0);
    size_t len = cap;
    ck_assert_int_eq(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, addr, &len), 0);
    return s;
}

static world_t *world_start(void)
{
    world_t *wd = calloc(1, sizeof *wd);
    ck_assert_ptr_nonnull(wd);
    pthread_mutex_init(&wd->mu, NULL);
    wd->ctx = zmq_ctx_new();
    wd->sched = bind_router(wd->ctx, wd->endpoint, sizeof wd->endpoint);
    for (int w = 0; w < NW; w++) {
        fworker_t *fw = &wd->w[w];
        fw->sock = bind_router(wd->ctx, fw->addr, sizeof fw->addr);
        snprintf(fw->name, sizeof fw->name, "w%d", w);
        fw->id = 11 + (uint64_t)w;
        fw->in_status = w < 2; /* the third one is a spare for failover */
    }
    snprintf(wd->dead_addr, sizeof wd->dead_addr, "tcp://127.0.0.1:%d", dead_port());
    ck_assert_int_eq(pthread_create(&wd->th, NULL, world_main, wd), 0);
    return wd;
}

static void world_stop(world_t *wd)
{
    __atomic_store_n(&wd->stop, 1, __ATOMIC_RELEASE);
    pthread_join(wd->th, NULL);
    zmq_close(wd->sched);
    for (int w = 0; w < NW; w++) {
        zmq_close(wd->w[w].sock);
        for (int i = 0; i < wd->w[w].nobj; i++)
            free(wd->w[w].obj[i].data);
    }
    zmq_ctx_term(wd->ctx);
    pthread_mutex_destroy(&wd->mu);
    free(wd);
}

static void world_holders(world_t *wd, int n, const char *const *addrs)
{
    pthread_mutex_lock(&wd->mu);
    wd->nholders = n;
    for (int i = 0; i < n; i++)
        snprintf(wd->holders[i], sizeof wd->holders[i], "%s", addrs[i]);
    pthread_mutex_unlock(&wd->mu);
}

static shoal_client_t *connect_world(world_t *wd)
{
    shoal_error_t err;
    shoal_connect_opts_t o = {.address = wd->endpoint, .timeout = 5, .name = "datatester"};
    shoal_client_t *c = shoal_connect_opts(&o, &err);
    ck_assert_msg(c != NULL, "connect to the fake failed: %s", err.msg);
    return c;
}

/* The id the next task of a client with client id 9 gets. */
static uint64_t next_id(uint64_t n)
{
    return (9ULL << 40) | n;
}

static shoal_future_t *submit_big(shoal_client_t *c)
{
    shoal_error_t err;
    shoal_future_t *f = shoal_submit(c, "big", "\x90", 1, NULL, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    return f;
}

static void check_bytes(shoal_future_t *f, const void *want, size_t wlen, double timeout)
{
    shoal_error_t err;
    const void *data;
    size_t len;
    ck_assert_msg(shoal_result(f, timeout, &data, &len, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(len, wlen);
    ck_assert_msg(memcmp(data, want, wlen) == 0, "the fetched bytes differ");
}

/* ---- results kept on workers ------------------------------------------------------------ */

START_TEST(test_fetch_sizes)
{
    world_t *wd = world_start();
    world_holders(wd, 1, (const char *[]){wd->w[0].addr});
    shoal_client_t *c = connect_world(wd);
    size_t sizes[2] = {256u << 10, 64u << 20};
    for (int k = 0; k < 2; k++) {
        size_t plen;
        void *obj = make_bin(sizes[k], (unsigned)k, &plen);
        world_store(wd, 0, next_id((uint64_t)k + 1), obj, plen);
        shoal_future_t *f = submit_big(c);
        ck_assert_uint_eq(shoal_future_id(f), next_id((uint64_t)k + 1));
        /* FINISHED as soon as the RESULT says where it is; nothing fetched. */
        ck_assert_int_eq(shoal_wait(&f, 1, SHOAL_ALL_COMPLETED, 5, NULL), 1);
        ck_assert_int_eq(shoal_future_status(f), SHOAL_FINISHED);
        ck_assert_str_eq(shoal_future_worker(f), "wbig");
        ck_assert_int_eq(world_get(wd, &wd->w[0].ngets), k);
        /* A 0 timeout still gets the bytes of a finished task. */
        check_bytes(f, obj, plen, 0);
        ck_assert_int_eq(world_get(wd, &wd->w[0].ngets), k + 1);
        /* Asked again: they are here now. */
        check_bytes(f, obj, plen, 0);
        msgpack_object o;
        shoal_error_t err;
        ck_assert_int_eq(shoal_result_object(f, 0, &o, &err), 0);
        ck_assert_int_eq(o.type, MSGPACK_OBJECT_BIN);
        ck_assert_uint_eq(o.via.bin.size, sizes[k]);
        ck_assert_int_eq(world_get(wd, &wd->w[0].ngets), k + 1);
        free(obj);
        shoal_release(f);
    }
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

START_TEST(test_fetch_gather_many)
{
    world_t *wd = world_start();
    world_holders(wd, 1, (const char *[]){wd->w[1].addr});
    shoal_client_t *c = connect_world(wd);
    enum { N = 20 };
    shoal_future_t *fs[N];
    void *objs[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        objs[i] = make_bin(100000 + (size_t)i, (unsigned)i, &lens[i]);
        world_store(wd, 1, next_id((uint64_t)i + 1), objs[i], lens[i]);
    }
    for (int i = 0; i < N; i++)
        fs[i] = submit_big(c);
    ck_assert_int_eq(shoal_wait(fs, N, SHOAL_ALL_COMPLETED, 5, NULL), N);
    shoal_error_t err;
    ck_assert_msg(shoal_gather(fs, N, 10, &err) == 0, "%s", err.msg);
    /* All asked for at once: 16 ids per GET at most, so two GETs. */
    ck_assert_int_eq(world_get(wd, &wd->w[1].nget_ids), N);
    ck_assert_int_le(world_get(wd, &wd->w[1].ngets), 2);
    for (int i = 0; i < N; i++) {
        check_bytes(fs[i], objs[i], lens[i], 0);
        free(objs[i]);
        shoal_release(fs[i]);
    }
    ck_assert_int_eq(world_get(wd, &wd->w[1].nget_ids), N);
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

START_TEST(test_fetch_failover)
{
    world_t *wd = world_start();
    shoal_client_t *c = connect_world(wd);
    size_t plen;
    void *obj = make_bin(300000, 3, &plen);
    /* Task 1: the first holder's address is dead. */
    world_store(wd, 0, next_id(1), obj, plen);
    world_holders(wd, 2, (const char *[]){wd->dead_addr, wd->w[0].addr});
    shoal_future_t *f = submit_big(c);
    double t0 = util_now();
    check_bytes(f, obj, plen, 5);
    /* Refused connections are noticed at once, not after a timeout. */
    ck_assert_msg(util_now() - t0 < 3.0, "failover took %.2f s", util_now() - t0);
    shoal_release(f);

    /* Task 2: the first holder answers "not found". */
    world_store(wd, 0, next_id(2), obj, plen);
    world_store(wd, 2, next_id(2), obj, plen);
    pthread_mutex_lock(&wd->mu);
    wd->w[2].mode = W_NOTFOUND;
    pthread_mutex_unlock(&wd->mu);
    world_holders(wd, 2, (const char *[]){wd->w[2].addr, wd->w[0].addr});
    f = submit_big(c);
    check_bytes(f, obj, plen, 5);
    ck_assert_int_eq(world_get(wd, &wd->w[2].ngets), 1);
    ck_assert_int_eq(world_get(wd, &wd->nrefetch), 0);
    shoal_release(f);
    free(obj);
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

START_TEST(test_fetch_mute_holder)
{
    world_t *wd = world_start();
    shoal_client_t *c = connect_world(wd);
    size_t plen;
    void *obj = make_bin(100000, 5, &plen);
    /* The first holder takes the GET and never answers: after the request
     * deadline (10 s plus the bytes' time) the next holder is asked. */
    world_store(wd, 0, next_id(1), obj, plen);
    pthread_mutex_lock(&wd->mu);
    wd->w[2].mode = W_MUTE;
    pthread_mutex_unlock(&wd->mu);
    world_holders(wd, 2, (const char *[]){wd->w[2].addr, wd->w[0].addr});
    shoal_future_t *f = submit_big(c);
    ck_assert_int_eq(shoal_wait(&f, 1, SHOAL_ALL_COMPLETED, 5, NULL), 1);
    double t0 = util_now();
    check_bytes(f, obj, plen, 0);
    double took = util_now() - t0;
    ck_assert_msg(took >= 9.0 && took < 20.0, "failover from a mute holder took %.2f s", took);
    ck_assert_int_eq(world_get(wd, &wd->w[2].ngets), 1);
    ck_assert_int_eq(world_get(wd, &wd->nrefetch), 0);
    shoal_release(f);
    free(obj);
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

START_TEST(test_fetch_refetch)
{
    world_t *wd = world_start();
    shoal_client_t *c = connect_world(wd);
    shoal_error_t err;
    size_t plen;
    void *obj = make_bin(200000, 4, &plen);

    /* Every holder fails: REFETCH, answered with a holder that has it. */
    world_store(wd, 0, next_id(1), obj, plen);
    world_holders(wd, 1, (const char *[]){wd->dead_addr});
    shoal_future_t *f = submit_big(c);
    check_bytes(f, obj, plen, 5);
    ck_assert_int_eq(world_get(wd, &wd->nrefetch), 1);
    shoal_release(f);

    /* REFETCH answered with an error: the result is lost. */
    pthread_mutex_lock(&wd->mu);
    wd->refetch_mode = RF_ERROR;
    pthread_mutex_unlock(&wd->mu);
    f = submit_big(c);
    ck_assert_int_eq(shoal_result(f, 5, NULL, NULL, &err), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_int_eq(shoal_future_status(f), SHOAL_ERROR);
    ck_assert_msg(strstr(err.msg, "boom"), "%s", err.msg);
    ck_assert_int_eq(world_get(wd, &wd->nrefetch), 2);
    shoal_release(f);

    /* REFETCH answered, every time, with holders that fail: after a bounded
     * number of rounds the result is declared lost. */
    pthread_mutex_lock(&wd->mu);
    wd->refetch_mode = RF_DEAD;
    pthread_mutex_unlock(&wd->mu);
    f = submit_big(c);
    ck_assert_int_eq(shoal_result(f, 10, NULL, NULL, &err), -1);
    ck_assert_int_eq(errno, EIO);
    ck_assert_msg(strstr(err.msg, "lost"), "%s", err.msg);
    ck_assert_int_eq(world_get(wd, &wd->nrefetch), 2 + 3);
    /* shoal_gather reports it too. */
    ck_assert_int_eq(shoal_gather(&f, 1, 1, &err), -1);
    shoal_release(f);
    free(obj);
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

/* ---- scatter ------------------------------------------------------------------------------ */

START_TEST(test_scatter_round_robin)
{
    world_t *wd = world_start();
    shoal_client_t *c = connect_world(wd);
    shoal_error_t err;
    enum { N = 5 };
    const void *data[N];
    size_t lens[N];
    void *bufs[N];
    for (int i = 0; i < N; i++) {
        /* pieces 0..3 small, piece 4 over 64 KiB */
        bufs[i] = make_bin(i == 4 ? (1u << 20) : 100 + (size_t)i, (unsigned)i, &lens[i]);
        data[i] = bufs[i];
    }
    shoal_future_t *fs[N];
    ck_assert_msg(shoal_scatter(c, data, lens, N, 0, fs, &err) == 0, "%s", err.msg);
    /* Round robin over the two listed workers. */
    ck_assert_int_eq(world_get(wd, &wd->w[0].nput_ids) + world_get(wd, &wd->w[1].nput_ids), N);
    ck_assert_int_ge(world_get(wd, &wd->w[0].nput_ids), 2);
    ck_assert_int_ge(world_get(wd, &wd->w[1].nput_ids), 2);
    ck_assert_int_eq(world_get(wd, &wd->w[2].nputs), 0);
    /* The SCATTER saying where each piece is was sent before the call
     * returned. */
    ck_assert_int_eq(world_wait(wd, &wd->nscatter_items, N, 5), N);
    pthread_mutex_lock(&wd->mu);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(wd->scat_id[i], shoal_future_id(fs[i]));
        ck_assert_uint_eq(wd->scat_nbytes[i], lens[i]);
        ck_assert_int_eq(wd->scat_nw[i], 1);
        ck_assert(wd->scat_w0[i] == 11 || wd->scat_w0[i] == 12);
    }
    pthread_mutex_unlock(&wd->mu);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(shoal_future_status(fs[i]), SHOAL_FINISHED);
        ck_assert_ptr_nonnull(shoal_future_worker(fs[i]));
    }
    /* Small pieces are kept here; the large one comes back from its worker. */
    int gets0 = world_get(wd, &wd->w[0].ngets) + world_get(wd, &wd->w[1].ngets);
    for (int i = 0; i < 4; i++)
        check_bytes(fs[i], data[i], lens[i], 0);
    ck_assert_int_eq(world_get(wd, &wd->w[0].ngets) + world_get(wd, &wd->w[1].ngets), gets0);
    check_bytes(fs[4], data[4], lens[4], 5);
    ck_assert_int_eq(world_get(wd, &wd->w[0].ngets) + world_get(wd, &wd->w[1].ngets),
                     gets0 + 1);

    /* Usable as an argument: the task depends on it, after the SCATTER. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    shoal_pack_future(&pk, fs[4]);
    shoal_future_t *t = shoal_submit(c, "ok", sb.data, sb.size, NULL, &err);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(shoal_gather(&t, 1, 5, &err), 0);
    pthread_mutex_lock(&wd->mu);
    ck_assert_uint_eq(wd->sub_dep, shoal_future_id(fs[4]));
    ck_assert_int_eq(wd->submit_after_scatter, 1);
    pthread_mutex_unlock(&wd->mu);
    shoal_release(t);

    /* The next scatter continues the round robin. */
    shoal_future_t *g;
    ck_assert_int_eq(shoal_scatter(c, data, lens, 1, 0, &g, &err), 0);
    ck_assert_int_eq(world_wait(wd, &wd->nscatter_items, N + 1, 5), N + 1);
    shoal_release(g);

    /* Not MessagePack: refused before anything is sent. */
    const void *junk[1] = {"\xc1"};
    size_t jl[1] = {1};
    ck_assert_int_eq(shoal_scatter(c, junk, jl, 1, 0, &g, &err), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(world_get(wd, &wd->nscatter_items), N + 1);

    for (int i = 0; i < N; i++) {
        shoal_release(fs[i]);
        free(bufs[i]);
    }
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

START_TEST(test_scatter_broadcast_and_refusal)
{
    world_t *wd = world_start();
    shoal_client_t *c = connect_world(wd);
    shoal_error_t err;
    const char *raw[3] = {"alpha", "beta", "gamma"};
    size_t lens[3] = {5, 4, 5};
    shoal_future_t *fs[3];
    ck_assert_msg(shoal_scatter_bytes(c, (const void *const *)raw, lens, 3, 1, fs, &err) == 0,
                  "%s", err.msg);
    ck_assert_int_eq(world_get(wd, &wd->w[0].nput_ids), 3);
    ck_assert_int_eq(world_get(wd, &wd->w[1].nput_ids), 3);
    ck_assert_int_eq(world_wait(wd, &wd->nscatter_items, 3, 5), 3);
    pthread_mutex_lock(&wd->mu);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(wd->scat_nw[i], 2);
    /* Stored as bin: 0xc4 len bytes. */
    ck_assert_uint_eq(wd->w[0].obj[0].len, 7);
    ck_assert_int_eq(((unsigned char *)wd->w[0].obj[0].data)[0], 0xc4);
    pthread_mutex_unlock(&wd->mu);
    msgpack_object o;
    ck_assert_int_eq(shoal_result_object(fs[1], 0, &o, &err), 0);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_BIN);
    ck_assert(o.via.bin.size == 4 && memcmp(o.via.bin.ptr, "beta", 4) == 0);
    for (int i = 0; i < 3; i++)
        shoal_release(fs[i]);

    /* Worker 0 refuses: every piece ends up on worker 1. */
    pthread_mutex_lock(&wd->mu);
    wd->w[0].mode = W_REFUSE;
    pthread_mutex_unlock(&wd->mu);
    int before = world_get(wd, &wd->w[1].nput_ids);
    ck_assert_msg(shoal_scatter_bytes(c, (const void *const *)raw, lens, 3, 0, fs, &err) == 0,
                  "%s", err.msg);
    ck_assert_int_eq(world_get(wd, &wd->w[1].nput_ids), before + 3);
    ck_assert_int_eq(world_wait(wd, &wd->nscatter_items, 6, 5), 6);
    pthread_mutex_lock(&wd->mu);
    for (int i = 3; i < 6; i++)
        ck_assert_uint_eq(wd->scat_w0[i], 12);
    pthread_mutex_unlock(&wd->mu);
    for (int i = 0; i < 3; i++)
        shoal_release(fs[i]);

    /* Both refuse: the call fails, no future. */
    pthread_mutex_lock(&wd->mu);
    wd->w[1].mode = W_REFUSE;
    pthread_mutex_unlock(&wd->mu);
    fs[0] = NULL;
    ck_assert_int_eq(shoal_scatter_bytes(c, (const void *const *)raw, lens, 1, 0, fs, &err),
                     -1);
    ck_assert_msg(strstr(err.msg, "store full"), "%s", err.msg);
    ck_assert_ptr_null(fs[0]);

    /* A listed worker whose data endpoint is dead is replaced. */
    pthread_mutex_lock(&wd->mu);
    wd->w[0].mode = W_SERVE;
    wd->w[1].mode = W_SERVE;
    snprintf(wd->w[1].addr, sizeof wd->w[1].addr, "%s", wd->dead_addr);
    pthread_mutex_unlock(&wd->mu);
    before = world_get(wd, &wd->w[0].nput_ids);
    ck_assert_msg(shoal_scatter_bytes(c, (const void *const *)raw, lens, 3, 0, fs, &err) == 0,
                  "%s", err.msg);
    ck_assert_int_eq(world_get(wd, &wd->w[0].nput_ids), before + 3);
    for (int i = 0; i < 3; i++)
        shoal_release(fs[i]);
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

START_TEST(test_scatter_inline)
{
    shoal_error_t err;
    shoal_client_t *c = shoal_connect("inline://", &err);
    ck_assert_ptr_nonnull(c);
    const void *data[2] = {"\x05", "\x25"};
    size_t lens[2] = {1, 1};
    shoal_future_t *fs[2];
    ck_assert_int_eq(shoal_scatter(c, data, lens, 2, 1, fs, &err), 0);
    ck_assert_int_eq(shoal_future_status(fs[0]), SHOAL_FINISHED);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    shoal_pack_future(&pk, fs[0]);
    shoal_pack_future(&pk, fs[1]);
    shoal_future_t *s = shoal_submit(c, "shoal.sum", sb.data, sb.size, NULL, &err);
    msgpack_sbuffer_destroy(&sb);
    ck_assert_ptr_nonnull(s);
    int64_t v = 0;
    ck_assert_int_eq(shoal_result_i64(s, 0, &v, &err), 0);
    ck_assert_int_eq(v, 42);
    shoal_release(s);
    shoal_release(fs[0]);
    shoal_release(fs[1]);
    shoal_disconnect(c);
}
END_TEST

/* ---- submit options and status ------------------------------------------------------------- */

START_TEST(test_submit_opts)
{
    world_t *wd = world_start();
    shoal_client_t *c = connect_world(wd);
    shoal_error_t err;
    const char *ws[] = {"w0", "w1", NULL};
    shoal_submit_opts_t o = {.resources = " GPU=1 , MEM=4e9", .workers = ws};
    shoal_future_t *f = shoal_submit(c, "ok", "\x90", 1, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert_int_eq(shoal_gather(&f, 1, 5, &err), 0);
    pthread_mutex_lock(&wd->mu);
    ck_assert_int_eq(wd->submit_fields, 8);
    ck_assert_msg(strstr(wd->submit_opts, "\"resources\"") &&
                      strstr(wd->submit_opts, "\"GPU\"") && strstr(wd->submit_opts, "\"MEM\"") &&
                      strstr(wd->submit_opts, "\"workers\"") && strstr(wd->submit_opts, "\"w1\""),
                  "options map: %s", wd->submit_opts);
    pthread_mutex_unlock(&wd->mu);
    shoal_release(f);

    /* Without restrictions the item keeps its 7 fields. */
    shoal_submit_opts_t plain = {.priority = 3};
    f = shoal_submit(c, "ok", "\x90", 1, &plain, &err);
    ck_assert_int_eq(shoal_gather(&f, 1, 5, &err), 0);
    ck_assert_int_eq(world_get(wd, &wd->submit_fields), 7);
    shoal_release(f);
    const char *none[] = {NULL};
    shoal_submit_opts_t empty = {.workers = none};
    f = shoal_submit(c, "ok", "\x90", 1, &empty, &err);
    ck_assert_int_eq(shoal_gather(&f, 1, 5, &err), 0);
    ck_assert_int_eq(world_get(wd, &wd->submit_fields), 7);
    shoal_release(f);

    /* Malformed resources are refused with a reason, and nothing is sent. */
    static const char *const bad[] = {
        "",        "GPU",       "=1",          "GPU=0",     "GPU=-1",  "GPU=abc",
        "GPU=1,GPU=2", "G P=1", "GPU=1,",      "GPU=nan",   "GPU=inf", "GPU=1e400",
        "GPU=0x10", "GPU=1 2",  "G$=1",        ",GPU=1",
    };
    int nsub = world_get(wd, &wd->nsubmit);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        shoal_submit_opts_t b = {.resources = bad[i]};
        err.msg[0] = '\0';
        ck_assert_msg(shoal_submit(c, "ok", "\x90", 1, &b, &err) == NULL, "accepted '%s'",
                      bad[i]);
        ck_assert_int_eq(errno, EINVAL);
        ck_assert_msg(strstr(err.msg, "resources"), "'%s': %s", bad[i], err.msg);
    }
    const char *badw[] = {"w0", "", NULL};
    shoal_submit_opts_t bw = {.workers = badw};
    ck_assert_ptr_null(shoal_submit(c, "ok", "\x90", 1, &bw, &err));
    ck_assert_int_eq(errno, EINVAL);
    usleep(100000);
    ck_assert_int_eq(world_get(wd, &wd->nsubmit), nsub);

    /* Inline clients validate the same way. */
    shoal_client_t *ic = shoal_connect("inline://", &err);
    shoal_submit_opts_t b = {.resources = "GPU=two"};
    ck_assert_ptr_null(shoal_submit(ic, "shoal.noop", "\x90", 1, &b, &err));
    ck_assert_int_eq(errno, EINVAL);
    f = shoal_submit(ic, "shoal.noop", "\x90", 1, &o, &err);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(shoal_future_status(f), SHOAL_FINISHED);
    shoal_release(f);
    shoal_disconnect(ic);

    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

START_TEST(test_status_fields)
{
    world_t *wd = world_start();
    pthread_mutex_lock(&wd->mu);
    wd->w[1].paused = 1;
    pthread_mutex_unlock(&wd->mu);
    shoal_client_t *c = connect_world(wd);
    shoal_error_t err;
    shoal_status_info_t st;
    ck_assert_msg(shoal_status(c, &st, 5, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(st.nworkers, 2);
    ck_assert_str_eq(st.workers[0].name, "w0");
    ck_assert_uint_eq(st.workers[0].id, 11);
    ck_assert_str_eq(st.workers[0].data, wd->w[0].addr);
    ck_assert_int_eq(st.workers[0].paused, 0);
    ck_assert_uint_eq(st.workers[1].id, 12);
    ck_assert_int_eq(st.workers[1].paused, 1);
    shoal_status_free(&st);

    /* Paused workers get no scattered data while others can take it. */
    const void *d[2] = {"\x01", "\x02"};
    size_t l[2] = {1, 1};
    shoal_future_t *fs[2];
    ck_assert_int_eq(shoal_scatter(c, d, l, 2, 0, fs, &err), 0);
    ck_assert_int_eq(world_get(wd, &wd->w[0].nput_ids), 2);
    ck_assert_int_eq(world_get(wd, &wd->w[1].nput_ids), 0);
    shoal_release(fs[0]);
    shoal_release(fs[1]);
    shoal_disconnect(c);
    world_stop(wd);
}
END_TEST

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("fetch");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fetch_sizes);
    tcase_add_test(tc, test_fetch_gather_many);
    tcase_add_test(tc, test_fetch_failover);
    tcase_add_test(tc, test_fetch_mute_holder);
    tcase_add_test(tc, test_fetch_refetch);
    suite_add_tcase(s, tc);

    tc = tcase_create("scatter");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_scatter_round_robin);
    tcase_add_test(tc, test_scatter_broadcast_and_refusal);
    tcase_add_test(tc, test_scatter_inline);
    suite_add_tcase(s, tc);

    tc = tcase_create("options");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_submit_opts);
    tcase_add_test(tc, test_status_fields);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!getenv("SHOAL_LOG_LEVEL"))
        setenv("SHOAL_LOG_LEVEL", "error", 1);
    SRunner *sr = srunner_create(data_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
