/* Pure pieces of the gRPC layer: framing, grpc-timeout, percent-encoding, gzip. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "inferd/v1/inference.pb-c.h"
#include "server/core/conn.h"

typedef struct got {
    int n;
    size_t len[8];
    unsigned char data[8][64];
    int compressed[8];
} got_t;

static int collect(void *arg, int compressed, const unsigned char *msg, size_t len)
{
    got_t *g = arg;
    if (g->n == 8 || len > 64) return GRPC_STATUS_INTERNAL;
    g->compressed[g->n] = compressed;
    g->len[g->n] = len;
    memcpy(g->data[g->n++], msg, len);
    return 0;
}

/* Three messages (one empty, one compressed) in one byte string. */
static size_t three_messages(unsigned char *buf)
{
    size_t n = 0;
    const unsigned char m1[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
    const unsigned char m2[] = {0, 0, 0, 0, 0};
    const unsigned char m3[] = {1, 0, 0, 0, 2, 'x', 'y'};
    memcpy(buf + n, m1, sizeof m1), n += sizeof m1;
    memcpy(buf + n, m2, sizeof m2), n += sizeof m2;
    memcpy(buf + n, m3, sizeof m3), n += sizeof m3;
    return n;
}

static void check_three(const got_t *g)
{
    assert_int_equal(g->n, 3);
    assert_int_equal(g->len[0], 3);
    assert_memory_equal(g->data[0], "abc", 3);
    assert_int_equal(g->compressed[0], 0);
    assert_int_equal(g->len[1], 0);
    assert_int_equal(g->len[2], 2);
    assert_int_equal(g->compressed[2], 1);
    assert_memory_equal(g->data[2], "xy", 2);
}

static void test_deframe_whole(void **state)
{
    (void)state;
    unsigned char buf[64];
    size_t n = three_messages(buf);
    grpc_deframer_t d = {0};
    got_t g = {0};
    assert_int_equal(grpc_deframe(&d, buf, n, 1024, collect, &g), 0);
    check_three(&g);
    assert_false(grpc_deframer_partial(&d));
    grpc_deframer_dispose(&d);
}

/* Every split point, and byte by byte: messages span DATA frames arbitrarily. */
static void test_deframe_any_split(void **state)
{
    (void)state;
    unsigned char buf[64];
    size_t n = three_messages(buf);
    for (size_t cut = 0; cut <= n; cut++) {
        grpc_deframer_t d = {0};
        got_t g = {0};
        assert_int_equal(grpc_deframe(&d, buf, cut, 1024, collect, &g), 0);
        assert_int_equal(grpc_deframe(&d, buf + cut, n - cut, 1024, collect, &g), 0);
        check_three(&g);
        grpc_deframer_dispose(&d);
    }
    grpc_deframer_t d = {0};
    got_t g = {0};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(grpc_deframe(&d, buf + i, 1, 1024, collect, &g), 0);
        if (i == 3) assert_true(grpc_deframer_partial(&d));
    }
    check_three(&g);
    grpc_deframer_dispose(&d);
}

