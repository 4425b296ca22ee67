/* Server reflection: the descriptor index, the answers, and the ServerReflectionInfo handler. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fakes.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "server/services/reflection.h"

extern const unsigned char test_chain_set[];
extern const size_t test_chain_set_len;

typedef Grpc__Reflection__V1__ServerReflectionRequest req_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse resp_t;

enum {
    BY_FILENAME = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME,
    BY_SYMBOL =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL,
    EXT_NUMBERS =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE,
    LIST = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES,
};

static req_t make_req(int which, const char *value)
{
    req_t q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.host = (char *)"localhost:50051";
    q.message_request_case = which;
    switch (which) {
    case BY_FILENAME:
        q.file_by_filename = (char *)value;
        break;
    case BY_SYMBOL:
        q.file_containing_symbol = (char *)value;
        break;
    case EXT_NUMBERS:
        q.all_extension_numbers_of_type = (char *)value;
        break;
    case LIST:
        q.list_services = (char *)value;
        break;
    }
    return q;
}

static reflection_t *load(const unsigned char *set, size_t len)
{
    char err[256];
    reflection_t *r;
    if (reflection_new(&r, set, len, err, sizeof err)) fail_msg("reflection_new: %s", err);
    return r;
}

/* Asserts the answer is exactly the files named, in order. */
static void expect_files(const reflection_t *r, const req_t *q, const char *const *names, size_t n)
{
    resp_t resp;
    assert_int_equal(reflection_answer(r, q, NULL, 0, NULL, &resp), 0);
    if (resp.message_response_case !=
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE)
        fail_msg(
            "expected files, got case %d (%s)", resp.message_response_case,
            resp.message_response_case ==
                    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE
                ? resp.error_response->error_message
                : "");
    const Grpc__Reflection__V1__FileDescriptorResponse *fr = resp.file_descriptor_response;
    assert_int_equal(fr->n_file_descriptor_proto, n);
    for (size_t i = 0; i < n; i++) {
        Google__Protobuf__FileDescriptorProto *fd = google__protobuf__file_descriptor_proto__unpack(
            NULL, fr->file_descriptor_proto[i].len, fr->file_descriptor_proto[i].data);
        assert_non_null(fd);
        assert_string_equal(fd->name, names[i]);
        google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
    }
    assert_string_equal(resp.valid_host, "localhost:50051");
    assert_ptr_equal(resp.original_request, q);
    reflection_answer_dispose(&resp, NULL);
}

static void expect_symbol(const reflection_t *r, const char *symbol, const char *file)
{
    req_t q = make_req(BY_SYMBOL, symbol);
    expect_files(r, &q, &file, 1);
}

