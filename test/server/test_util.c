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

/* A GenerateRequest with a prompt and two chat messages, packed. */
static size_t pack_request(uint8_t *buf, size_t cap, const char *prompt, const char *content1)
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

static void test_check_strings(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &inferd__v1__generate_request__descriptor;
    uint8_t buf[512];
    char msg[320];
    size_t n = pack_request(buf, sizeof buf, "caf\xc3\xa9 \xf0\x9f\x98\x80 ok", "hello");
    assert_int_equal(grpc_check_strings(d, buf, n, msg, sizeof msg), 0);
    assert_string_equal(msg, "");
    /* a NUL inside the prompt: C would cut the string there */
    n = pack_request(buf, sizeof buf, "abcdefXgh", "hello");
    poke(buf, n, "Xgh", (const uint8_t *)"\0gh");
    assert_int_equal(grpc_check_strings(d, buf, n, msg, sizeof msg), -EINVAL);
    assert_string_equal(msg, "field 'prompt' contains a NUL character at byte 6 (of 9)");
    /* past the first eight bytes (the ASCII fast path), and right after it */
    n = pack_request(buf, sizeof buf, "abcdefghijklmnopqrstuvwXyz", "hello");
    poke(buf, n, "Xyz", (const uint8_t *)"\0yz");
    assert_int_equal(grpc_check_strings(d, buf, n, msg, sizeof msg), -EINVAL);
    assert_string_equal(msg, "field 'prompt' contains a NUL character at byte 23 (of 26)");
    n = pack_request(buf, sizeof buf, "abcdefghXjklmnopqrstuvwxyz", "hello");
    poke(buf, n, "Xjk", (const uint8_t *)"\xe9jk");
    assert_int_equal(grpc_check_strings(d, buf, n, msg, sizeof msg), -EINVAL);
    assert_string_equal(msg, "field 'prompt' is not valid UTF-8 at byte 8 (of 26)");
    /* invalid UTF-8 in a nested, repeated field: named with its index */
    n = pack_request(buf, sizeof buf, "fine", "helXo");
    poke(buf, n, "Xo", (const uint8_t *)"\xffo");
    assert_int_equal(grpc_check_strings(d, buf, n, msg, sizeof msg), -EINVAL);
    assert_string_equal(msg, "field 'messages[1].content' is not valid UTF-8 at byte 3 (of 5)");
    /* overlong, surrogate, beyond U+10FFFF, truncated, lone continuation */
    const char *bad[] = {"\xc0\xafxx", "\xed\xa0\x80x", "\xf4\x90\x80\x80", "abc\xe2\x82",
                         "\x80"
                         "bcd"};
    const size_t at[] = {0, 0, 0, 3, 0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        n = pack_request(buf, sizeof buf, bad[i], "hello");
        assert_int_equal(grpc_check_strings(d, buf, n, msg, sizeof msg), -EINVAL);
        char want[120];
        snprintf(want, sizeof want, "field 'prompt' is not valid UTF-8 at byte %zu (of %zu)", at[i],
                 strlen(bad[i]));
        assert_string_equal(msg, want);
    }
    /* a malformed wire format is left to the unpack */
    n = pack_request(buf, sizeof buf, "fine", "hello");
    assert_int_equal(grpc_check_strings(d, buf, n - 2, msg, sizeof msg), -EBADMSG);
    /* unknown fields and bytes are not strings: not checked */
    const uint8_t unknown[] = {0xfa, 0x01, 0x02, 0xff, 0x00}; /* field 31, LEN 2 */
    assert_int_equal(grpc_check_strings(d, unknown, sizeof unknown, msg, sizeof msg), 0);
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
        cmocka_unit_test(test_check_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
