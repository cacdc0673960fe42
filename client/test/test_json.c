/*
 * test_json.c - unit tests of client/json.c: the strict JSON reader (values,
 * numbers, strings and UTF-8, nesting and size bounds, error positions) and
 * the MessagePack-to-JSON writer.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* Parse a NUL-terminated text that must be valid. */
static json_doc_t *ok(const char *text)
{
    json_error_t e;
    json_doc_t *d = json_parse(text, strlen(text), &e);
    ck_assert_msg(d != NULL, "'%s': %u:%u: %s", text, e.line, e.col, e.msg);
    return d;
}

/* Parse a text that must fail with errno `errnum` at line:col, with `frag`
 * in the message. */
static void bad_n(const char *text, size_t len, int errnum, unsigned line, unsigned col,
                  const char *frag)
{
    json_error_t e;
    errno = 0;
    json_doc_t *d = json_parse(text, len, &e);
    ck_assert_msg(d == NULL, "'%s' parsed, expected an error", text);
    ck_assert_msg(errno == errnum, "'%s': errno %d (%s), expected %d", text, errno, e.msg,
                  errnum);
    ck_assert_msg(e.line == line && e.col == col, "'%s': error at %u:%u (%s), expected %u:%u",
                  text, e.line, e.col, e.msg, line, col);
    ck_assert_msg(strstr(e.msg, frag) != NULL, "'%s': message '%s' lacks '%s'", text, e.msg,
                  frag);
}

static void bad(const char *text, int errnum, unsigned line, unsigned col, const char *frag)
{
    bad_n(text, strlen(text), errnum, line, col, frag);
}

/* Pack the parsed text, unpack it, write it back as JSON; compare. */
static void roundtrip(const char *text, const char *expect)
{
    json_doc_t *d = ok(text);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    ck_assert_int_eq(json_pack(&pk, json_root(d)), 0);
    json_doc_destroy(d);

    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_init(&z, 1024);
    ck_assert_int_eq(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, sb.size);
    char *out = NULL;
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(json_write_msgpack(f, &o), 0);
    fclose(f);
    ck_assert_msg(strcmp(out, expect) == 0, "'%s' came back as '%s', expected '%s'", text, out,
                  expect);
    free(out);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&sb);
}