static void test_deframe_too_large(void **state)
{
    (void)state;
    const unsigned char big[] = {0, 0, 0, 4, 1}; /* 1025 bytes declared */
    grpc_deframer_t d = {0};
    got_t g = {0};
    assert_int_equal(grpc_deframe(&d, big, sizeof big, 1024, collect, &g),
                     GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(g.n, 0);
    grpc_deframer_dispose(&d);
    const unsigned char ok[] = {0, 0, 0, 4, 0}; /* exactly the limit: accepted, waits for data */
    grpc_deframer_t d2 = {0};
    assert_int_equal(grpc_deframe(&d2, ok, sizeof ok, 1024, collect, &g), 0);
    assert_true(grpc_deframer_partial(&d2));
    grpc_deframer_dispose(&d2);
}

static void test_timeout_units(void **state)
{
    (void)state;
    int64_t ns;
    assert_int_equal(grpc_timeout_parse("1H", &ns), 0);
    assert_true(ns == 3600LL * 1000000000LL);
    assert_int_equal(grpc_timeout_parse("2M", &ns), 0);
    assert_true(ns == 120LL * 1000000000LL);
    assert_int_equal(grpc_timeout_parse("3S", &ns), 0);
    assert_true(ns == 3000000000LL);
    assert_int_equal(grpc_timeout_parse("250m", &ns), 0);
    assert_true(ns == 250000000LL);
    assert_int_equal(grpc_timeout_parse("7u", &ns), 0);
    assert_true(ns == 7000);
    assert_int_equal(grpc_timeout_parse("99999999n", &ns), 0);
    assert_true(ns == 99999999);
    assert_int_equal(grpc_timeout_parse("99999999H", &ns), 0);
    assert_true(ns > 0); /* no overflow */
}

static void test_timeout_invalid(void **state)
{
    (void)state;
    int64_t ns;
    const char *bad[] = {"", "S", "1", "123456789S", "1s", "1X", "-1S", "1.5S", " 1S", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(grpc_timeout_parse(bad[i], &ns), -EINVAL);
    assert_int_equal(grpc_timeout_parse(NULL, &ns), -EINVAL);
}

static void test_percent(void **state)
{
    (void)state;
    char out[128], back[128];
    size_t n = grpc_percent_encode("ok 100% \xc3\xa9\n", out, sizeof out);
    assert_string_equal(out, "ok 100%25 %C3%A9%0A");
    assert_int_equal(n, strlen(out));
    grpc_percent_decode(out, back, sizeof back);
    assert_string_equal(back, "ok 100% \xc3\xa9\n");
    /* malformed sequences stay as they are */
    grpc_percent_decode("a%zzb%4", back, sizeof back);
    assert_string_equal(back, "a%zzb%4");
    /* truncation: returns the needed length, output NUL-terminated */
    char small[5];
    n = grpc_percent_encode("\n\n\n", small, sizeof small);
    assert_int_equal(n, 9);
    assert_true(strlen(small) < sizeof small);
}

static void test_gzip_roundtrip_and_limit(void **state)
{
    (void)state;
    char in[10000];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (char)('a' + i % 7);
    unsigned char *z, *back;
    size_t zl, bl;
    assert_int_equal(gzip_compress(in, sizeof in, &z, &zl), 0);
    assert_true(zl < sizeof in);
    assert_int_equal(gzip_decompress(z, zl, sizeof in, &back, &bl), 0);
    assert_int_equal(bl, sizeof in);
    assert_memory_equal(back, in, sizeof in);
    free(back);
    /* a decompression bomb is refused at the limit */
    assert_int_equal(gzip_decompress(z, zl, 1000, &back, &bl), -EMSGSIZE);
    /* corrupt and truncated input */
    assert_int_equal(gzip_decompress(z, zl / 2, sizeof in, &back, &bl), -EINVAL);
    z[zl / 2] ^= 0xff;
    z[zl / 2 + 1] ^= 0xff;
    assert_true(gzip_decompress(z, zl, sizeof in, &back, &bl) < 0);
    free(z);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(grpc_status_name(GRPC_STATUS_OK), "OK");
    assert_string_equal(grpc_status_name(GRPC_STATUS_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal(grpc_status_name(GRPC_STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(grpc_status_name((grpc_status_t)99), "UNKNOWN");
}

static void test_listener_scope(void **state)
{
    (void)state;
    static const char *const services[] = {"grpc.health.v1.Health"};
    static const char *const routes[] = {"live", "metrics"};
    server_scope_t sc = {.name = "the system port",
                         .services = services,
                         .n_services = 1,
                         .routes = routes,
                         .n_routes = 2};
    assert_true(server_scope_has_service(&sc, "grpc.health.v1.Health"));
    assert_false(server_scope_has_service(&sc, "inferd.v1.Inference"));
    assert_false(server_scope_has_service(&sc, "grpc.health.v1"));
    assert_true(server_scope_has_route(&sc, "live"));
    assert_true(server_scope_has_route(&sc, "metrics"));
    assert_false(server_scope_has_route(&sc, "fault"));
    assert_false(server_scope_has_route(&sc, "liv"));
    /* a NULL list serves everything of its kind: routes only, services open */
    server_scope_t routes_only = {.routes = routes, .n_routes = 2};
    assert_true(server_scope_has_service(&routes_only, "inferd.v1.Inference"));
    assert_false(server_scope_has_route(&routes_only, "fault"));
    /* no scope: everything */
    assert_true(server_scope_has_service(NULL, "inferd.v1.Inference"));
    assert_true(server_scope_has_route(NULL, "anything"));
}

static int count_msg(void *arg, int compressed, const unsigned char *msg, size_t len)
{
    (void)compressed;
    (void)msg;
    *(size_t *)arg = len;
    return 0;
}

/* A message's declared length costs nothing until its bytes come: the buffer grows with them
 * (100 streams announcing 4 MiB each once cost 400 MiB at once). */
static void test_deframe_grows_as_bytes_arrive(void **state)
{
    (void)state;
    const size_t big = 4u << 20;
    unsigned char *msg = calloc(1, big + 5);
    msg[1] = (unsigned char)(big >> 24), msg[2] = (unsigned char)(big >> 16);
    msg[3] = (unsigned char)(big >> 8), msg[4] = (unsigned char)big;
    grpc_deframer_t d = {0};
    size_t got = 0;
    assert_int_equal(grpc_deframe(&d, msg, 105, big, count_msg, &got), 0);
    assert_int_equal(grpc_deframer_held(&d), 105);
    assert_true(d.cap <= (16u << 10));
    for (size_t off = 105; off < big + 5; off += 65536) {
        size_t n = big + 5 - off < 65536 ? big + 5 - off : 65536;
        assert_int_equal(grpc_deframe(&d, msg + off, n, big, count_msg, &got), 0);
        assert_true(d.cap <= 2 * grpc_deframer_held(&d) + (16u << 10) || got);
    }
    assert_int_equal(got, big);
    assert_int_equal(grpc_deframer_held(&d), 0);
    grpc_deframer_dispose(&d);
    free(msg);
}

/* ---- the wire check before protobuf-c ---- */
static size_t put_tag(unsigned char *p, unsigned field, unsigned wt)
{
    size_t n = 0;
    unsigned v = field << 3 | wt;
    do {
        p[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static size_t put_str(unsigned char *p, unsigned field, const char *s, size_t len)
{
    size_t n = put_tag(p, field, 2);
    p[n++] = (unsigned char)len; /* < 128 here */
    memcpy(p + n, s, len);
    return n + len;
}

static const grpc_field_limit_t gen_limits[] = {
    {"request_id", 8, 0, NULL},
    {"token_ids", 0, 4, NULL},
    {"stop.stop_token_ids", 0, 2, NULL},
    {NULL, 0, 0, NULL},
};

static void wire_expect(const unsigned char *m, size_t n, grpc_status_t st, const char *msg)
{
    grpc_wire_result_t r;
    unsigned char *out;
    size_t ol;
    int rc =
        grpc_wire_check(&inferd__v1__generate_request__descriptor, gen_limits, m, n, &out, &ol, &r);
    free(out);
    if (st == GRPC_STATUS_OK) {
        assert_int_equal(rc, 0);
        return;
    }
    assert_int_equal(rc, -EINVAL);
    assert_int_equal(r.status, st);
    if (!strstr(r.msg, msg)) fail_msg("'%s' does not say '%s'", r.msg, msg);
}

/* Unknown fields are dropped on the wire, at any depth; what protobuf-c then decodes equals the
 * message without them (protobuf-c itself keeps every one, decoded, for the call's life). */
static void test_wire_drops_unknown_fields(void **state)
{
    (void)state;
    unsigned char clean[256], dirty[512];
    size_t c = 0, d = 0;
    unsigned char stop[32], dstop[64];
    size_t sn = 0, dn = 0;
    sn += put_tag(stop + sn, 1, 0), stop[sn++] = 7; /* max_tokens 7 */
    dn += put_tag(dstop + dn, 1, 0), dstop[dn++] = 7;
    dn += put_tag(dstop + dn, 900, 0), dstop[dn++] = 1; /* unknown inside stop */
    c += put_str(clean + c, 4, "hello", 5);
    d += put_tag(dirty + d, 77, 0), dirty[d++] = 5; /* unknown varint */
    d += put_str(dirty + d, 4, "hello", 5);
    d += put_str(dirty + d, 99, "unknown-bytes", 13);
    d += put_tag(dirty + d, 98, 5), memset(dirty + d, 1, 4), d += 4; /* fixed32 */
    d += put_tag(dirty + d, 97, 1), memset(dirty + d, 2, 8), d += 8; /* fixed64 */
    c += put_str(clean + c, 6, (const char *)stop, sn);
    d += put_str(dirty + d, 6, (const char *)dstop, dn);
    grpc_wire_result_t r;
    unsigned char *out;
    size_t ol;
    assert_int_equal(
        grpc_wire_check(&inferd__v1__generate_request__descriptor, NULL, clean, c, &out, &ol, &r),
        0);
    assert_null(out); /* nothing to drop: no copy */
    assert_int_equal(
        grpc_wire_check(&inferd__v1__generate_request__descriptor, NULL, dirty, d, &out, &ol, &r),
        0);
    assert_non_null(out);
    assert_true(r.unknown > 0);
    assert_int_equal(ol, c);
    assert_memory_equal(out, clean, c);
    Inferd__V1__GenerateRequest *m = inferd__v1__generate_request__unpack(NULL, ol, out);
    assert_non_null(m);
    assert_int_equal(m->base.n_unknown_fields, 0);
    assert_int_equal(m->stop->base.n_unknown_fields, 0);
    assert_string_equal(m->prompt, "hello");
    assert_int_equal(m->stop->max_tokens, 7);
    inferd__v1__generate_request__free_unpacked(m, NULL);
    free(out);
}

/* Strings are UTF-8 without NUL (protobuf-c would cut "ab\0cd" to "ab" without a word), and
 * the row's limits hold; the message names the field and the byte. */
static void test_wire_strings_and_limits(void **state)
{
    (void)state;
    unsigned char m[256];
    size_t n;
    static const struct {
        const char *s;
        size_t len;
        const char *why;
    } bad[] = {
        {"ab\0cd", 5, "field 'prompt' contains a NUL character at byte 2 (of 5)"},
        {"abc\xff", 4, "field 'prompt' is not valid UTF-8 at byte 3 (of 4)"},
        {"\xc0\xaf", 2, "field 'prompt' is not valid UTF-8 at byte 0 (of 2)"}, /* overlong '/' */
        {"x\xed\xa0\x80", 4,
         "field 'prompt' is not valid UTF-8 at byte 1 (of 4)"}, /* a surrogate */
        {"\xf4\x90\x80\x80", 4, "not valid UTF-8 at byte 0"},   /* past U+10FFFF */
        {"caf\xc3", 4, "not valid UTF-8 at byte 3"},            /* cut short */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = put_str(m, 4, bad[i].s, bad[i].len);
        wire_expect(m, n, GRPC_STATUS_INVALID_ARGUMENT, bad[i].why);
    }
    n = put_str(m, 4, "caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80", 14);
    wire_expect(m, n, GRPC_STATUS_OK, NULL);
    n = put_str(m, 1, "123456789", 9); /* request_id limited to 8 bytes */
    wire_expect(m, n, GRPC_STATUS_INVALID_ARGUMENT,
                "field 'request_id' is 9 bytes long, at most 8");
    n = put_str(m, 1, "12345678", 8);
    wire_expect(m, n, GRPC_STATUS_OK, NULL);
    /* token_ids: at most 4, packed or not, counted together */
    n = put_str(m, 3, "\x01\x02\x03", 3);
    n += put_tag(m + n, 3, 0), m[n++] = 9;
    wire_expect(m, n, GRPC_STATUS_OK, NULL);
    n += put_tag(m + n, 3, 0), m[n++] = 9;
    wire_expect(m, n, GRPC_STATUS_INVALID_ARGUMENT, "field 'token_ids' has more than 4 values");
    unsigned char stop[16];
    size_t sn = put_str(stop, 2, "\x01\x02\x80\x01", 4); /* three packed stop ids */
    n = put_str(m, 6, (const char *)stop, sn);
    wire_expect(m, n, GRPC_STATUS_INVALID_ARGUMENT,
                "field 'stop.stop_token_ids' has more than 2 values");
    /* not a protobuf message: INTERNAL, as protobuf-c would say */
    const unsigned char trunc[] = {0x22, 0x10, 'a'};
    wire_expect(trunc, sizeof trunc, GRPC_STATUS_INTERNAL, "failed to parse");
    const unsigned char group[] = {0x0b, 0x0c};
    wire_expect(group, sizeof group, GRPC_STATUS_INTERNAL, "failed to parse");
}

/* Replaces the first occurrence of the bytes of what in buf (same length) with with. */
static void poke(uint8_t *buf, size_t n, const char *what, const uint8_t *with)
{
    size_t wl = strlen(what);
    for (size_t i = 0; i + wl <= n; i++)
        if (!memcmp(buf + i, what, wl)) {
            memcpy(buf + i, with, wl);
            return;
        }
    fail_msg("%s not found", what);
}

/* A GenerateRequest with a prompt and two chat messages, packed. */
static size_t pack_chat(uint8_t *buf, size_t cap, const char *prompt, const char *content1)
{
    Inferd__V1__ChatMessage m0 = INFERD__V1__CHAT_MESSAGE__INIT,
                            m1 = INFERD__V1__CHAT_MESSAGE__INIT;
    Inferd__V1__ChatMessage *ms[] = {&m0, &m1};
    Inferd__V1__GenerateRequest r = INFERD__V1__GENERATE_REQUEST__INIT;
    m0.role = "system";
    m0.content = "be brief";
    m1.role = "user";
    m1.content = (char *)content1;
    r.prompt = (char *)prompt;
    r.messages = ms;
    r.n_messages = 2;
    size_t n = protobuf_c_message_get_packed_size(&r.base);
    assert_true(n <= cap);
    return protobuf_c_message_pack(&r.base, buf);
}

/* Where the check says the bad byte is: past the eight-byte ASCII fast path and right after
 * it, and in a nested, repeated field (named with its index). */
static void test_wire_names_field_and_byte(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t n = pack_chat(buf, sizeof buf, "caf\xc3\xa9 \xf0\x9f\x98\x80 ok", "hello");
    wire_expect(buf, n, GRPC_STATUS_OK, NULL);
    n = pack_chat(buf, sizeof buf, "abcdefghijklmnopqrstuvwXyz", "hello");
    poke(buf, n, "Xyz", (const uint8_t *)"\0yz");
    wire_expect(buf, n, GRPC_STATUS_INVALID_ARGUMENT,
                "field 'prompt' contains a NUL character at byte 23 (of 26)");
    n = pack_chat(buf, sizeof buf, "abcdefghXjklmnopqrstuvwxyz", "hello");
    poke(buf, n, "Xjk", (const uint8_t *)"\xe9jk");
    wire_expect(buf, n, GRPC_STATUS_INVALID_ARGUMENT,
                "field 'prompt' is not valid UTF-8 at byte 8 (of 26)");
    n = pack_chat(buf, sizeof buf, "fine", "helXo");
    poke(buf, n, "Xo", (const uint8_t *)"\xffo");
    wire_expect(buf, n, GRPC_STATUS_INVALID_ARGUMENT,
                "field 'messages[1].content' is not valid UTF-8 at byte 3 (of 5)");
    n = pack_chat(buf, sizeof buf,
                  "\x80"
                  "bcdefghijk",
                  "hello"); /* a lone continuation */
    wire_expect(buf, n, GRPC_STATUS_INVALID_ARGUMENT,
                "field 'prompt' is not valid UTF-8 at byte 0 (of 11)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deframe_whole),
        cmocka_unit_test(test_deframe_any_split),
        cmocka_unit_test(test_deframe_too_large),
        cmocka_unit_test(test_timeout_units),
        cmocka_unit_test(test_timeout_invalid),
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_gzip_roundtrip_and_limit),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_listener_scope),
        cmocka_unit_test(test_deframe_grows_as_bytes_arrive),
        cmocka_unit_test(test_wire_drops_unknown_fields),
        cmocka_unit_test(test_wire_strings_and_limits),
        cmocka_unit_test(test_wire_names_field_and_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