static void expect_error(const reflection_t *r, const req_t *q, int code, const char *needle)
{
    resp_t resp;
    assert_int_equal(reflection_answer(r, q, NULL, 0, NULL, &resp), 0);
    assert_int_equal(
        resp.message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
    assert_int_equal(resp.error_response->error_code, code);
    if (needle && !strstr(resp.error_response->error_message, needle))
        fail_msg("error '%s' lacks '%s'", resp.error_response->error_message, needle);
    assert_ptr_equal(resp.original_request, q);
    reflection_answer_dispose(&resp, NULL);
}

/* ---- the embedded set ---- */

static void test_embedded_set(void **state)
{
    (void)state;
    reflection_t *r = load(inferd_descriptor_set, inferd_descriptor_set_len);
    assert_int_equal(reflection_file_count(r), 4);
    const char *inference = "inferd/v1/inference.proto", *health = "grpc/health/v1/health.proto";
    expect_symbol(r, "inferd.v1.Inference", inference);
    expect_symbol(r, "inferd.v1.GenerateRequest", inference);
    expect_symbol(r, "inferd.v1.Inference.GenerateStream", inference);
    expect_symbol(r, "inferd.v1.FinishReason", inference);
    expect_symbol(r, "inferd.v1.FINISH_REASON_EOS", inference); /* enum values beside the enum */
    expect_symbol(r, "inferd.v1.GenerateRequest.token_ids", inference);
    expect_symbol(r, "inferd.v1", inference);
    expect_symbol(r, "inferd", inference);
    expect_symbol(r, "grpc.health.v1.Health", health);
    expect_symbol(r, "grpc.health.v1.Health.Check", health);
    expect_symbol(r, "grpc.health.v1.HealthCheckResponse.ServingStatus", health);
    expect_symbol(r, "grpc.health.v1.HealthCheckResponse.SERVING", health);
    expect_symbol(r, "grpc.health.v1.HealthListResponse.StatusesEntry", health);
    expect_symbol(r, "grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto");
    expect_symbol(r, "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
                  "grpc/reflection/v1alpha/reflection.proto");
    expect_symbol(r, "grpc.reflection.v1alpha", "grpc/reflection/v1alpha/reflection.proto");

    req_t q = make_req(BY_FILENAME, health);
    expect_files(r, &q, &health, 1); /* health.proto imports nothing */
    q = make_req(BY_FILENAME, inference);
    expect_files(r, &q, &inference, 1);
    reflection_free(r);
}

static void test_not_found(void **state)
{
    (void)state;
    reflection_t *r = load(inferd_descriptor_set, inferd_descriptor_set_len);
    static const char *const symbols[] = {
        "inferd.v1.Nope",
        "inferd.v1.Inference.Nope",
        ".inferd.v1.Inference",
        "inferd.v",
        "",
        "inferd.v1.Inference.",
        "grpc.health.v1.Health/Check",
    };
    for (size_t i = 0; i < sizeof symbols / sizeof *symbols; i++) {
        req_t q = make_req(BY_SYMBOL, symbols[i]);
        expect_error(r, &q, GRPC_STATUS_NOT_FOUND, symbols[i]);
    }
    req_t q = make_req(BY_FILENAME, "nope.proto");
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "nope.proto");
    q = make_req(BY_FILENAME, "");
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "file not found");
    q = make_req(BY_FILENAME, NULL);
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "file not found");
    q = make_req(BY_SYMBOL, "grpc.health.v1.Health");
    q.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET;
    expect_error(r, &q, GRPC_STATUS_UNIMPLEMENTED, NULL);
    reflection_free(r);
}

