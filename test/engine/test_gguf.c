/*
 * test_gguf - the GGUF reader against files from the writer (every metadata type, arrays
 * of strings, tensors, alignment, versions 2 and 3, split sets) and against hostile bytes:
 * every failure is -EINVAL with a message naming the file, the key or tensor and what is
 * wrong, never a crash, a huge allocation or a read past the buffer (the suite runs under
 * ASan, and every buffer here is exactly the file's size).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine/dtype.h"
#include "engine/gguf.h"
#include "tools/mkmodel/gguf_write.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------------------- */

/* parse a private copy of exactly `n` bytes; the message in err */
static int parse(const uint8_t *p, size_t n, char *err, size_t errlen)
{
    uint8_t *c = malloc(n ? n : 1);
    memcpy(c, p, n);
    gguf_t *g = NULL;
    int rc = gguf_parse(&g, c, n, "t.gguf", err, errlen);
    gguf_free(g);
    free(c);
    return rc;
}

static void expect_fail(const uint8_t *p, size_t n, const char *msg)
{
    char err[512] = "";
    int rc = parse(p, n, err, sizeof err);
    if (rc != -EINVAL) fail_msg("expected -EINVAL for '%s', got %d (%s)", msg, rc, err);
    if (!strstr(err, msg)) fail_msg("message '%s' lacks '%s'", err, msg);
    if (!strstr(err, "t.gguf")) fail_msg("message '%s' does not name the file", err);
}

/* a raw byte builder for files the writer would never produce */
typedef struct {
    uint8_t b[4096];
    size_t n;
} raw_t;

static void r32(raw_t *r, uint32_t v)
{
    memcpy(r->b + r->n, &v, 4);
    r->n += 4;
}

static void r64(raw_t *r, uint64_t v)
{
    memcpy(r->b + r->n, &v, 8);
    r->n += 8;
}

static void rstr(raw_t *r, const char *s)
{
    r64(r, strlen(s));
    memcpy(r->b + r->n, s, strlen(s));
    r->n += strlen(s);
}

static void rhdr(raw_t *r, uint32_t version, uint64_t nt, uint64_t nkv)
{
    r->n = 0;
    memcpy(r->b, "GGUF", 4);
    r->n = 4;
    r32(r, version);
    r64(r, nt);
    r64(r, nkv);
}

/* one valid small model-like file */
static gguf_writer_t *sample(uint32_t version, uint32_t align)
{
    gguf_writer_t *w;
    assert_int_equal(gguf_writer_new(&w, version, align), 0);
    assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    assert_int_equal(gguf_writer_set_u8(w, "t.u8", 200), 0);
    assert_int_equal(gguf_writer_set_i8(w, "t.i8", -100), 0);
    assert_int_equal(gguf_writer_set_u16(w, "t.u16", 60000), 0);
    assert_int_equal(gguf_writer_set_i16(w, "t.i16", -30000), 0);
    assert_int_equal(gguf_writer_set_u32(w, "t.u32", 4000000000u), 0);
    assert_int_equal(gguf_writer_set_i32(w, "t.i32", -2000000000), 0);
    assert_int_equal(gguf_writer_set_u64(w, "t.u64", 1ull << 62), 0);
    assert_int_equal(gguf_writer_set_i64(w, "t.i64", -(1ll << 62)), 0);
    assert_int_equal(gguf_writer_set_f32(w, "t.f32", 1.5f), 0);
    assert_int_equal(gguf_writer_set_f64(w, "t.f64", 1e-6), 0);
    assert_int_equal(gguf_writer_set_bool(w, "t.bool", true), 0);
    const char *strs[] = {"<unk>", "", "h\xc3\xa9llo", "a\0b"};
    size_t lens[] = {5, 0, 6, 3};
    assert_int_equal(gguf_writer_set_arr_strn(w, "t.strs", strs, lens, 4), 0);
    float fs[] = {0.5f, -2.0f, 3.25f};
    assert_int_equal(gguf_writer_set_arr_f32(w, "t.f32s", fs, 3), 0);
    int32_t is[] = {1, -2, 3, 2147483647};
    assert_int_equal(gguf_writer_set_arr_i32(w, "t.i32s", is, 4), 0);
    uint8_t bs[] = {1, 0, 1};
    assert_int_equal(gguf_writer_set_arr(w, "t.bools", GGUF_BOOL, bs, 3), 0);
    float t0[64];
    for (int i = 0; i < 64; i++)
        t0[i] = (float)i;
    int64_t ne0[2] = {8, 8};
    assert_int_equal(gguf_writer_add_tensor(w, "a.weight", DTYPE_F32, 2, ne0, t0, sizeof t0), 0);
    uint8_t q[2 * 34];
    for (size_t i = 0; i < sizeof q; i++)
        q[i] = (uint8_t)i;
    int64_t ne1[2] = {32, 2};
    assert_int_equal(gguf_writer_add_tensor(w, "b.weight", DTYPE_Q8_0, 2, ne1, q, sizeof q), 0);
    uint16_t h[3] = {0x3c00, 0x4000, 0xc000};
    int64_t ne2[1] = {3};
    assert_int_equal(gguf_writer_add_tensor(w, "c.bias", DTYPE_F16, 1, ne2, h, sizeof h), 0);
    return w;
}

