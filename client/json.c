/*
 * json.c - the strict, bounded JSON reader and the MessagePack-to-JSON
 * writer described in json.h.
 *
 * The reader is a recursive-descent parser (recursion is bounded by
 * JSON_MAX_DEPTH) that builds a tree in one arena.  The items of an array or
 * the members of an object are not known in number until its closing
 * bracket, so they are collected on a scratch stack shared by all levels
 * (children are pushed above their parent's pending items and popped before
 * the parent goes on) and copied to the arena, contiguous, when the
 * container closes: one arena allocation per container and none per value.
 * Positions are byte offsets; line and column are computed only when an
 * error is reported.
 */
#define _GNU_SOURCE
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ------------------------------------------------------------------ */

#define S_BLOCK_MIN (64u << 10)
#define S_ALIGN 16u

typedef struct s_block {
    struct s_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} s_block_t;

struct json_doc {
    s_block_t *blocks;
    json_value_t root;
};

static void *s_alloc(json_doc_t *d, size_t n)
{
    n = (n + S_ALIGN - 1) & ~(size_t)(S_ALIGN - 1);
    if (n == 0)
        n = S_ALIGN;
    s_block_t *b = d->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > S_BLOCK_MIN ? n : S_BLOCK_MIN;
        s_block_t *nb = malloc(sizeof *nb + cap);
        if (!nb)
            return NULL;
        nb->used = 0;
        nb->cap = cap;
        /* A big allocation gets a block of its own behind the current one,
         * so the current block's free space is not thrown away. */
        if (b && n > S_BLOCK_MIN) {
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            d->blocks = nb;
        }
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

void json_doc_destroy(json_doc_t *d)
{
    if (!d)
        return;
    for (s_block_t *b = d->blocks; b;) {
        s_block_t *next = b->next;
        free(b);
        b = next;
    }
    free(d);
}

const json_value_t *json_root(const json_doc_t *d)
{
    return d ? &d->root : NULL;
}

const char *json_type_name(json_type_t t)
{
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "boolean";
    case JSON_INT: return "integer";
    case JSON_DOUBLE: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "value";
}

/* ---- UTF-8 ------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at p (n bytes available), or 0
 * if it is not one: overlong forms, surrogates (U+D800..DFFF) and code
 * points above U+10FFFF are invalid. */
static size_t s_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char b = p[0];
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (b >= 0xe0 && b <= 0xef) {
        if (n < 3 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if (b == 0xe0 && p[1] < 0xa0)
            return 0; /* overlong */
        if (b == 0xed && p[1] >= 0xa0)
            return 0; /* surrogate */
        return 3;
    }
    if (b >= 0xf0 && b <= 0xf4) {
        if (n < 4 || (p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
            (p[3] & 0xc0) != 0x80)
            return 0;
        if (b == 0xf0 && p[1] < 0x90)
            return 0; /* overlong */
        if (b == 0xf4 && p[1] >= 0x90)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

static size_t s_utf8_put(unsigned char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

void json_pos(const char *text, size_t len, size_t pos, unsigned *line, unsigned *col)
{
    const unsigned char *p = (const unsigned char *)text;
    unsigned l = 1, c = 1;
    if (pos > len)
        pos = len;
    for (size_t i = 0; i < pos; i++) {
        if (p[i] == '\n') {
            l++;
            c = 1;
        } else if ((p[i] & 0xc0) != 0x80) {
            c++; /* a continuation byte belongs to the character before */
        }
    }
    *line = l;
    *col = c;
}

/* ---- parser ------------------------------------------------------------------ */

typedef struct s_parser {
    const unsigned char *p;
    size_t len, pos;
    json_doc_t *doc;
    json_value_t *vs;       /* scratch: items of the arrays being parsed */
    size_t vn, vcap;
    json_member_t *ms;      /* scratch: members of the objects being parsed */
    size_t mn, mcap;
    size_t nvalues;
    /* the first error */
    int failed;
    int errnum;
    size_t errpos;
    char msg[256];
} s_parser_t;

static int __attribute__((format(printf, 4, 5)))
s_fail(s_parser_t *ps, size_t pos, int errnum, const char *fmt, ...)
{
    if (!ps->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ps->msg, sizeof ps->msg, fmt, ap);
        va_end(ap);
        ps->failed = 1;
        ps->errnum = errnum;
        ps->errpos = pos;
    }
    return -1;
}

static int s_nomem(s_parser_t *ps)
{
    return s_fail(ps, ps->pos, ENOMEM, "out of memory");
}

/* Report the byte at ps->pos as unexpected, saying what was expected. */
static int s_unexpected(s_parser_t *ps, const char *expected)
{
    if (ps->pos >= ps->len)
        return s_fail(ps, ps->pos, EINVAL, "unexpected end of input: expected %s",
                      expected);
    unsigned char b = ps->p[ps->pos];
    if (b >= 0x20 && b < 0x7f)
        return s_fail(ps, ps->pos, EINVAL, "unexpected character '%c': expected %s", b,
                      expected);
    return s_fail(ps, ps->pos, EINVAL, "unexpected byte 0x%02x: expected %s", b, expected);
}

static void s_ws(s_parser_t *ps)
{
    while (ps->pos < ps->len) {
        unsigned char b = ps->p[ps->pos];
        if (b != ' ' && b != '\t' && b != '\n' && b != '\r')
            return;
        ps->pos++;
    }
}

static int s_hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* A string at ps->pos (the opening quote).  The decoded bytes go to the
 * arena; *out and *olen receive them (NUL-terminated). */
static int s_string(s_parser_t *ps, const char **out, size_t *olen)
{
    size_t start = ps->pos + 1, i = start;
    /* First pass: find the closing quote (an escaped quote does not close),
     * so that the decoded string, never longer than its source, can be
     * allocated at once. */
    for (;;) {
        if (i >= ps->len)
            return s_fail(ps, ps->pos, EINVAL, "unterminated string");
        unsigned char b = ps->p[i];
        if (b == '"')
            break;
        if (b == '\\')
            i++;
        i++;
    }
    size_t end = i;
    unsigned char *o = s_alloc(ps->doc, end - start + 1);
    if (!o)
        return s_nomem(ps);
    size_t n = 0;
    for (i = start; i < end;) {
        unsigned char b = ps->p[i];
        if (b < 0x20)
            return s_fail(ps, i, EINVAL,
                          "control character 0x%02x in a string (write it as an escape)",
                          b);
        if (b >= 0x80) {
            size_t k = s_utf8_len(ps->p + i, end - i);
            if (k == 0)
                return s_fail(ps, i, EINVAL, "invalid UTF-8 in a string (byte 0x%02x)", b);
            memcpy(o + n, ps->p + i, k);
            n += k;
            i += k;
            continue;
        }
        if (b != '\\') {
            o[n++] = b;
            i++;
            continue;
        }
        /* An escape; the first pass guarantees a byte after the backslash
         * before `end`. */
        unsigned char e = ps->p[i + 1];
        switch (e) {
        case '"': o[n++] = '"'; i += 2; continue;
        case '\\': o[n++] = '\\'; i += 2; continue;
        case '/': o[n++] = '/'; i += 2; continue;
        case 'b': o[n++] = '\b'; i += 2; continue;
        case 'f': o[n++] = '\f'; i += 2; continue;
        case 'n': o[n++] = '\n'; i += 2; continue;
        case 'r': o[n++] = '\r'; i += 2; continue;
        case 't': o[n++] = '\t'; i += 2; continue;
        case 'u': break;
        default:
            if (e >= 0x20 && e < 0x7f)
                return s_fail(ps, i, EINVAL, "invalid escape '\\%c' in a string", e);
            return s_fail(ps, i, EINVAL, "invalid escape in a string (byte 0x%02x)", e);
        }
        uint32_t cp, lo;
        if (end - i < 6 || s_hex4(ps->p + i + 2, &cp) < 0)
            return s_fail(ps, i, EINVAL, "invalid \\u escape: expected 4 hex digits");
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return s_fail(ps, i, EINVAL,
                          "invalid \\u escape: \\u%04X is a low surrogate without a high "
                          "one before it",
                          (unsigned)cp);
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end - i < 12 || ps->p[i + 6] != '\\' || ps->p[i + 7] != 'u' ||
                s_hex4(ps->p + i + 8, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                return s_fail(ps, i, EINVAL,
                              "invalid \\u escape: high surrogate \\u%04X is not followed "
                              "by a low surrogate",
                              (unsigned)cp);
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            i += 12;
        } else {
            i += 6;
        }
        n += s_utf8_put(o + n, cp);
    }
    o[n] = '\0';
    ps->pos = end + 1;
    *out = (const char *)o;
    *olen = n;
    return 0;
}

static int s_number(s_parser_t *ps, json_value_t *v)
{
    size_t start = ps->pos, i = start;
    int neg = 0, integral = 1;
    const unsigned char *p = ps->p;

    if (p[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= ps->len || p[i] < '0' || p[i] > '9') {
        ps->pos = i;
        return s_unexpected(ps, "a digit");
    }
    if (p[i] == '0' && i + 1 < ps->len && p[i + 1] >= '0' && p[i + 1] <= '9')
        return s_fail(ps, start, EINVAL, "leading zeros are not allowed in numbers");
    while (i < ps->len && p[i] >= '0' && p[i] <= '9')
        i++;
    if (i < ps->len && p[i] == '.') {
        integral = 0;
        i++;
        if (i >= ps->len || p[i] < '0' || p[i] > '9') {
            ps->pos = i;
            return s_unexpected(ps, "a digit after the decimal point");
        }
        while (i < ps->len && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    if (i < ps->len && (p[i] == 'e' || p[i] == 'E')) {
        integral = 0;
        i++;
        if (i < ps->len && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= ps->len || p[i] < '0' || p[i] > '9') {
            ps->pos = i;
            return s_unexpected(ps, "a digit in the exponent");
        }
        while (i < ps->len && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    size_t n = i - start;
    if (n > JSON_MAX_NUMBER)
        return s_fail(ps, start, E2BIG, "number longer than %d characters",
                      JSON_MAX_NUMBER);
    v->pos = (uint32_t)start;
    if (integral) {
        /* Accumulate as a negative number so that INT64_MIN fits. */
        int64_t acc = 0;
        for (size_t k = start + (size_t)neg; k < i; k++) {
            int d = p[k] - '0';
            if (acc < (INT64_MIN + d) / 10)
                return s_fail(ps, start, ERANGE,
                              "integer %.*s is out of range (64-bit signed integers only)",
                              (int)(n > 40 ? 40 : n), (const char *)p + start);
            acc = acc * 10 - d;
        }
        if (!neg) {
            if (acc == INT64_MIN)
                return s_fail(ps, start, ERANGE,
                              "integer %.*s is out of range (64-bit signed integers only)",
                              (int)n, (const char *)p + start);
            acc = -acc;
        }
        v->type = JSON_INT;
        v->u.i = acc;
    } else {
        char buf[JSON_MAX_NUMBER + 1];
        memcpy(buf, p + start, n);
        buf[n] = '\0';
        errno = 0;
        double d = strtod(buf, NULL);
        if (!isfinite(d))
            return s_fail(ps, start, ERANGE, "number %.*s is out of range",
                          (int)(n > 40 ? 40 : n), buf);
        v->type = JSON_DOUBLE;
        v->u.d = d;
    }
    ps->pos = i;
    return 0;
}

static int s_literal(s_parser_t *ps, json_value_t *v)
{
    static const struct {
        const char *word;
        json_type_t type;
        int b;
    } lits[] = {{"true", JSON_BOOL, 1}, {"false", JSON_BOOL, 0}, {"null", JSON_NULL, 0}};
    for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
        size_t wl = strlen(lits[k].word);
        if (ps->len - ps->pos >= wl && memcmp(ps->p + ps->pos, lits[k].word, wl) == 0) {
            /* "trueish" is not "true" followed by garbage we report later:
             * say so here, where the word is. */
            size_t after = ps->pos + wl;
            if (after < ps->len && ((ps->p[after] >= 'a' && ps->p[after] <= 'z') ||
                                    (ps->p[after] >= 'A' && ps->p[after] <= 'Z') ||
                                    (ps->p[after] >= '0' && ps->p[after] <= '9')))
                break;
            v->type = lits[k].type;
            v->u.b = lits[k].b;
            v->pos = (uint32_t)ps->pos;
            ps->pos = after;
            return 0;
        }
    }
    return s_fail(ps, ps->pos, EINVAL,
                  "invalid literal: expected true, false, null, a number, a string, an "
                  "array or an object");
}

static int s_value(s_parser_t *ps, json_value_t *v, int depth);

static int s_push_value(s_parser_t *ps, const json_value_t *v)
{
    if (ps->vn == ps->vcap) {
        size_t ncap = ps->vcap ? ps->vcap * 2 : 64;
        json_value_t *nv = realloc(ps->vs, ncap * sizeof *nv);
        if (!nv)
            return s_nomem(ps);
        ps->vs = nv;
        ps->vcap = ncap;
    }
    ps->vs[ps->vn++] = *v;
    return 0;
}

static int s_push_member(s_parser_t *ps, const json_member_t *m)
{
    if (ps->mn == ps->mcap) {
        size_t ncap = ps->mcap ? ps->mcap * 2 : 64;
        json_member_t *nm = realloc(ps->ms, ncap * sizeof *nm);
        if (!nm)
            return s_nomem(ps);
        ps->ms = nm;
        ps->mcap = ncap;
    }
    ps->ms[ps->mn++] = *m;
    return 0;
}

static int s_array(s_parser_t *ps, json_value_t *v, int depth)
{
    size_t base = ps->vn;
    v->type = JSON_ARRAY;
    v->pos = (uint32_t)ps->pos;
    ps->pos++; /* '[' */
    s_ws(ps);
    if (ps->pos < ps->len && ps->p[ps->pos] == ']') {
        ps->pos++;
        v->u.arr.v = NULL;
        v->u.arr.n = 0;
        return 0;
    }
    for (;;) {
        json_value_t item;
        if (s_value(ps, &item, depth + 1) < 0 || s_push_value(ps, &item) < 0)
            return -1;
        s_ws(ps);
        if (ps->pos >= ps->len)
            return s_fail(ps, ps->pos, EINVAL, "unexpected end of input: an array is not "
                                               "closed (expected ',' or ']')");
        unsigned char b = ps->p[ps->pos];
        if (b == ']') {
            ps->pos++;
            break;
        }
        if (b != ',')
            return s_unexpected(ps, "',' or ']' after an array element");
        ps->pos++;
        s_ws(ps);
        if (ps->pos < ps->len && ps->p[ps->pos] == ']')
            return s_fail(ps, ps->pos, EINVAL, "trailing comma before ']'");
    }
    size_t n = ps->vn - base;
    json_value_t *items = s_alloc(ps->doc, n * sizeof *items);
    if (!items)
        return s_nomem(ps);
    memcpy(items, ps->vs + base, n * sizeof *items);
    ps->vn = base;
    v->u.arr.v = items;
    v->u.arr.n = n;
    return 0;
}

static int s_object(s_parser_t *ps, json_value_t *v, int depth)
{
    size_t base = ps->mn;
    v->type = JSON_OBJECT;
    v->pos = (uint32_t)ps->pos;
    ps->pos++; /* '{' */
    s_ws(ps);
    if (ps->pos < ps->len && ps->p[ps->pos] == '}') {
        ps->pos++;
        v->u.obj.m = NULL;
        v->u.obj.n = 0;
        return 0;
    }
    for (;;) {
        json_member_t m;
        if (ps->pos >= ps->len)
            return s_fail(ps, ps->pos, EINVAL, "unexpected end of input: an object is not "
                                               "closed (expected a key)");
        if (ps->p[ps->pos] != '"')
            return s_unexpected(ps, "a string (object keys must be strings)");
        m.pos = (uint32_t)ps->pos;
        if (s_string(ps, &m.key, &m.klen) < 0)
            return -1;
        s_ws(ps);
        if (ps->pos >= ps->len || ps->p[ps->pos] != ':')
            return s_unexpected(ps, "':' after an object key");
        ps->pos++;
        if (s_value(ps, &m.value, depth + 1) < 0 || s_push_member(ps, &m) < 0)
            return -1;
        s_ws(ps);
        if (ps->pos >= ps->len)
            return s_fail(ps, ps->pos, EINVAL, "unexpected end of input: an object is not "
                                               "closed (expected ',' or '}')");
        unsigned char b = ps->p[ps->pos];
        if (b == '}') {
            ps->pos++;
            break;
        }
        if (b != ',')
            return s_unexpected(ps, "',' or '}' after an object member");
        ps->pos++;
        s_ws(ps);
        if (ps->pos < ps->len && ps->p[ps->pos] == '}')
            return s_fail(ps, ps->pos, EINVAL, "trailing comma before '}'");
    }
    size_t n = ps->mn - base;
    json_member_t *ms = s_alloc(ps->doc, n * sizeof *ms);
    if (!ms)
        return s_nomem(ps);
    memcpy(ms, ps->ms + base, n * sizeof *ms);
    ps->mn = base;
    v->u.obj.m = ms;
    v->u.obj.n = n;
    return 0;
}

static int s_value(s_parser_t *ps, json_value_t *v, int depth)
{
    s_ws(ps);
    if (ps->pos >= ps->len)
        return s_unexpected(ps, "a value");
    if (++ps->nvalues > JSON_MAX_VALUES)
        return s_fail(ps, ps->pos, E2BIG, "more than %u values", JSON_MAX_VALUES);
    unsigned char b = ps->p[ps->pos];
    switch (b) {
    case '{':
    case '[':
        if (depth >= JSON_MAX_DEPTH)
            return s_fail(ps, ps->pos, E2BIG,
                          "arrays and objects nested deeper than %d levels",
                          JSON_MAX_DEPTH);
        return b == '{' ? s_object(ps, v, depth) : s_array(ps, v, depth);
    case '"':
        v->type = JSON_STRING;
        v->pos = (uint32_t)ps->pos;
        return s_string(ps, &v->u.str.s, &v->u.str.len);
    case '-':
    case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return s_number(ps, v);
    case 't':
    case 'f':
    case 'n':
        return s_literal(ps, v);
    default:
        if (b >= 'a' && b <= 'z')
            return s_literal(ps, v);
        return s_unexpected(ps, "a value");
    }
}

json_doc_t *json_parse(const char *text, size_t len, json_error_t *err)
{
    s_parser_t ps;
    memset(&ps, 0, sizeof ps);
    if (err)
        memset(err, 0, sizeof *err);
    if (!text && len) {
        errno = EINVAL;
        return NULL;
    }
    if (len > JSON_MAX_BYTES) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "input larger than %u MiB",
                     JSON_MAX_BYTES >> 20);
        errno = E2BIG;
        return NULL;
    }
    ps.p = (const unsigned char *)text;
    ps.len = len;
    ps.doc = calloc(1, sizeof *ps.doc);
    if (!ps.doc) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "out of memory");
        errno = ENOMEM;
        return NULL;
    }
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        ps.pos = 3; /* a byte order mark */
    s_ws(&ps);
    if (ps.pos >= ps.len) {
        s_fail(&ps, ps.pos, EINVAL, "empty input: expected a JSON value");
    } else if (s_value(&ps, &ps.doc->root, 0) == 0) {
        s_ws(&ps);
        if (ps.pos < ps.len)
            s_fail(&ps, ps.pos, EINVAL, "unexpected data after the JSON value");
    }
    free(ps.vs);
    free(ps.ms);
    if (ps.failed) {
        if (err) {
            json_pos(text, len, ps.errpos, &err->line, &err->col);
            snprintf(err->msg, sizeof err->msg, "%s", ps.msg);
        }
        json_doc_destroy(ps.doc);
        errno = ps.errnum;
        return NULL;
    }
    return ps.doc;
}

/* ---- JSON -> MessagePack -------------------------------------------------------- */

int json_pack(msgpack_packer *pk, const json_value_t *v)
{
    int rc = 0;
    switch (v->type) {
    case JSON_NULL: return msgpack_pack_nil(pk) ? -1 : 0;
    case JSON_BOOL: return (v->u.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ? -1 : 0;
    case JSON_INT: return msgpack_pack_int64(pk, v->u.i) ? -1 : 0;
    case JSON_DOUBLE: return msgpack_pack_double(pk, v->u.d) ? -1 : 0;
    case JSON_STRING:
        rc = msgpack_pack_str(pk, v->u.str.len);
        rc |= msgpack_pack_str_body(pk, v->u.str.s, v->u.str.len);
        return rc ? -1 : 0;
    case JSON_ARRAY:
        if (msgpack_pack_array(pk, v->u.arr.n))
            return -1;
        for (size_t i = 0; i < v->u.arr.n; i++)
            if (json_pack(pk, &v->u.arr.v[i]) < 0)
                return -1;
        return 0;
    case JSON_OBJECT:
        if (msgpack_pack_map(pk, v->u.obj.n))
            return -1;
        for (size_t i = 0; i < v->u.obj.n; i++) {
            const json_member_t *m = &v->u.obj.m[i];
            rc = msgpack_pack_str(pk, m->klen);
            rc |= msgpack_pack_str_body(pk, m->key, m->klen);
            if (rc || json_pack(pk, &m->value) < 0)
                return -1;
        }
        return 0;
    }
    errno = EINVAL;
    return -1;
}

/* ---- MessagePack -> JSON -------------------------------------------------------- */

/* msgpack-c itself unpacks at most 32 levels; this bounds the recursion for
 * objects built some other way. */
#define S_WRITE_MAX_DEPTH 64

int json_write_string(FILE *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        unsigned char b = p[i];
        if (b >= 0x80) {
            size_t k = s_utf8_len(p + i, len - i);
            if (k == 0) {
                fputs("\\ufffd", out);
                i++;
            } else {
                fwrite(p + i, 1, k, out);
                i += k;
            }
            continue;
        }
        switch (b) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\b': fputs("\\b", out); break;
        case '\f': fputs("\\f", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        default:
            if (b < 0x20 || b == 0x7f)
                fprintf(out, "\\u%04x", b);
            else
                fputc(b, out);
        }
        i++;
    }
    fputc('"', out);
    return ferror(out) ? -1 : 0;
}

static int s_valid_utf8(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_len(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

static void s_base64(FILE *out, const unsigned char *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', out);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        fputc(tab[(v >> 18) & 63], out);
        fputc(tab[(v >> 12) & 63], out);
        fputc(tab[(v >> 6) & 63], out);
        fputc(tab[v & 63], out);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        fputc(tab[(v >> 18) & 63], out);
        fputc(tab[(v >> 12) & 63], out);
        fputs("==", out);
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        fputc(tab[(v >> 18) & 63], out);
        fputc(tab[(v >> 12) & 63], out);
        fputc(tab[(v >> 6) & 63], out);
        fputc('=', out);
    }
    fputc('"', out);
}

/* The shortest of %.15g, %.16g, %.17g that reads back as d, with ".0"
 * added when it looks like an integer. */
static void s_double(FILE *out, double d)
{
    char buf[64];
    if (!isfinite(d)) {
        fputs("null", out);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    fputs(buf, out);
    if (!strpbrk(buf, ".eE"))
        fputs(".0", out);
}

static int s_write(FILE *out, const msgpack_object *o, int depth)
{
    if (depth > S_WRITE_MAX_DEPTH) {
        fputs("null", out);
        return 0;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("null", out); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", out); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(out, "%" PRIu64, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(out, "%" PRId64, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: s_double(out, o->via.f64); break;
    case MSGPACK_OBJECT_STR: json_write_string(out, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN:
        if (s_valid_utf8((const unsigned char *)o->via.bin.ptr, o->via.bin.size)) {
            json_write_string(out, o->via.bin.ptr, o->via.bin.size);
        } else {
            fputs("{\"base64\": ", out);
            s_base64(out, (const unsigned char *)o->via.bin.ptr, o->via.bin.size);
            fputc('}', out);
        }
        break;
    case MSGPACK_OBJECT_EXT:
        fprintf(out, "{\"ext\": %d, \"base64\": ", (int)o->via.ext.type);
        s_base64(out, (const unsigned char *)o->via.ext.ptr, o->via.ext.size);
        fputc('}', out);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputc('[', out);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                fputs(", ", out);
            s_write(out, &o->via.array.ptr[i], depth + 1);
        }
        fputc(']', out);
        break;
    case MSGPACK_OBJECT_MAP:
        fputc('{', out);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (i)
                fputs(", ", out);
            if (k->type == MSGPACK_OBJECT_STR) {
                json_write_string(out, k->via.str.ptr, k->via.str.size);
            } else {
                /* JSON keys are strings: use the key's own JSON text. */
                char *text = NULL;
                size_t tlen = 0;
                FILE *m = open_memstream(&text, &tlen);
                if (!m) {
                    fputs("\"?\"", out);
                } else {
                    s_write(m, k, depth + 1);
                    if (fclose(m) == 0 && text)
                        json_write_string(out, text, tlen);
                    else
                        fputs("\"?\"", out);
                }
                free(text);
            }
            fputs(": ", out);
            s_write(out, &o->via.map.ptr[i].val, depth + 1);
        }
        fputc('}', out);
        break;
    default: fputs("null", out); break;
    }
    return 0;
}

int json_write_msgpack(FILE *out, const msgpack_object *o)
{
    if (!out || !o) {
        errno = EINVAL;
        return -1;
    }
    s_write(out, o, 0);
    if (ferror(out)) {
        errno = EIO;
        return -1;
    }
    return 0;
}