static void test_list_services(void **state)
{
    (void)state;
    reflection_t *r = load(inferd_descriptor_set, inferd_descriptor_set_len);
    static const char *const services[] = {"grpc.health.v1.Health", "inferd.v1.Inference",
                                           "grpc.reflection.v1.ServerReflection"};
    req_t q = make_req(LIST, "*");
    q.host = NULL;
    resp_t resp;
    assert_int_equal(reflection_answer(r, &q, services, 3, NULL, &resp), 0);
    assert_int_equal(
        resp.message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    assert_string_equal(resp.valid_host, "");
    assert_int_equal(resp.list_services_response->n_service, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(resp.list_services_response->service[i]->name, services[i]);
    /* The whole response packs and reads back, original_request included. */
    size_t n = grpc__reflection__v1__server_reflection_response__get_packed_size(&resp);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    grpc__reflection__v1__server_reflection_response__pack(&resp, buf);
    reflection_answer_dispose(&resp, NULL);
    resp_t *back = grpc__reflection__v1__server_reflection_response__unpack(NULL, n, buf);
    assert_non_null(back);
    assert_non_null(back->original_request);
    assert_int_equal(back->original_request->message_request_case, LIST);
    assert_string_equal(back->original_request->list_services, "*");
    assert_int_equal(back->list_services_response->n_service, 3);
    grpc__reflection__v1__server_reflection_response__free_unpacked(back, NULL);
    free(buf);

    assert_int_equal(reflection_answer(r, &q, NULL, 0, NULL, &resp), 0);
    assert_int_equal(resp.list_services_response->n_service, 0);
    reflection_answer_dispose(&resp, NULL);
    reflection_free(r);
}

/* ---- transitive imports: top -> left, right -> base; right -> descriptor.proto ---- */

static void test_transitive_deps(void **state)
{
    (void)state;
    reflection_t *r = load(test_chain_set, test_chain_set_len);
    assert_int_equal(reflection_file_count(r), 5);
    static const char *const top[] = {"chain/top.proto", "chain/left.proto", "chain/base.proto",
                                      "chain/right.proto", "google/protobuf/descriptor.proto"};
    req_t q = make_req(BY_FILENAME, "chain/top.proto");
    expect_files(r, &q, top, 5); /* base once, though both sides import it */
    q = make_req(BY_SYMBOL, "chain.Chain.Do");
    expect_files(r, &q, top, 5);
    static const char *const right[] = {"chain/right.proto", "chain/base.proto",
                                        "google/protobuf/descriptor.proto"};
    q = make_req(BY_FILENAME, "chain/right.proto");
    expect_files(r, &q, right, 3);
    q = make_req(BY_SYMBOL, "chain.right.Right.right_id"); /* a nested extension */
    expect_files(r, &q, right, 3);
    static const char *const left[] = {"chain/left.proto", "chain/base.proto"};
    q = make_req(BY_SYMBOL, "chain.left.left_tag");
    expect_files(r, &q, left, 2);
    expect_symbol(r, "chain.base.Base.Inner", "chain/base.proto");
    expect_symbol(r, "chain.base.Base.Kind", "chain/base.proto");
    expect_symbol(r, "chain.base.Base.KIND_A", "chain/base.proto");
    expect_symbol(r, "google.protobuf.FileDescriptorProto", "google/protobuf/descriptor.proto");
    expect_symbol(r, "chain.base", "chain/base.proto");
    /* "chain" is declared (as an enclosing package) by several files: one of them answers. */
    resp_t resp;
    q = make_req(BY_SYMBOL, "chain");
    assert_int_equal(reflection_answer(r, &q, NULL, 0, NULL, &resp), 0);
    assert_int_equal(
        resp.message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    reflection_answer_dispose(&resp, NULL);
    reflection_free(r);
}

/* The bytes served are exactly the bytes protoc wrote for each file. */
static void test_bytes_verbatim(void **state)
{
    (void)state;
    reflection_t *r = load(test_chain_set, test_chain_set_len);
    const uint8_t *p = test_chain_set, *end = test_chain_set + test_chain_set_len;
    size_t files = 0;
    while (p < end) {
        assert_int_equal(*p++, 0x0a); /* field 1, length-delimited */
        size_t len = 0;
        for (unsigned shift = 0;; shift += 7) {
            len |= (size_t)(*p & 0x7f) << shift;
            if (!(*p++ & 0x80)) break;
        }
        Google__Protobuf__FileDescriptorProto *fd =
            google__protobuf__file_descriptor_proto__unpack(NULL, len, p);
        assert_non_null(fd);
        req_t q = make_req(BY_FILENAME, fd->name);
        resp_t resp;
        assert_int_equal(reflection_answer(r, &q, NULL, 0, NULL, &resp), 0);
        const ProtobufCBinaryData *b = &resp.file_descriptor_response->file_descriptor_proto[0];
        assert_int_equal(b->len, len);
        assert_memory_equal(b->data, p, len);
        reflection_answer_dispose(&resp, NULL);
        google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
        p += len;
        files++;
    }
    assert_int_equal(files, 5);
    reflection_free(r);
}

static void test_extensions(void **state)
{
    (void)state;
    reflection_t *r = load(test_chain_set, test_chain_set_len);
    static const char *const left[] = {"chain/left.proto", "chain/base.proto"};
    static const char *const right[] = {"chain/right.proto", "chain/base.proto",
                                        "google/protobuf/descriptor.proto"};
    Grpc__Reflection__V1__ExtensionRequest er = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    req_t q = make_req(BY_SYMBOL, NULL);
    q.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    q.file_containing_extension = &er;
    er.containing_type = (char *)"chain.base.Base";
    er.extension_number = 100;
    expect_files(r, &q, left, 2);
    er.extension_number = 150;
    expect_files(r, &q, right, 3);
    er.containing_type = (char *)"google.protobuf.MessageOptions";
    er.extension_number = 50001;
    expect_files(r, &q, right, 3);
    er.extension_number = 50002;
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "50002");
    er.containing_type = (char *)"chain.Nope";
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "chain.Nope");
    q.file_containing_extension = NULL;
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, NULL);

    resp_t resp;
    q = make_req(EXT_NUMBERS, "chain.base.Base");
    assert_int_equal(reflection_answer(r, &q, NULL, 0, NULL, &resp), 0);
    assert_int_equal(
        resp.message_response_case,
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
    const Grpc__Reflection__V1__ExtensionNumberResponse *en = resp.all_extension_numbers_response;
    assert_string_equal(en->base_type_name, "chain.base.Base");
    assert_int_equal(en->n_extension_number, 2);
    assert_int_equal(en->extension_number[0], 100);
    assert_int_equal(en->extension_number[1], 150);
    reflection_answer_dispose(&resp, NULL);
    q = make_req(EXT_NUMBERS, "chain.Chain"); /* a service, not a message */
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "chain.Chain");
    reflection_free(r);

    /* The served set has no extensions: a known message has none, an unknown one is NOT_FOUND. */
    r = load(inferd_descriptor_set, inferd_descriptor_set_len);
    q = make_req(EXT_NUMBERS, "inferd.v1.GenerateRequest");
    assert_int_equal(reflection_answer(r, &q, NULL, 0, NULL, &resp), 0);
    assert_string_equal(resp.all_extension_numbers_response->base_type_name,
                        "inferd.v1.GenerateRequest");
    assert_int_equal(resp.all_extension_numbers_response->n_extension_number, 0);
    reflection_answer_dispose(&resp, NULL);
    q = make_req(EXT_NUMBERS, "inferd.v1.Nope");
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "inferd.v1.Nope");
    q = make_req(BY_SYMBOL, NULL);
    q.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    q.file_containing_extension = &er;
    er.containing_type = (char *)"inferd.v1.GenerateRequest";
    er.extension_number = 1;
    expect_error(r, &q, GRPC_STATUS_NOT_FOUND, "inferd.v1.GenerateRequest");
    reflection_free(r);
}

