/*
 * mp.h - validated access to decoded MessagePack objects from the network,
 * and small packing helpers.  Every getter checks the type and returns -1
 * on a mismatch (never asserts): input from a socket is untrusted.
 */
#ifndef SHOAL_MP_H
#define SHOAL_MP_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

int mp_u64(const msgpack_object *o, uint64_t *out);
int mp_i64(const msgpack_object *o, int64_t *out);
int mp_f64(const msgpack_object *o, double *out);     /* float or integer */
int mp_bool(const msgpack_object *o, int *out);
int mp_str(const msgpack_object *o, const char **p, size_t *n);
/* bin or str */
int mp_bin(const msgpack_object *o, const void **p, size_t *n);
/* Copy a str into dst (NUL-terminated).  -1 if not a str or n >= cap. */
int mp_strcpy(const msgpack_object *o, char *dst, size_t cap);
/* strdup of a str (NULL for nil or on error; check with mp_is_nil first). */
char *mp_strdup(const msgpack_object *o);
int mp_is_nil(const msgpack_object *o);
/* Array view: -1 if not an array. */
int mp_array(const msgpack_object *o, const msgpack_object **items, size_t *n);
/* Value for string key in a map, or NULL (also if o is not a map). */
const msgpack_object *mp_map_get(const msgpack_object *o, const char *key);
/* True if two strs/a str and a C string are equal. */
int mp_str_eq(const msgpack_object *o, const char *s);

int mp_pack_cstr(msgpack_packer *pk, const char *s);     /* NULL packs nil */
int mp_pack_strn(msgpack_packer *pk, const char *s, size_t n);
int mp_pack_bin(msgpack_packer *pk, const void *p, size_t n);
/* Append raw, already-packed msgpack bytes (one object) to the packer. */
int mp_pack_raw(msgpack_packer *pk, const void *p, size_t n);

#endif
