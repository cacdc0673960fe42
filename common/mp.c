/*
 * mp.c - validated MessagePack access.  Everything here treats the object
 * as untrusted: wrong types give -1, never an assertion or a crash.
 */
#include "mp.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

int mp_u64(const msgpack_object *o, uint64_t *out)
{
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *out = o->via.u64;
        return 0;
    }
    /* msgpack-c decodes non-negative values as POSITIVE_INTEGER, but a
     * non-canonical encoder may send 0..INT64_MAX as a signed int. */
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= 0) {
        *out = (uint64_t)o->via.i64;
        return 0;
    }
    return -1;
}

int mp_i64(const msgpack_object *o, int64_t *out)
{
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 0;
    }
    return -1;
}

int mp_f64(const msgpack_object *o, double *out)
{
    if (!o)
        return -1;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *out = o->via.f64;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)o->via.i64;
        return 0;
    default:
        return -1;
    }
}

int mp_bool(const msgpack_object *o, int *out)
{
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return -1;
    *out = o->via.boolean ? 1 : 0;
    return 0;
}

int mp_str(const msgpack_object *o, const char **p, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return -1;
    *p = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

int mp_bin(const msgpack_object *o, const void **p, size_t *n)
{
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_BIN) {
        *p = o->via.bin.ptr;
        *n = o->via.bin.size;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_STR) {
        *p = o->via.str.ptr;
        *n = o->via.str.size;
        return 0;
    }
    return -1;
}

int mp_strcpy(const msgpack_object *o, char *dst, size_t cap)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || !dst || cap == 0)
        return -1;
    size_t n = o->via.str.size;
    if (n >= cap)
        return -1;
    if (n)
        memcpy(dst, o->via.str.ptr, n);
    dst[n] = '\0';
    return 0;
}

char *mp_strdup(const msgpack_object *o)
{
    if (!o || o->type != MSGPACK_OBJECT_STR) {
        errno = EINVAL;
        return NULL;
    }
    size_t n = o->via.str.size;
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    if (n)
        memcpy(s, o->via.str.ptr, n);
    s[n] = '\0';
    return s;
}

int mp_is_nil(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_NIL;
}

int mp_array(const msgpack_object *o, const msgpack_object **items, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    *items = o->via.array.ptr;
    *n = o->via.array.size;
    return 0;
}

const msgpack_object *mp_map_get(const msgpack_object *o, const char *key)
{
    if (!o || !key || o->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t klen = strlen(key);
    const msgpack_object_kv *kv = o->via.map.ptr;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &kv[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            (klen == 0 || memcmp(k->via.str.ptr, key, klen) == 0))
            return &kv[i].val;
    }
    return NULL;
}

int mp_str_eq(const msgpack_object *o, const char *s)
{
    if (!o || !s || o->type != MSGPACK_OBJECT_STR)
        return 0;
    size_t n = strlen(s);
    return o->via.str.size == n && (n == 0 || memcmp(o->via.str.ptr, s, n) == 0);
}

int mp_pack_cstr(msgpack_packer *pk, const char *s)
{
    if (!s)
        return msgpack_pack_nil(pk);
    return mp_pack_strn(pk, s, strlen(s));
}

int mp_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    if (n > UINT32_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    if (msgpack_pack_str(pk, n) != 0)
        return -1;
    return n ? msgpack_pack_str_body(pk, s, n) : 0;
}

int mp_pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    if (msgpack_pack_bin(pk, n) != 0)
        return -1;
    return n ? msgpack_pack_bin_body(pk, p, n) : 0;
}

int mp_pack_raw(msgpack_packer *pk, const void *p, size_t n)
{
    /* Zero bytes are not an object: packing them would corrupt the
     * enclosing array. */
    if (n == 0 || !p) {
        errno = EINVAL;
        return -1;
    }
    /* The packer's callback appends bytes verbatim; that is exactly what a
     * pre-packed object needs. */
    return pk->callback(pk->data, (const char *)p, n);
}