/* ---- hostile input ---- */

static void expect_rejected(const void *set, size_t len, const char *needle)
{
    char err[256] = "unset";
    reflection_t *r;
    int rc = reflection_new(&r, set, len, err, sizeof err);
    if (!rc) {
        reflection_free(r);
        fail_msg("accepted a bad set (expected '%s')", needle ? needle : "an error");
    }
    assert_int_equal(rc, -EINVAL); /* bad input, never reported as out of memory */
    assert_null(r);
    if (needle && !strstr(err, needle)) fail_msg("error '%s' lacks '%s'", err, needle);
}

static uint8_t *pack_set(Google__Protobuf__FileDescriptorProto **files, size_t n, size_t *len)
{
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    set.n_file = n;
    set.file = files;
    *len = google__protobuf__file_descriptor_set__get_packed_size(&set);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    google__protobuf__file_descriptor_set__pack(&set, buf);
    return buf;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* A set of one file with messages nested depth deep: M { M { M { ... } } }. */
static uint8_t *nested_set(int depth, size_t *len)
{
    size_t cap = (size_t)depth * 16 + 64, n = 0;
    uint8_t *cur = malloc(cap), *next = malloc(cap);
    assert_non_null(cur);
    assert_non_null(next);
    for (int d = 0; d < depth; d++) {
        size_t m = 0;
        next[m++] = 0x0a; /* name = "M" */
        next[m++] = 1;
        next[m++] = 'M';
        if (n) {
            next[m++] = 0x1a; /* nested_type */
            m += put_varint(next + m, n);
            memcpy(next + m, cur, n);
            m += n;
        }
        uint8_t *t = cur;
        cur = next;
        next = t;
        n = m;
    }
    size_t m = 0;
    static const char name[] = "deep.proto";
    next[m++] = 0x0a;
    next[m++] = sizeof name - 1;
    memcpy(next + m, name, sizeof name - 1);
    m += sizeof name - 1;
    next[m++] = 0x22; /* message_type */
    m += put_varint(next + m, n);
    memcpy(next + m, cur, n);
    m += n;
    /* the set: field 1 */
    cur[0] = 0x0a;
    n = 1 + put_varint(cur + 1, m);
    memcpy(cur + n, next, m);
    n += m;
    free(next);
    *len = n;
    return cur;
}

static void test_hostile(void **state)
{
    (void)state;
    expect_rejected(NULL, 0, "empty");
    expect_rejected("", 0, "empty");
    expect_rejected("\xff\xff\xff", 3, "malformed");
    expect_rejected("\x0a\x05\x0a\x03", 4, "malformed");     /* length past the end */
    expect_rejected("\x0b\x0c", 2, "malformed");             /* groups */
    expect_rejected("\x10\x01", 2, "holds no files");        /* an unknown varint field */
    expect_rejected("\x0a\x00", 2, "no name");               /* one empty file */
    expect_rejected("\x0a\x02\x0a\x00", 4, "no name");       /* name "" */
    expect_rejected("\x0a\x03\x22\x01\x0a", 5, "malformed"); /* truncated nested message */
    expect_rejected("\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12, "malformed");
    expect_rejected(inferd_descriptor_set, (64u << 20) + 1, "exceeds");

    /* Every truncation: rejected or (cut at a file boundary) a smaller consistent set; never a
     * crash or a leak. Cutting inside the last file always fails. */
    for (size_t n = 0; n < test_chain_set_len; n++) {
        reflection_t *r;
        if (reflection_new(&r, test_chain_set, n, NULL, 0) == 0) reflection_free(r);
    }
    expect_rejected(test_chain_set, test_chain_set_len - 1, NULL);
    for (size_t n = 0; n < inferd_descriptor_set_len; n += 7) {
        reflection_t *r;
        if (reflection_new(&r, inferd_descriptor_set, n, NULL, 0) == 0) reflection_free(r);
    }

    /* Byte corruption, deterministic. */
    uint8_t *copy = malloc(test_chain_set_len);
    assert_non_null(copy);
    uint32_t seed = 12345;
    for (int i = 0; i < 3000; i++) {
        memcpy(copy, test_chain_set, test_chain_set_len);
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % test_chain_set_len;
            seed = seed * 1103515245u + 12345u;
            copy[at] ^= (uint8_t)(1u << ((seed >> 16) % 8));
        }
        char err[128];
        reflection_t *r = NULL;
        reflection_new(&r, copy, test_chain_set_len, err, sizeof err);
        if (r) {
            /* Whatever was accepted answers without crashing. */
            req_t q = make_req(BY_FILENAME, "chain/top.proto");
            resp_t resp;
            assert_int_equal(reflection_answer(r, &q, NULL, 0, NULL, &resp), 0);
            reflection_answer_dispose(&resp, NULL);
        }
        reflection_free(r);
    }
    free(copy);

    /* Nesting: protobuf-c's unpacker would recurse per level; the pre-scan stops it. */
    size_t len;
    uint8_t *deep = nested_set(100000, &len);
    expect_rejected(deep, len, "deeper");
    free(deep);
    deep = nested_set(150, &len);
    expect_rejected(deep, len, "deeper");
    free(deep);
    deep = nested_set(60, &len);
    reflection_t *r = load(deep, len);
    expect_symbol(r, "M.M.M.M.M", "deep.proto");
    reflection_free(r);
    free(deep);
}

static void test_inconsistent_sets(void **state)
{
    (void)state;
    Google__Protobuf__FileDescriptorProto a = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT,
                                          b = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    Google__Protobuf__DescriptorProto m = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;
    Google__Protobuf__DescriptorProto *ms[] = {&m};
    Google__Protobuf__FileDescriptorProto *files[] = {&a, &b};
    char *deps[] = {(char *)"missing.proto"};
    size_t len;
    uint8_t *buf;

    a.name = (char *)"a.proto";
    a.package = (char *)"p";
    a.n_dependency = 1;
    a.dependency = deps;
    buf = pack_set(files, 1, &len);
    expect_rejected(buf, len, "missing.proto");
    free(buf);

    a.n_dependency = 0;
    b.name = (char *)"a.proto";
    buf = pack_set(files, 2, &len);
    expect_rejected(buf, len, "twice");
    free(buf);

    /* The same message in two files. */
    b.name = (char *)"b.proto";
    b.package = (char *)"p";
    m.name = (char *)"M";
    a.n_message_type = b.n_message_type = 1;
    a.message_type = b.message_type = ms;
    buf = pack_set(files, 2, &len);
    expect_rejected(buf, len, "p.M");
    free(buf);

    /* A message named like a package. */
    b.n_message_type = 0;
    b.package = (char *)"p.M.q";
    buf = pack_set(files, 2, &len);
    expect_rejected(buf, len, "p.M");
    free(buf);

    /* An unnamed message. */
    m.name = NULL;
    buf = pack_set(files, 1, &len);
    expect_rejected(buf, len, "unnamed");
    free(buf);

    /* Shared packages and an import cycle are fine; the closure visits each file once. */
    m.name = (char *)"M";
    b.package = (char *)"p";
    char *dep_b[] = {(char *)"b.proto"}, *dep_a[] = {(char *)"a.proto"};
    a.n_dependency = b.n_dependency = 1;
    a.dependency = dep_b;
    b.dependency = dep_a;
    buf = pack_set(files, 2, &len);
    reflection_t *r = load(buf, len);
    static const char *const ab[] = {"a.proto", "b.proto"}, *const ba[] = {"b.proto", "a.proto"};
    req_t q = make_req(BY_FILENAME, "a.proto");
    expect_files(r, &q, ab, 2);
    q = make_req(BY_FILENAME, "b.proto");
    expect_files(r, &q, ba, 2);
    q = make_req(BY_SYMBOL, "p"); /* both declare it: the first file answers */
    expect_files(r, &q, ab, 2);
    reflection_free(r);
    free(buf);
}

/* ---- allocation failure ---- */

typedef struct {
    int left; /* allocations that succeed; -1: all */
    int live;
} failing_t;

static void *failing_alloc(void *data, size_t n)
{
    failing_t *f = data;
    if (f->left == 0) return NULL;
    if (f->left > 0) f->left--;
    f->live++;
    return malloc(n);
}

static void failing_free(void *data, void *p)
{
    failing_t *f = data;
    f->live--;
    free(p);
}

static void test_alloc_failure(void **state)
{
    (void)state;
    reflection_t *r = load(test_chain_set, test_chain_set_len);
    static const char *const services[] = {"a", "b"};
    Grpc__Reflection__V1__ExtensionRequest er = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    er.containing_type = (char *)"chain.base.Base";
    er.extension_number = 7;
    req_t reqs[] = {
        make_req(BY_FILENAME, "chain/top.proto"),
        make_req(BY_FILENAME, "nope"),
        make_req(BY_SYMBOL, "chain.left.Left"),
        make_req(EXT_NUMBERS, "chain.base.Base"),
        make_req(LIST, ""),
        make_req(BY_SYMBOL, ""),
    };
    reqs[5].message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    reqs[5].file_containing_extension = &er;
    for (size_t i = 0; i < sizeof reqs / sizeof *reqs; i++) {
        for (int left = 0;; left++) {
            failing_t f = {.left = left};
            ProtobufCAllocator a = {
                .alloc = failing_alloc, .free = failing_free, .allocator_data = &f};
            resp_t resp;
            int rc = reflection_answer(r, &reqs[i], services, 2, &a, &resp);
            if (rc == 0) {
                assert_true(resp.message_response_case != 0);
                reflection_answer_dispose(&resp, &a);
                assert_int_equal(f.live, 0);
                break;
            }
            assert_int_equal(rc, -ENOMEM);
            assert_int_equal(f.live, 0);
            assert_int_equal(resp.message_response_case, 0);
            assert_true(left < 10);
        }
    }
    reflection_free(r);
}

/* ---- v1alpha is wire-identical to v1, so both rows can use the v1 descriptors ---- */

static void same_message(const ProtobufCMessageDescriptor *a, const ProtobufCMessageDescriptor *b,
                         int depth)
{
    assert_true(depth < 8);
    assert_string_equal(a->short_name, b->short_name);
    assert_int_equal(a->n_fields, b->n_fields);
    for (unsigned i = 0; i < a->n_fields; i++) {
        const ProtobufCFieldDescriptor *x = &a->fields[i], *y = &b->fields[i];
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->id, y->id);
        assert_int_equal(x->label, y->label);
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->offset, y->offset);
        assert_int_equal(x->quantifier_offset, y->quantifier_offset);
        assert_int_equal(x->flags, y->flags);
        if (x->type == PROTOBUF_C_TYPE_MESSAGE)
            same_message(x->descriptor, y->descriptor, depth + 1);
    }
    assert_int_equal(a->sizeof_message, b->sizeof_message);
}

