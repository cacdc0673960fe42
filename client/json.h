/*
 * json.h - a small, strict, bounded JSON reader and a MessagePack-to-JSON
 * writer, for graph files (`shoal graph FILE.json`) and for printing task
 * results.  Internal to libshoal (not installed).
 *
 * Reading (RFC 8259, nothing more): no comments, no trailing commas, no
 * NaN/Infinity, no leading zeros, no single quotes.  A UTF-8 byte order mark
 * at the very start is skipped.  Bounds: JSON_MAX_BYTES of input,
 * JSON_MAX_DEPTH nested arrays/objects, JSON_MAX_VALUES values in all.
 * Strings are checked to be valid UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF), escapes are decoded (\uXXXX surrogate pairs
 * joined; a lone surrogate is an error).  A number without a fraction or an
 * exponent is an integer and must fit in int64; any other number is a
 * double and must be finite.  Errors carry the line and column (both
 * 1-based; the column counts characters, not bytes) and a sentence.
 *
 * Ownership: a json_doc_t owns every value, key and string reachable from
 * its root (one arena, freed by json_doc_destroy).  The input text is not
 * referenced after json_parse returns, except by json_pos(), which needs it
 * again and takes it as an argument.
 */
#ifndef SHOAL_JSON_H
#define SHOAL_JSON_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_BYTES (64u << 20)
#define JSON_MAX_DEPTH 64
#define JSON_MAX_VALUES (1u << 23)
/* Longest number literal accepted (digits, sign, point and exponent). */
#define JSON_MAX_NUMBER 128

#define JSON_HIDDEN __attribute__((visibility("hidden")))

typedef enum json_type {
    JSON_NULL = 0,
    JSON_BOOL,
    JSON_INT,
    JSON_DOUBLE,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} json_type_t;

typedef struct json_value json_value_t;
typedef struct json_member json_member_t;

struct json_value {
    json_type_t type;
    uint32_t pos;                   /* byte offset of the value in the text */
    union {
        int b;                      /* JSON_BOOL: 0 or 1 */
        int64_t i;                  /* JSON_INT */
        double d;                   /* JSON_DOUBLE (finite) */
        struct {
            const char *s;          /* decoded UTF-8, NUL-terminated; may hold
                                       NUL bytes itself (from \u0000) */
            size_t len;
        } str;
        struct {
            const json_value_t *v;
            size_t n;
        } arr;
        struct {
            const json_member_t *m; /* in document order; duplicates kept */
            size_t n;
        } obj;
    } u;
};

struct json_member {
    const char *key;                /* decoded, NUL-terminated */
    size_t klen;
    uint32_t pos;                   /* byte offset of the key */
    json_value_t value;
};

typedef struct json_error {
    unsigned line, col;             /* 0 when the error has no position */
    char msg[256];
} json_error_t;

typedef struct json_doc json_doc_t;

/* Parse `len` bytes of `text` (which need not be NUL-terminated).  Returns
 * the document, or NULL with errno (EINVAL: not valid JSON, E2BIG: over a
 * bound, ENOMEM) and, if err is not NULL, the position and reason. */
JSON_HIDDEN json_doc_t *json_parse(const char *text, size_t len, json_error_t *err);
JSON_HIDDEN const json_value_t *json_root(const json_doc_t *d);
JSON_HIDDEN void json_doc_destroy(json_doc_t *d);

/* Line and column (1-based, columns in characters) of byte offset `pos` of
 * the text that was parsed. */
JSON_HIDDEN void json_pos(const char *text, size_t len, size_t pos, unsigned *line,
                          unsigned *col);

/* "string", "array", ... for messages. */
JSON_HIDDEN const char *json_type_name(json_type_t t);

/* Pack v as MessagePack: null -> nil, booleans, integers (the smallest
 * encoding), doubles (float64), strings -> str, arrays, objects -> maps with
 * str keys.  0, or -1 if the packer failed (out of memory). */
JSON_HIDDEN int json_pack(msgpack_packer *pk, const json_value_t *v);

/* Write a MessagePack object as JSON text on one line (", " and ": "
 * separators).  nil -> null; integers exactly; floats in the shortest form
 * that reads back to the same double, with ".0" added to integral ones so
 * that they stay floats (NaN and infinities, which JSON lacks, -> null);
 * str -> a string (bytes that are not valid UTF-8 become U+FFFD); bin -> a
 * string if it is valid UTF-8, else {"base64": "..."}; ext -> {"ext": TYPE,
 * "base64": "..."}; map keys that are not strings are written as the string
 * of their JSON text.  0, or -1 with errno if writing failed. */
JSON_HIDDEN int json_write_msgpack(FILE *out, const msgpack_object *o);

/* Write bytes as a JSON string (with the quotes). */
JSON_HIDDEN int json_write_string(FILE *out, const char *s, size_t len);

#endif