/* Write a packed object as JSON. */
static char *write_packed(const msgpack_sbuffer *sb)
{
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    msgpack_zone_init(&z, 1024);
    ck_assert_int_eq(msgpack_unpack(sb->data, sb->size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
    char *out = NULL;
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(json_write_msgpack(f, &o), 0);
    fclose(f);
    msgpack_zone_destroy(&z);
    return out;
}

START_TEST(test_scalars)
{
    json_doc_t *d;
    const json_value_t *v;

    d = ok("null");
    ck_assert_int_eq(json_root(d)->type, JSON_NULL);
    json_doc_destroy(d);
    d = ok(" \t\r\n true \n");
    ck_assert_int_eq(json_root(d)->type, JSON_BOOL);
    ck_assert_int_eq(json_root(d)->u.b, 1);
    json_doc_destroy(d);
    d = ok("false");
    ck_assert_int_eq(json_root(d)->u.b, 0);
    json_doc_destroy(d);

    struct { const char *t; int64_t v; } ints[] = {
        {"0", 0}, {"-0", 0}, {"42", 42}, {"-17", -17},
        {"9223372036854775807", INT64_MAX}, {"-9223372036854775808", INT64_MIN},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        d = ok(ints[i].t);
        v = json_root(d);
        ck_assert_msg(v->type == JSON_INT && v->u.i == ints[i].v, "%s", ints[i].t);
        json_doc_destroy(d);
    }
    struct { const char *t; double v; } dbls[] = {
        {"1.5", 1.5}, {"-0.25", -0.25}, {"1e3", 1000.0}, {"1E-2", 0.01},
        {"2.5e+2", 250.0}, {"1e-999", 0.0}, {"0.0", 0.0},
    };
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++) {
        d = ok(dbls[i].t);
        v = json_root(d);
        ck_assert_msg(v->type == JSON_DOUBLE && v->u.d == dbls[i].v, "%s", dbls[i].t);
        json_doc_destroy(d);
    }
}
END_TEST

START_TEST(test_bad_numbers)
{
    bad("9223372036854775808", ERANGE, 1, 1, "out of range");
    bad("-9223372036854775809", ERANGE, 1, 1, "out of range");
    bad("[1, 123456789012345678901234567890]", ERANGE, 1, 5, "out of range");
    bad("1e999", ERANGE, 1, 1, "out of range");
    bad("-1e400", ERANGE, 1, 1, "out of range");
    bad("01", EINVAL, 1, 1, "leading zeros");
    bad("-012", EINVAL, 1, 1, "leading zeros");
    bad("1.", EINVAL, 1, 3, "digit after the decimal point");
    bad(".5", EINVAL, 1, 1, "unexpected character '.'");
    bad("+1", EINVAL, 1, 1, "unexpected character '+'");
    bad("-", EINVAL, 1, 2, "expected a digit");
    bad("1e", EINVAL, 1, 3, "exponent");
    bad("1e+", EINVAL, 1, 4, "exponent");
    bad("NaN", EINVAL, 1, 1, "unexpected character 'N'");
    bad("Infinity", EINVAL, 1, 1, "unexpected");
    bad("12 13", EINVAL, 1, 4, "after the JSON value");
    bad("0x10", EINVAL, 1, 2, "after the JSON value");
    /* A number literal longer than the bound. */
    char big[JSON_MAX_NUMBER + 10];
    memset(big, '1', sizeof big - 1);
    big[1] = '.';
    big[sizeof big - 1] = '\0';
    bad(big, E2BIG, 1, 1, "longer than");
}
END_TEST

START_TEST(test_strings)
{
    json_doc_t *d;
    const json_value_t *v;

    d = ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"");
    v = json_root(d);
    ck_assert_int_eq(v->type, JSON_STRING);
    ck_assert_uint_eq(v->u.str.len, 12);
    ck_assert(memcmp(v->u.str.s, "a\"b\\c/d\b\f\n\r\t", 12) == 0);
    ck_assert_int_eq(v->u.str.s[v->u.str.len], '\0');
    json_doc_destroy(d);

    /* \u escapes: 1, 2, 3 and (surrogate pair) 4 UTF-8 bytes; raw UTF-8 kept. */
    d = ok("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    v = json_root(d);
    ck_assert_uint_eq(v->u.str.len, 1 + 2 + 3 + 4 + 1 + 2 + 3 + 4);
    ck_assert(memcmp(v->u.str.s, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \xc3\xa9\xe2\x82\xac"
                                 "\xf0\x9f\x98\x80",
                     v->u.str.len) == 0);
    json_doc_destroy(d);

    /* \u0000 is a NUL byte inside the string; the length says so. */
    d = ok("\"a\\u0000b\"");
    v = json_root(d);
    ck_assert_uint_eq(v->u.str.len, 3);
    ck_assert(memcmp(v->u.str.s, "a\0b", 3) == 0);
    json_doc_destroy(d);

    d = ok("\"\"");
    ck_assert_uint_eq(json_root(d)->u.str.len, 0);
    json_doc_destroy(d);
}
END_TEST

START_TEST(test_bad_strings)
{
    bad("\"abc", EINVAL, 1, 1, "unterminated string");
    bad("[\"abc\\\"]", EINVAL, 1, 2, "unterminated string");
    bad("\"a\\x\"", EINVAL, 1, 3, "invalid escape '\\x'");
    bad("\"a\\'\"", EINVAL, 1, 3, "invalid escape");
    bad("\"\\u12\"", EINVAL, 1, 2, "4 hex digits");
    bad("\"\\u12g4\"", EINVAL, 1, 2, "4 hex digits");
    bad("\"\\ud800\"", EINVAL, 1, 2, "high surrogate");
    bad("\"\\ud800\\u0041\"", EINVAL, 1, 2, "high surrogate");
    bad("\"\\udc00\"", EINVAL, 1, 2, "low surrogate");
    bad("\"a\tb\"", EINVAL, 1, 3, "control character 0x09");
    bad("\"a\nb\"", EINVAL, 1, 3, "control character 0x0a");
    /* Invalid UTF-8: a stray continuation byte, an overlong form, an
     * encoded surrogate, a code point above U+10FFFF, a truncated sequence,
     * 0xff. */
    bad("\"\x80\"", EINVAL, 1, 2, "invalid UTF-8");
    bad("\"\xc0\x80\"", EINVAL, 1, 2, "invalid UTF-8");
    bad("\"\xe0\x80\x80\"", EINVAL, 1, 2, "invalid UTF-8");
    bad("\"\xed\xa0\x80\"", EINVAL, 1, 2, "invalid UTF-8");
    bad("\"\xf4\x90\x80\x80\"", EINVAL, 1, 2, "invalid UTF-8");
    bad("\"ab\xe2\x82\"", EINVAL, 1, 4, "invalid UTF-8");
    bad("\"\xff\"", EINVAL, 1, 2, "invalid UTF-8");
    bad("'a'", EINVAL, 1, 1, "unexpected character '''");
}
END_TEST

START_TEST(test_containers)
{
    json_doc_t *d = ok(" { \"a\" : [1, [], {}, [2, [3]]], \"b\": {\"c\": null}, \"a\": 5 } ");
    const json_value_t *r = json_root(d);
    ck_assert_int_eq(r->type, JSON_OBJECT);
    ck_assert_uint_eq(r->u.obj.n, 3);
    /* Order and duplicates are kept: the caller decides about duplicates. */
    ck_assert_str_eq(r->u.obj.m[0].key, "a");
    ck_assert_str_eq(r->u.obj.m[1].key, "b");
    ck_assert_str_eq(r->u.obj.m[2].key, "a");
    ck_assert_uint_eq(r->u.obj.m[0].pos, 3);
    const json_value_t *a = &r->u.obj.m[0].value;
    ck_assert_int_eq(a->type, JSON_ARRAY);
    ck_assert_uint_eq(a->u.arr.n, 4);
    ck_assert_int_eq(a->u.arr.v[0].u.i, 1);
    ck_assert_uint_eq(a->u.arr.v[1].u.arr.n, 0);
    ck_assert_int_eq(a->u.arr.v[2].type, JSON_OBJECT);
    ck_assert_uint_eq(a->u.arr.v[2].u.obj.n, 0);
    ck_assert_int_eq(a->u.arr.v[3].u.arr.v[1].u.arr.v[0].u.i, 3);
    ck_assert_int_eq(r->u.obj.m[1].value.u.obj.m[0].value.type, JSON_NULL);
    json_doc_destroy(d);

    /* Many items, to cross the scratch stack's and the arena's growth. */
    size_t n = 100000;
    char *big = malloc(n * 8 + 16);
    size_t k = 0;
    big[k++] = '[';
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(big + k, n * 8 + 16 - k, "%s[%zu]", i ? "," : "", i % 1000);
    big[k++] = ']';
    big[k] = '\0';
    d = ok(big);
    ck_assert_uint_eq(json_root(d)->u.arr.n, n);
    ck_assert_int_eq(json_root(d)->u.arr.v[n - 1].u.arr.v[0].u.i, (int64_t)((n - 1) % 1000));
    json_doc_destroy(d);
    free(big);

    /* A UTF-8 byte order mark is skipped. */
    d = ok("\xef\xbb\xbf[1]");
    ck_assert_uint_eq(json_root(d)->u.arr.n, 1);
    json_doc_destroy(d);
}
END_TEST

START_TEST(test_bad_containers)
{
    bad("[1, 2,]", EINVAL, 1, 7, "trailing comma");
    bad("{\"a\": 1,}", EINVAL, 1, 9, "trailing comma");
    bad("[1 2]", EINVAL, 1, 4, "',' or ']'");
    bad("{\"a\" 1}", EINVAL, 1, 6, "':'");
    bad("{\"a\": 1 \"b\": 2}", EINVAL, 1, 9, "',' or '}'");
    bad("{1: 2}", EINVAL, 1, 2, "object keys must be strings");
    bad("[1, 2", EINVAL, 1, 6, "array is not closed");
    bad("{\"a\": 1", EINVAL, 1, 8, "object is not closed");
    bad("{\"a\":", EINVAL, 1, 6, "expected a value");
    bad("[", EINVAL, 1, 2, "expected a value");
    bad("]", EINVAL, 1, 1, "unexpected character ']'");
    bad("", EINVAL, 1, 1, "empty input");
    bad("   \n ", EINVAL, 2, 2, "empty input");
    bad("[tru]", EINVAL, 1, 2, "invalid literal");
    bad("[nulll]", EINVAL, 1, 2, "invalid literal");
    bad("[1] x", EINVAL, 1, 5, "after the JSON value");
    bad("/* c */ 1", EINVAL, 1, 1, "unexpected character '/'");
    bad_n("[1,\0 2]", 7, EINVAL, 1, 4, "unexpected byte 0x00");
}
END_TEST

START_TEST(test_depth_and_size)
{
    char buf[2 * JSON_MAX_DEPTH + 8];
    /* Exactly JSON_MAX_DEPTH levels parse; one more does not. */
    memset(buf, '[', JSON_MAX_DEPTH);
    memset(buf + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    buf[2 * JSON_MAX_DEPTH] = '\0';
    json_doc_destroy(ok(buf));
    memset(buf, '[', JSON_MAX_DEPTH + 1);
    memset(buf + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
    buf[2 * JSON_MAX_DEPTH + 2] = '\0';
    bad(buf, E2BIG, 1, JSON_MAX_DEPTH + 1, "nested deeper than 64");
    /* Objects count as levels too. */
    size_t k = 0;
    char obj[8 * (JSON_MAX_DEPTH + 2)];
    for (int i = 0; i <= JSON_MAX_DEPTH; i++)
        k += (size_t)snprintf(obj + k, sizeof obj - k, "{\"a\":");
    k += (size_t)snprintf(obj + k, sizeof obj - k, "1");
    for (int i = 0; i <= JSON_MAX_DEPTH; i++)
        obj[k++] = '}';
    obj[k] = '\0';
    bad(obj, E2BIG, 1, 5 * JSON_MAX_DEPTH + 1, "nested deeper");

    /* The size bound is checked before a byte is read. */
    json_error_t e;
    errno = 0;
    ck_assert_ptr_null(json_parse("[]", (size_t)JSON_MAX_BYTES + 1, &e));
    ck_assert_int_eq(errno, E2BIG);
    ck_assert_msg(strstr(e.msg, "larger than 64 MiB") != NULL, "%s", e.msg);
}
END_TEST

START_TEST(test_positions)
{
    /* Lines count '\n'; columns count characters (é is one), from 1. */
    bad("{\n  \"a\": [1,\n    \"\xc3\xa9\xc3\xa9\", x]\n}", EINVAL, 3, 11,
        "invalid literal");
    bad("[\r\n1,\r\n2,,]", EINVAL, 3, 3, "unexpected character ','");
    unsigned l, c;
    const char *t = "ab\ncd\xe2\x82\xac" "ef";
    json_pos(t, strlen(t), 0, &l, &c);
    ck_assert(l == 1 && c == 1);
    json_pos(t, strlen(t), 3, &l, &c);
    ck_assert(l == 2 && c == 1);
    json_pos(t, strlen(t), 8, &l, &c); /* the 'e' after the euro sign */
    ck_assert(l == 2 && c == 4);
    json_pos(t, strlen(t), 1000, &l, &c); /* clamped to the end */
    ck_assert(l == 2 && c == 6);
}
END_TEST

START_TEST(test_roundtrip)
{
    roundtrip("null", "null");
    roundtrip("[true, false]", "[true, false]");
    roundtrip("{\"a\":1,\"b\":[-2,3.5,\"x\"],\"c\":{}}", "{\"a\": 1, \"b\": [-2, 3.5, \"x\"], \"c\": {}}");
    roundtrip("[9223372036854775807, -9223372036854775808]",
              "[9223372036854775807, -9223372036854775808]");
    /* Doubles: shortest form that reads back, integral ones keep a ".0". */
    roundtrip("[0.1, 2.0, 1e20, 1e300, -0.5, 3.0e-5, 0.30000000000000004]",
              "[0.1, 2.0, 1e+20, 1e+300, -0.5, 3e-05, "
              "0.30000000000000004]");
    /* Strings: escapes out as in; non-ASCII UTF-8 as is; control chars as \u. */
    roundtrip("\"q\\\"b\\\\s\\n\\t\\u0001\\u007f\\u00e9\\ud83d\\ude00/\"",
              "\"q\\\"b\\\\s\\n\\t\\u0001\\u007f\xc3\xa9\xf0\x9f\x98\x80/\"");
    roundtrip("\"\\u0000\"", "\"\\u0000\"");
}
END_TEST

START_TEST(test_write_msgpack)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char *out;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 10);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_float(&pk, 0.5f);
    msgpack_pack_double(&pk, 0.0 / 0.0);
    msgpack_pack_double(&pk, 1.0 / 0.0);
    msgpack_pack_str(&pk, 3);
    msgpack_pack_str_body(&pk, "a\xff" "b", 3);   /* invalid UTF-8 in a str */
    msgpack_pack_bin(&pk, 5);
    msgpack_pack_bin_body(&pk, "hello", 5);       /* text in a bin */
    msgpack_pack_bin(&pk, 4);
    msgpack_pack_bin_body(&pk, "\x00\xff\x10\x80", 4);
    msgpack_pack_ext(&pk, 2, 7);
    msgpack_pack_ext_body(&pk, "\x01\x02", 2);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_int(&pk, 3);
    msgpack_pack_true(&pk);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "k", 1);
    msgpack_pack_nil(&pk);
    out = write_packed(&sb);
    ck_assert_str_eq(out, "[18446744073709551615, 0.5, null, null, \"a\\ufffdb\", \"hello\", "
                          "{\"base64\": \"AP8QgA==\"}, {\"ext\": 7, \"base64\": \"AQI=\"}, "
                          "{\"3\": true, \"[null]\": \"k\"}, null]");
    free(out);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("json");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_scalars);
    tcase_add_test(tc, test_bad_numbers);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_bad_strings);
    tcase_add_test(tc, test_containers);
    tcase_add_test(tc, test_bad_containers);
    tcase_add_test(tc, test_depth_and_size);
    tcase_add_test(tc, test_positions);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_write_msgpack);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(s_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