static void test_v1alpha_wire_identical(void **state)
{
    (void)state;
    same_message(&grpc__reflection__v1__server_reflection_request__descriptor,
                 &grpc__reflection__v1alpha__server_reflection_request__descriptor, 0);
    same_message(&grpc__reflection__v1__server_reflection_response__descriptor,
                 &grpc__reflection__v1alpha__server_reflection_response__descriptor, 0);
}

/* ---- the handler, on fake calls ---- */

/* Serializes a v1alpha request and decodes it as the row does. */
static ProtobufCMessage *alpha_request(const grpc_method_t *row,
                                       const Grpc__Reflection__V1alpha__ServerReflectionRequest *q)
{
    size_t n = grpc__reflection__v1alpha__server_reflection_request__get_packed_size(q);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    grpc__reflection__v1alpha__server_reflection_request__pack(q, buf);
    ProtobufCMessage *m = protobuf_c_message_unpack(row->request, NULL, n, buf);
    free(buf);
    assert_non_null(m);
    return m;
}

static Grpc__Reflection__V1alpha__ServerReflectionResponse *alpha_response(const grpc_call_t *c,
                                                                           size_t i)
{
    assert_true(i < c->nsent);
    Grpc__Reflection__V1alpha__ServerReflectionResponse *resp =
        grpc__reflection__v1alpha__server_reflection_response__unpack(NULL, c->sent_len[i],
                                                                      c->sent[i]);
    assert_non_null(resp);
    return resp;
}

