/* The canary payload parser (DYN_HEALTH_CHECK_PAYLOAD): proto JSON into a GenerateRequest, and
 * errors that name the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/base/config.h"
#include "server/services/canary.h"

static Inferd__V1__GenerateRequest *parse_ok(const char *spec)
{
    Inferd__V1__GenerateRequest *m = NULL;
    char err[400] = "";
    if (canary_payload_parse(spec, &m, err, sizeof err)) fail_msg("'%s': %s", spec, err);
    assert_non_null(m);
    return m;
}

static void expect_error(const char *spec, const char *needle)
{
    Inferd__V1__GenerateRequest *m = (Inferd__V1__GenerateRequest *)&m;
    char err[400] = "";
    assert_int_equal(canary_payload_parse(spec, &m, err, sizeof err), -EINVAL);
    if (!strstr(err, needle)) fail_msg("'%s': error '%s' lacks '%s'", spec, err, needle);
}

static void test_fields_both_spellings(void **state)
{
    (void)state;
    Inferd__V1__GenerateRequest *m =
        parse_ok("{\"token_ids\":[1,2,3],\"sampling\":{\"temperature\":0.5,\"topK\":4,"
                 "\"seed\":\"18446744073709551615\"},\"stop\":{\"maxTokens\":2,"
                 "\"ignore_eos\":true,\"stop_token_ids\":[7]},\"model\":null}");
    assert_int_equal(m->n_token_ids, 3);
    assert_int_equal(m->token_ids[2], 3);
    assert_non_null(m->sampling);
    assert_true(m->sampling->temperature == 0.5f);
    assert_int_equal(m->sampling->top_k, 4);
    assert_true(m->sampling->seed == UINT64_MAX);
    assert_int_equal(m->stop->max_tokens, 2);
    assert_true(m->stop->ignore_eos);
    assert_int_equal(m->stop->n_stop_token_ids, 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    m = parse_ok("{\"prompt\":\"Once upon\",\"stop\":{\"max_tokens\":3.0}}");
    assert_string_equal(m->prompt, "Once upon");
    assert_int_equal(m->stop->max_tokens, 3);
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void test_errors_name_the_field(void **state)
{
    (void)state;
    expect_error("{\"x\":1}", "unknown field 'x'");
    expect_error("{\"stop\":{\"max_tokens\":\"two\"}}",
                 "field 'stop.max_tokens': expected an unsigned integer, got a string");
    expect_error("{\"stop\":{\"max_tokens\":-1}}", "out of range");
    expect_error("{\"token_ids\":[1,\"a\"]}", "field 'token_ids[1]'");
    expect_error("{\"token_ids\":5}", "expected an array");
    expect_error("{\"max\":", "bad JSON at line 1");
    expect_error("[1]", "expected a JSON object");
    expect_error("{\"stop\":{\"max_tokens\":1,\"maxTokens\":2}}", "given twice");
    expect_error("{\"sampling\":[1]}", "field 'sampling': expected an object, got an array");
    expect_error("@/nonexistent/payload.json", "");
}

static void test_file_and_option(void **state)
{
    (void)state;
    char path[] = "/tmp/inferd-canary-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char body[] = "{\"token_ids\":[1],\"stop\":{\"max_tokens\":1}}";
    assert_int_equal(write(fd, body, sizeof body - 1), (ssize_t)(sizeof body - 1));
    close(fd);
    char spec[64];
    snprintf(spec, sizeof spec, "@%s", path);
    Inferd__V1__GenerateRequest *m = parse_ok(spec);
    assert_int_equal(m->token_ids[0], 1);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    unlink(path);
    /* through the option: unset is the default canary; a bad one names the option */
    config_t cfg;
    char err[400];
    char *argv[] = {"inferd", NULL};
    char *env[] = {"DYN_HEALTH_CHECK_PAYLOAD={\"nope\":1}", NULL};
    assert_int_equal(config_load(&cfg, 1, argv, (char *[]){NULL}, err, sizeof err), 0);
    assert_int_equal(canary_payload_load(&cfg, &m, err, sizeof err), 0);
    assert_null(m);
    config_dispose(&cfg);
    assert_int_equal(config_load(&cfg, 1, argv, env, err, sizeof err), 0);
    assert_int_equal(canary_payload_load(&cfg, &m, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "for --health-check-payload: unknown field 'nope'"));
    config_dispose(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_both_spellings),
        cmocka_unit_test(test_errors_name_the_field),
        cmocka_unit_test(test_file_and_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