static uint8_t *sample_bytes(uint32_t version, uint32_t align, size_t *n)
{
    gguf_writer_t *w = sample(version, align);
    uint8_t *p;
    assert_int_equal(gguf_writer_bytes(w, &p, n), 0);
    gguf_writer_free(w);
    return p;
}

/* ---- valid files -------------------------------------------------------------------------- */

static void check_sample(const gguf_t *g, uint32_t version, uint32_t align)
{
    char err[256];
    assert_int_equal(gguf_version(g), version);
    assert_int_equal(gguf_alignment(g), align);
    int64_t v;
    assert_int_equal(gguf_get_int(g, "t.u8", 0, 255, &v, err, sizeof err), 0);
    assert_int_equal(v, 200);
    assert_int_equal(gguf_get_int(g, "t.i8", -128, 127, &v, err, sizeof err), 0);
    assert_int_equal(v, -100);
    assert_int_equal(gguf_get_int(g, "t.u16", 0, 70000, &v, err, sizeof err), 0);
    assert_int_equal(v, 60000);
    assert_int_equal(gguf_get_int(g, "t.i16", -40000, 0, &v, err, sizeof err), 0);
    assert_int_equal(v, -30000);
    assert_int_equal(gguf_get_int(g, "t.u32", 0, INT64_MAX, &v, err, sizeof err), 0);
    assert_int_equal(v, 4000000000ll);
    assert_int_equal(gguf_get_int(g, "t.i32", INT32_MIN, 0, &v, err, sizeof err), 0);
    assert_int_equal(v, -2000000000);
    assert_int_equal(gguf_get_int(g, "t.u64", 0, INT64_MAX, &v, err, sizeof err), 0);
    assert_int_equal(v, 1ll << 62);
    assert_int_equal(gguf_get_int(g, "t.i64", INT64_MIN, 0, &v, err, sizeof err), 0);
    assert_int_equal(v, -(1ll << 62));
    float f;
    assert_int_equal(gguf_get_f32(g, "t.f32", &f, err, sizeof err), 0);
    assert_true(f == 1.5f);
    assert_int_equal(gguf_get_f32(g, "t.f64", &f, err, sizeof err), 0);
    assert_true(f == 1e-6f);
    bool b;
    assert_int_equal(gguf_get_bool(g, "t.bool", &b, err, sizeof err), 0);
    assert_true(b);
    gguf_str_t s;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s, err, sizeof err), 0);
    assert_true(gguf_str_eq(s, "llama"));
    gguf_arr_t a;
    assert_int_equal(gguf_get_arr(g, "t.strs", GGUF_STRING, &a, err, sizeof err), 0);
    assert_int_equal(a.n, 4);
    assert_true(gguf_str_eq(gguf_arr_str(&a, 0), "<unk>"));
    assert_int_equal(gguf_arr_str(&a, 1).len, 0);
    assert_true(gguf_str_eq(gguf_arr_str(&a, 2), "h\xc3\xa9llo"));
    s = gguf_arr_str(&a, 3);
    assert_int_equal(s.len, 3);
    assert_memory_equal(s.ptr, "a\0b", 3);
    assert_int_equal(gguf_get_arr(g, "t.f32s", GGUF_FLOAT32, &a, err, sizeof err), 0);
    assert_int_equal(a.n, 3);
    assert_true(gguf_arr_f32(&a, 2) == 3.25f);
    assert_int_equal(gguf_get_arr(g, "t.i32s", GGUF_INT32, &a, err, sizeof err), 0);
    assert_int_equal(gguf_arr_int(&a, 1), -2);
    assert_int_equal(gguf_arr_int(&a, 3), 2147483647);
    assert_int_equal(gguf_get_arr(g, "t.bools", GGUF_TYPE_COUNT, &a, err, sizeof err), 0);
    assert_int_equal(a.type, GGUF_BOOL);
    assert_int_equal(gguf_arr_int(&a, 2), 1);

    /* entries in file order with their types */
    gguf_kv_t kv;
    assert_int_equal(gguf_n_kv(g), align == 32 ? 16 : 17);
    gguf_kv_at(g, align == 32 ? 1 : 2, &kv);
    assert_string_equal(kv.key, "t.u8");
    assert_int_equal(kv.type, GGUF_UINT8);
    assert_int_equal(gguf_find_key(g, "nope"), -1);

    /* tensors: shapes, types, data in place and aligned */
    assert_int_equal(gguf_n_tensors(g), 3);
    const gguf_tensor_t *t = gguf_find_tensor(g, "b.weight");
    assert_non_null(t);
    assert_int_equal(t->type, DTYPE_Q8_0);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 32);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->nbytes, 68);
    assert_int_equal(((const uint8_t *)t->data)[5], 5);
    assert_int_equal(t->offset % align, 0);
    t = gguf_find_tensor(g, "a.weight");
    float last;
    memcpy(&last, (const char *)t->data + 63 * 4, 4); /* alignment 1: maybe unaligned */
    assert_true(last == 63.0f);
    t = gguf_tensor_at(g, 2);
    assert_string_equal(t->name, "c.bias");
    assert_int_equal(t->nbytes, 6);
    assert_null(gguf_find_tensor(g, "d.weight"));
}