static void test_handler(void **state)
{
    (void)state;
    reflection_t *r = load(inferd_descriptor_set, inferd_descriptor_set_len);
    size_t n;
    grpc_method_t *rows = reflection_methods(r, &n);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].path, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
    assert_string_equal(rows[1].path,
                        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
    assert_string_equal(rows[0].service, "grpc.reflection.v1.ServerReflection");
    assert_string_equal(rows[1].service, "grpc.reflection.v1alpha.ServerReflection");
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].kind, GRPC_BIDI_STREAMING);
        assert_string_equal(rows[i].name, "ServerReflectionInfo");
        assert_ptr_equal(rows[i].arg, r);
        assert_non_null(rows[i].on_message);
        assert_non_null(rows[i].on_half_close);
    }

    static const char *const services[] = {"grpc.health.v1.Health", "inferd.v1.Inference",
                                           "grpc.reflection.v1.ServerReflection",
                                           "grpc.reflection.v1alpha.ServerReflection"};
    fake_services = services;
    fake_nservices = 4;

    /* grpcurl's sequence on a v1alpha stream: list, then a symbol, then an unknown one. */
    grpc_call_t call;
    fake_call_init(&call, &rows[1]);
    Grpc__Reflection__V1alpha__ServerReflectionRequest q =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    q.host = (char *)"h";
    q.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    q.list_services = (char *)"*";
    ProtobufCMessage *m1 = alpha_request(&rows[1], &q);
    q.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    q.file_containing_symbol = (char *)"grpc.health.v1.Health";
    ProtobufCMessage *m2 = alpha_request(&rows[1], &q);
    q.file_containing_symbol = (char *)"no.Such";
    ProtobufCMessage *m3 = alpha_request(&rows[1], &q);
    rows[1].on_message(&call, m1);
    rows[1].on_message(&call, m2);
    rows[1].on_message(&call, m3);
    assert_false(call.finished);
    assert_int_equal(call.nsent, 3);
    rows[1].on_half_close(&call);
    assert_true(call.finished);
    assert_int_equal(call.status, GRPC_STATUS_OK);

    Grpc__Reflection__V1alpha__ServerReflectionResponse *a = alpha_response(&call, 0);
    assert_string_equal(a->valid_host, "h");
    assert_int_equal(
        a->message_response_case,
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    assert_int_equal(a->list_services_response->n_service, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(a->list_services_response->service[i]->name, services[i]);
    assert_string_equal(a->original_request->list_services, "*");
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(a, NULL);
    a = alpha_response(&call, 1);
    assert_int_equal(
        a->message_response_case,
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
    assert_int_equal(a->file_descriptor_response->n_file_descriptor_proto, 1);
    Google__Protobuf__FileDescriptorProto *fd = google__protobuf__file_descriptor_proto__unpack(
        NULL, a->file_descriptor_response->file_descriptor_proto[0].len,
        a->file_descriptor_response->file_descriptor_proto[0].data);
    assert_non_null(fd);
    assert_string_equal(fd->name, "grpc/health/v1/health.proto");
    google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(a, NULL);
    a = alpha_response(&call, 2);
    assert_int_equal(
        a->message_response_case,
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
    assert_int_equal(a->error_response->error_code, GRPC_STATUS_NOT_FOUND);
    assert_non_null(strstr(a->error_response->error_message, "no.Such"));
    assert_string_equal(a->original_request->file_containing_symbol, "no.Such");
    grpc__reflection__v1alpha__server_reflection_response__free_unpacked(a, NULL);
    fake_call_dispose(&call);

    /* v1 row, more services than fit on the handler's stack. */
    const char *many[70];
    char names[70][16];
    for (int i = 0; i < 70; i++) {
        snprintf(names[i], sizeof names[i], "svc.S%d", i);
        many[i] = names[i];
    }
    fake_services = many;
    fake_nservices = 70;
    fake_call_init(&call, &rows[0]);
    rows[0].on_message(&call, m1);
    assert_int_equal(call.nsent, 1);
    resp_t *v1 = grpc__reflection__v1__server_reflection_response__unpack(NULL, call.sent_len[0],
                                                                          call.sent[0]);
    assert_non_null(v1);
    assert_int_equal(v1->list_services_response->n_service, 70);
    assert_string_equal(v1->list_services_response->service[69]->name, "svc.S69");
    grpc__reflection__v1__server_reflection_response__free_unpacked(v1, NULL);
    fake_call_dispose(&call);

    /* A cancelled call: the send fails quietly. Out of memory ends the call. */
    fake_call_init(&call, &rows[0]);
    call.send_rc = -EPIPE;
    rows[0].on_message(&call, m2);
    assert_false(call.finished);
    call.send_rc = -ENOMEM;
    rows[0].on_message(&call, m2);
    assert_true(call.finished);
    assert_int_equal(call.status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    fake_call_dispose(&call);

    /* A message of the wrong type (a misconfigured row) is an internal error, not a crash. */
    fake_call_init(&call, &rows[0]);
    Grpc__Reflection__V1alpha__ServerReflectionRequest alpha =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT;
    rows[0].on_message(&call, &alpha.base);
    assert_true(call.finished);
    assert_int_equal(call.status, GRPC_STATUS_INTERNAL);
    fake_call_dispose(&call);

    protobuf_c_message_free_unpacked(m1, NULL);
    protobuf_c_message_free_unpacked(m2, NULL);
    protobuf_c_message_free_unpacked(m3, NULL);
    fake_services = NULL;
    fake_nservices = 0;
    reflection_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_set),   cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_list_services),  cmocka_unit_test(test_transitive_deps),
        cmocka_unit_test(test_bytes_verbatim), cmocka_unit_test(test_extensions),
        cmocka_unit_test(test_hostile),        cmocka_unit_test(test_inconsistent_sets),
        cmocka_unit_test(test_alloc_failure),  cmocka_unit_test(test_v1alpha_wire_identical),
        cmocka_unit_test(test_handler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