static void test_roundtrip(void **state)
{
    (void)state;
    uint32_t cases[][2] = {{3, 32}, {2, 32}, {3, 64}, {3, 4096}, {2, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        uint8_t *p = sample_bytes(cases[i][0], cases[i][1], &n);
        gguf_t *g;
        char err[256];
        assert_int_equal(gguf_parse(&g, p, n, "t.gguf", err, sizeof err), 0);
        check_sample(g, cases[i][0], cases[i][1]);
        gguf_free(g);
        free(p);
    }
}

static void test_getter_errors(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = sample_bytes(3, 32, &n);
    gguf_t *g;
    char err[256];
    assert_int_equal(gguf_parse(&g, p, n, "m.gguf", err, sizeof err), 0);
    int64_t v;
    float f;
    bool b;
    gguf_str_t s;
    gguf_arr_t a;
    assert_int_equal(gguf_get_int(g, "llama.block_count", 0, 10, &v, err, sizeof err), -ENOENT);
    assert_string_equal(err, "m.gguf: metadata key 'llama.block_count' is missing");
    assert_int_equal(gguf_get_int(g, "general.architecture", 0, 10, &v, err, sizeof err), -EINVAL);
    assert_string_equal(err, "m.gguf: metadata key 'general.architecture' must be an integer, "
                             "found STRING");
    assert_int_equal(gguf_get_int(g, "t.u32", 0, 1000, &v, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "'t.u32' = 4000000000 is outside the accepted range [0, 1000]"));
    assert_int_equal(gguf_get_f32(g, "t.u8", &f, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "must be FLOAT32, found UINT8"));
    assert_int_equal(gguf_get_bool(g, "t.f32", &b, err, sizeof err), -EINVAL);
    assert_int_equal(gguf_get_str(g, "t.strs", &s, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "must be STRING, found ARRAY"));
    assert_int_equal(gguf_get_arr(g, "t.strs", GGUF_INT32, &a, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "must be an array of INT32, found STRING"));
    gguf_free(g);
    free(p);
}

/* ---- hostile files ------------------------------------------------------------------------ */

static void test_versions_and_magic(void **state)
{
    (void)state;
    raw_t r;
    rhdr(&r, 1, 0, 0);
    expect_fail(r.b, r.n, "GGUF version 1 is too old: inferd reads versions 2 and 3");
    rhdr(&r, 4, 0, 0);
    expect_fail(r.b, r.n, "GGUF version 4 is not supported");
    rhdr(&r, 0x03000000u, 0, 0);
    expect_fail(r.b, r.n, "big-endian");
    rhdr(&r, 3, 0, 0);
    memcpy(r.b, "GGUX", 4);
    expect_fail(r.b, r.n, "not a GGUF file");
    rhdr(&r, 3, 0, 0);
    char err[256];
    assert_int_equal(parse(r.b, r.n, err, sizeof err), 0); /* empty but valid */
    rhdr(&r, 2, 0, 0);
    assert_int_equal(parse(r.b, r.n, err, sizeof err), 0);
}

static void test_truncated_everywhere(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = sample_bytes(3, 32, &n);
    char err[512];
    for (size_t cut = 0; cut < n; cut++) {
        int rc = parse(p, cut, err, sizeof err);
        if (rc != -EINVAL) fail_msg("cut at %zu of %zu: rc %d", cut, n, rc);
        if (!strstr(err, "truncated") && !strstr(err, "past") && !strstr(err, "remain") &&
            !strstr(err, "not a GGUF") && !strstr(err, "cannot fit"))
            fail_msg("cut at %zu: unexpected message '%s'", cut, err);
    }
    free(p);
}

static void test_hostile_counts(void **state)
{
    (void)state;
    raw_t r;
    const uint64_t huge = 1ull << 60;
    rhdr(&r, 3, huge, 0);
    expect_fail(r.b, r.n, "tensor count 1152921504606846976 cannot fit");
    rhdr(&r, 3, 0, huge);
    expect_fail(r.b, r.n, "metadata count 1152921504606846976 cannot fit");
    /* a key whose length is 2^60 */
    rhdr(&r, 3, 0, 1);
    r64(&r, huge);
    r64(&r, 0); /* enough bytes for the count check: the length itself must be caught */
    expect_fail(r.b, r.n, "metadata key 0 has length 1152921504606846976");
    /* a string value of length 2^60 */
    rhdr(&r, 3, 0, 1);
    rstr(&r, "k");
    r32(&r, GGUF_STRING);
    r64(&r, huge);
    expect_fail(r.b, r.n, "string value of key 'k' has length 1152921504606846976");
    /* arrays of 2^60 numbers and 2^60 strings */
    rhdr(&r, 3, 0, 1);
    rstr(&r, "tokenizer.ggml.scores");
    r32(&r, GGUF_ARRAY);
    r32(&r, GGUF_FLOAT32);
    r64(&r, huge);
    expect_fail(r.b, r.n, "array of 1152921504606846976 FLOAT32 elements needs more than");
    rhdr(&r, 3, 0, 1);
    rstr(&r, "tokenizer.ggml.tokens");
    r32(&r, GGUF_ARRAY);
    r32(&r, GGUF_STRING);
    r64(&r, huge);
    expect_fail(r.b, r.n, "array of 1152921504606846976 strings cannot fit");
    /* one string of an array claims 2^60 bytes */
    rhdr(&r, 3, 0, 1);
    rstr(&r, "tokenizer.ggml.tokens");
    r32(&r, GGUF_ARRAY);
    r32(&r, GGUF_STRING);
    r64(&r, 2);
    rstr(&r, "a");
    r64(&r, huge);
    expect_fail(r.b, r.n, "string 1 of array key 'tokenizer.ggml.tokens' has length");
}

static void test_hostile_metadata(void **state)
{
    (void)state;
    raw_t r;
    rhdr(&r, 3, 0, 1);
    rstr(&r, "k");
    r32(&r, 13);
    r32(&r, 0);
    expect_fail(r.b, r.n, "key 'k' has unknown value type 13");
    rhdr(&r, 3, 0, 1);
    rstr(&r, "k");
    r32(&r, GGUF_ARRAY);
    r32(&r, 99);
    r64(&r, 0);
    expect_fail(r.b, r.n, "key 'k': array of unknown type 99");
    rhdr(&r, 3, 0, 1);
    rstr(&r, "k");
    r32(&r, GGUF_ARRAY);
    r32(&r, GGUF_ARRAY);
    r64(&r, 0);
    expect_fail(r.b, r.n, "key 'k': arrays of arrays are not supported");
    rhdr(&r, 3, 0, 2);
    rstr(&r, "dup");
    r32(&r, GGUF_UINT32);
    r32(&r, 1);
    rstr(&r, "dup");
    r32(&r, GGUF_UINT32);
    r32(&r, 2);
    expect_fail(r.b, r.n, "metadata key 'dup' appears twice");
    rhdr(&r, 3, 0, 1);
    rstr(&r, "general.alignment");
    r32(&r, GGUF_UINT32);
    r32(&r, 48);
    expect_fail(r.b, r.n, "'general.alignment' = 48 is not a power of two");
    rhdr(&r, 3, 0, 1);
    rstr(&r, "general.alignment");
    r32(&r, GGUF_UINT32);
    r32(&r, 0);
    expect_fail(r.b, r.n, "'general.alignment' = 0 is not a power of two");
    rhdr(&r, 3, 0, 1);
    rstr(&r, "general.alignment");
    r32(&r, GGUF_UINT64);
    r64(&r, 64);
    expect_fail(r.b, r.n, "'general.alignment' must be UINT32, found UINT64");
    rhdr(&r, 3, 0, 1);
    rstr(&r, "b");
    r32(&r, GGUF_BOOL);
    r.b[r.n++] = 2;
    expect_fail(r.b, r.n, "key 'b': BOOL value 2 is not 0 or 1");
    rhdr(&r, 3, 0, 1);
    r64(&r, 3);
    memcpy(r.b + r.n, "a\0b", 3);
    r.n += 3;
    r32(&r, GGUF_UINT8);
    r.b[r.n++] = 0;
    expect_fail(r.b, r.n, "metadata key 0 contains a NUL byte");
}

/* a header with one tensor info and `data` bytes of data section */
static void one_tensor(raw_t *r, const char *name, uint32_t n_dims, const uint64_t *ne,
                       uint32_t type, uint64_t off, size_t data)
{
    rhdr(r, 3, 1, 0);
    rstr(r, name);
    r32(r, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        r64(r, ne[d]);
    r32(r, type);
    r64(r, off);
    while (r->n % 32)
        r->b[r->n++] = 0;
    memset(r->b + r->n, 0, data);
    r->n += data;
}

static void test_hostile_tensors(void **state)
{
    (void)state;
    raw_t r;
    char err[256];
    uint64_t ne[5] = {32, 2, 1, 1, 1};
    one_tensor(&r, "t", 2, ne, DTYPE_F32, 0, 256);
    assert_int_equal(parse(r.b, r.n, err, sizeof err), 0);
    one_tensor(&r, "t", 2, ne, DTYPE_F32, 0, 255);
    expect_fail(r.b, r.n, "tensor 't': data [0, 256) of the data section lies past its end (255");
    one_tensor(&r, "t", 2, ne, DTYPE_F32, 32, 256);
    expect_fail(r.b, r.n, "tensor 't': data [32, 288)");
    one_tensor(&r, "t", 2, ne, DTYPE_F32, 16, 512);
    expect_fail(r.b, r.n, "tensor 't': offset 16 is not a multiple of the alignment 32");
    one_tensor(&r, "t", 2, ne, 4, 0, 256);
    expect_fail(r.b, r.n, "tensor 't' has unknown type 4");
    one_tensor(&r, "t", 2, ne, 1000, 0, 256);
    expect_fail(r.b, r.n, "tensor 't' has unknown type 1000");
    one_tensor(&r, "t", 0, ne, DTYPE_F32, 0, 256);
    expect_fail(r.b, r.n, "tensor 't' has 0 dimensions");
    one_tensor(&r, "t", 5, ne, DTYPE_F32, 0, 256);
    expect_fail(r.b, r.n, "tensor 't' has 5 dimensions");
    uint64_t odd[2] = {48, 2};
    one_tensor(&r, "t", 2, odd, DTYPE_Q4_K, 0, 256);
    expect_fail(r.b, r.n, "row length 48 is not a multiple of Q4_K's block of 256");
    uint64_t big[4] = {1ull << 40, 1ull << 40, 1ull << 40, 1};
    one_tensor(&r, "t", 3, big, DTYPE_F32, 0, 256);
    expect_fail(r.b, r.n, "tensor 't': its size overflows");
    uint64_t neg[2] = {32, 1ull << 63};
    one_tensor(&r, "t", 2, neg, DTYPE_F32, 0, 256);
    expect_fail(r.b, r.n, "tensor 't': dimension 1 is 9223372036854775808");
    char long_name[80];
    memset(long_name, 'x', 64);
    long_name[64] = 0;
    one_tensor(&r, long_name, 2, ne, DTYPE_F32, 0, 256);
    expect_fail(r.b, r.n, "tensor 0 has an invalid name");
    one_tensor(&r, "", 2, ne, DTYPE_F32, 0, 256);
    expect_fail(r.b, r.n, "tensor 0 has an invalid name");
    /* two tensors with one name */
    rhdr(&r, 3, 2, 0);
    for (int i = 0; i < 2; i++) {
        rstr(&r, "w");
        r32(&r, 1);
        r64(&r, 8);
        r32(&r, DTYPE_F32);
        r64(&r, 0);
    }
    while (r.n % 32)
        r.b[r.n++] = 0;
    r.n += 32;
    memset(r.b + r.n - 32, 0, 32);
    expect_fail(r.b, r.n, "tensor 'w' appears twice");
}

/* Random byte and field mutations of a valid file: each parse returns 0 or -EINVAL and ASan
 * sees no bad access. A bounded smoke test; the real fuzzer calls gguf_parse() too. */
static void test_mutations(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = sample_bytes(3, 32, &n);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    char err[512];
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 3000; iter++) {
        uint8_t *c = malloc(n);
        memcpy(c, p, n);
        int k = 1 + (int)(s % 4);
        for (int j = 0; j < k; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            size_t at = (size_t)(s % n);
            switch ((s >> 32) % 4) {
            case 0:
                c[at] ^= (uint8_t)(1u << ((s >> 40) % 8));
                break;
            case 1:
                c[at] = 0xff;
                break;
            case 2: /* a huge little-endian count or length */
                if (at + 8 <= n) memcpy(c + at, &(uint64_t){(s >> 3) | (1ull << 59)}, 8);
                break;
            default:
                c[at] = 0;
            }
        }
        size_t len = (s >> 20) % 8 == 0 ? (size_t)(s % n) : n;
        gguf_t *g = NULL;
        int rc = gguf_parse(&g, c, len, "t.gguf", err, sizeof err);
        if (rc == 0) {
            ok++;
            /* every accessor stays inside the buffer */
            for (size_t i = 0; i < gguf_n_kv(g); i++) {
                gguf_kv_t kv;
                gguf_kv_at(g, i, &kv);
                if (kv.type == GGUF_ARRAY && kv.v.arr.type == GGUF_STRING)
                    for (uint64_t e = 0; e < kv.v.arr.n; e++)
                        (void)gguf_arr_str(&kv.v.arr, e);
            }
            for (size_t i = 0; i < gguf_n_tensors(g); i++) {
                const gguf_tensor_t *t = gguf_tensor_at(g, i);
                volatile uint8_t sum = 0;
                for (uint64_t b = 0; b < t->nbytes; b++)
                    sum += ((const uint8_t *)t->data)[b];
                (void)sum;
            }
        } else {
            assert_int_equal(rc, -EINVAL);
            assert_non_null(strstr(err, "t.gguf"));
            bad++;
        }
        gguf_free(g);
        free(c);
    }
    assert_true(bad > 1000); /* most mutations are caught */
    assert_true(ok > 10);    /* and some leave a valid file (e.g. inside tensor data) */
    free(p);
}

/* ---- files and split sets ------------------------------------------------------------------ */

static char tmpdir[256];

static void write_shard(const char *path, unsigned no, unsigned count, int tensors_total,
                        const char *tname)
{
    gguf_writer_t *w;
    assert_int_equal(gguf_writer_new(&w, 3, 32), 0);
    if (no == 0) assert_int_equal(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    assert_int_equal(gguf_writer_set_u16(w, "split.no", (uint16_t)no), 0);
    assert_int_equal(gguf_writer_set_u16(w, "split.count", (uint16_t)count), 0);
    assert_int_equal(gguf_writer_set_i32(w, "split.tensors.count", tensors_total), 0);
    float v[8] = {(float)no, 1, 2, 3, 4, 5, 6, 7};
    int64_t ne[1] = {8};
    assert_int_equal(gguf_writer_add_tensor(w, tname, DTYPE_F32, 1, ne, v, sizeof v), 0);
    char err[256];
    assert_int_equal(gguf_writer_write(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
}

static void test_files_and_splits(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_gguf.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char p[400], err[512];
    gguf_t *g;
    /* one plain file through gguf_open */
    gguf_writer_t *w = sample(3, 64);
    snprintf(p, sizeof p, "%s/plain.gguf", tmpdir);
    assert_int_equal(gguf_writer_write(w, p, err, sizeof err), 0);
    gguf_writer_free(w);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), 0);
    check_sample(g, 3, 64);
    assert_int_equal(gguf_shards(g), 1);
    gguf_free(g);
    snprintf(p, sizeof p, "%s/missing.gguf", tmpdir);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "missing.gguf"));

    /* three shards with gguf-split's names */
    const char *names[] = {"token_embd.weight", "blk.0.attn_q.weight", "output.weight"};
    for (unsigned i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/m-%05u-of-00003.gguf", tmpdir, i + 1);
        write_shard(p, i, 3, 3, names[i]);
    }
    snprintf(p, sizeof p, "%s/m-00001-of-00003.gguf", tmpdir);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), 0);
    assert_int_equal(gguf_shards(g), 3);
    assert_int_equal(gguf_n_tensors(g), 3);
    for (unsigned i = 0; i < 3; i++) {
        const gguf_tensor_t *t = gguf_find_tensor(g, names[i]);
        assert_non_null(t);
        assert_int_equal(t->shard, i);
        float first;
        memcpy(&first, t->data, 4);
        assert_true(first == (float)i);
    }
    gguf_str_t s;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s, err, sizeof err), 0);
    /* every shard copied into huge pages in place: the same pointers, the same bytes */
    const void *before[3];
    size_t total = 0;
    for (unsigned i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/m-%05u-of-00003.gguf", tmpdir, i + 1);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        total += (size_t)st.st_size;
        before[i] = gguf_find_tensor(g, names[i])->data;
    }
    size_t bytes = 0, huge = 0;
    assert_int_equal(gguf_hugepages(g, &bytes, &huge, err, sizeof err), 0);
    assert_true(huge <= bytes);
    assert_int_equal(bytes, total);
    for (unsigned i = 0; i < 3; i++) {
        const gguf_tensor_t *t = gguf_find_tensor(g, names[i]);
        assert_ptr_equal(t->data, before[i]);
        float first;
        memcpy(&first, t->data, 4);
        assert_true(first == (float)i);
    }
    gguf_str_t s2;
    assert_int_equal(gguf_get_str(g, "general.architecture", &s2, err, sizeof err), 0);
    assert_int_equal(s2.len, s.len);
    gguf_free(g);

    /* opening another shard is refused, naming the first */
    snprintf(p, sizeof p, "%s/m-00002-of-00003.gguf", tmpdir);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "is shard 2 of 3 of a split model: open the first shard"));
    assert_non_null(strstr(err, "m-00001-of-00003.gguf"));

    /* a missing shard is named */
    snprintf(p, sizeof p, "%s/m-00003-of-00003.gguf", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/m-00001-of-00003.gguf", tmpdir);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "split model shard 3 of 3"));

    /* a set whose metadata disagrees with its names */
    for (unsigned i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/n-%05u-of-00002.gguf", tmpdir, i + 1);
        write_shard(p, i, 3, 2, names[i]);
    }
    snprintf(p, sizeof p, "%s/n-00001-of-00002.gguf", tmpdir);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "split.count 3"));
    /* a shard renamed away from gguf-split's naming */
    snprintf(p, sizeof p, "%s/renamed.gguf", tmpdir);
    write_shard(p, 0, 2, 2, names[0]);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "a split model (split.count 2) whose name does not end in"));
    /* duplicated tensor across shards */
    for (unsigned i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/d-%05u-of-00002.gguf", tmpdir, i + 1);
        write_shard(p, i, 2, 2, names[0]);
    }
    snprintf(p, sizeof p, "%s/d-00001-of-00002.gguf", tmpdir);
    assert_int_equal(gguf_open(&g, p, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "tensor 'token_embd.weight' appears twice"));

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),          cmocka_unit_test(test_getter_errors),
        cmocka_unit_test(test_versions_and_magic), cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_hostile_counts),     cmocka_unit_test(test_hostile_metadata),
        cmocka_unit_test(test_hostile_tensors),    cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_files_and_splits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
