/* The option table: precedence, every kind of invalid value, --help lists every option. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "server/base/config.h"

static int load(config_t *c, char **argv, char **env, char *err)
{
    int argc = 0;
    while (argv && argv[argc])
        argc++;
    static char *none[] = {NULL};
    return config_load(c, argc, argv, env ? env : none, err, 512);
}

static void test_defaults(void **state)
{
    (void)state;
    config_t c;
    char err[512];
    char *argv[] = {"inferd", NULL};
    assert_int_equal(load(&c, argv, NULL, err), 0);
    assert_string_equal(c.listen, "0.0.0.0:50051");
    assert_int_equal(c.system_port, 8081);
    assert_int_equal(c.max_concurrent_streams, 100);
    assert_int_equal(c.max_recv_message_size, 4194304);
    assert_int_equal(c.max_header_list_size, 8192);
    assert_true(c.canary_wait_ns == 10000000000LL);
    assert_true(c.health_check_enabled);
    assert_false(c.tls_allow_plaintext); /* TLS, once configured, is the only way in */
    assert_string_equal(c.source[0], "default");
    assert_string_equal(c.hugepages, "auto");
    assert_string_equal(c.kv_cache_type, "f32");
    config_dispose(&c);
    char *env[] = {"INFERD_HUGEPAGES=off", "INFERD_KV_CACHE_TYPE=f16", NULL};
    assert_int_equal(load(&c, argv, env, err), 0);
    assert_string_equal(c.hugepages, "off");
    assert_string_equal(c.kv_cache_type, "f16");
    config_dispose(&c);
}

static void test_precedence(void **state)
{
    (void)state;
    config_t c;
    char err[512];
    char *env[] = {"DYN_SYSTEM_PORT=9000", "INFERD_MAX_CONCURRENT_STREAMS=7", "DYN_LOG=debug",
                   NULL};
    char *argv0[] = {"inferd", NULL};
    assert_int_equal(load(&c, argv0, env, err), 0);
    assert_int_equal(c.system_port, 9000);
    assert_int_equal(c.max_concurrent_streams, 7);
    assert_string_equal(c.log_spec, "debug");
    config_dispose(&c);
    /* flag beats env; INFERD_* beats the DYN_* alias */
    char *env2[] = {"DYN_SYSTEM_PORT=9000", "INFERD_SYSTEM_PORT=9001", NULL};
    char *argv[] = {"inferd", "--max-concurrent-streams", "9", "--log=warn", NULL};
    assert_int_equal(load(&c, argv, env2, err), 0);
    assert_int_equal(c.system_port, 9001);
    assert_int_equal(c.max_concurrent_streams, 9);
    assert_string_equal(c.log_spec, "warn");
    config_dispose(&c);
    char *env3[] = {"DYN_LOGGING_JSONL=true", NULL};
    assert_int_equal(load(&c, argv0, env3, err), 0);
    assert_string_equal(c.log_format, "jsonl");
    config_dispose(&c);
}

static void expect_invalid(char **argv, char **env, const char *needle)
{
    config_t c;
    char err[512] = "";
    assert_int_equal(load(&c, argv, env, err), -EINVAL);
    if (!strstr(err, needle)) fail_msg("error '%s' does not mention '%s'", err, needle);
    config_dispose(&c);
}

static void test_invalid_values(void **state)
{
    (void)state;
    expect_invalid((char *[]){"inferd", "--system-port", "70000", NULL}, NULL, "--system-port");
    expect_invalid((char *[]){"inferd", "--system-port", "abc", NULL}, NULL, "'abc'");
    expect_invalid((char *[]){"inferd", "--listen", "nohost", NULL}, NULL, "--listen");
    expect_invalid((char *[]){"inferd", "--listen", "1.2.3.4:99999", NULL}, NULL, "--listen");
    expect_invalid((char *[]){"inferd", "--log-format", "xml", NULL}, NULL, "text|jsonl");
    expect_invalid((char *[]){"inferd", "--log", "info,server=loud", NULL}, NULL, "--log");
    expect_invalid((char *[]){"inferd", "--hugepages", "always", NULL}, NULL, "auto|on|off");
    expect_invalid((char *[]){"inferd", "--kv-cache-type", "q8_0", NULL}, NULL, "f32|f16");
    expect_invalid((char *[]){"inferd", "--drain-timeout", "5 parsecs", NULL}, NULL,
                   "--drain-timeout");
    expect_invalid((char *[]){"inferd", "--metrics-prefix", "9bad", NULL}, NULL,
                   "--metrics-prefix");
    expect_invalid((char *[]){"inferd", "--starting-health-status", "maybe", NULL}, NULL,
                   "notready|ready");
    expect_invalid((char *[]){"inferd", "--tls-cert", "/x.pem", NULL}, NULL, "--tls-key");
    expect_invalid((char *[]){"inferd", "--tls-allow-plaintext", NULL}, NULL,
                   "--tls-allow-plaintext");
    expect_invalid((char *[]){"inferd", "--no-such-flag", NULL}, NULL, "unknown option");
    expect_invalid((char *[]){"inferd", "--max-concurrent-streams", NULL}, NULL, "needs a value");
    expect_invalid((char *[]){"inferd", NULL}, (char *[]){"DYN_SYSTEM_PORT=-5", NULL},
                   "DYN_SYSTEM_PORT");
    expect_invalid((char *[]){"inferd", NULL}, (char *[]){"DYN_HEALTH_CHECK_ENABLED=perhaps", NULL},
                   "--health-check-enabled");
    expect_invalid((char *[]){"inferd", NULL}, (char *[]){"DYN_LOGGING_JSONL=2", NULL},
                   "DYN_LOGGING_JSONL");
}

/* The bounds of issue 13: defaults, their variables, and the checks on their values. */
static void test_abuse_bounds(void **state)
{
    (void)state;
    config_t c;
    char err[512];
    char *argv[] = {"inferd", NULL};
    assert_int_equal(load(&c, argv, NULL, err), 0);
    assert_true(c.stream_stall_timeout_ns == 30000000000LL);
    assert_true(c.request_header_timeout_ns == 10000000000LL);
    assert_int_equal(c.max_paused_streams, 16);
    assert_int_equal(c.max_pending_input, 8 << 20);
    assert_int_equal(c.min_body_rate, 1024);
    assert_int_equal(c.max_stream_rate, 10000);
    config_dispose(&c);
    char *env[] = {"INFERD_STREAM_STALL_TIMEOUT=2s",
                   "INFERD_MAX_PAUSED_STREAMS=3",
                   "INFERD_MAX_PENDING_INPUT=5000000",
                   "INFERD_REQUEST_HEADER_TIMEOUT=250ms",
                   "INFERD_MIN_BODY_RATE=0",
                   "INFERD_MAX_STREAM_RATE=0",
                   "INFERD_MAX_CONNECTION_OUTPUT=65536",
                   "INFERD_MAX_PROCESS_OUTPUT=1048576",
                   NULL};
    assert_int_equal(load(&c, argv, env, err), 0);
    assert_true(c.stream_stall_timeout_ns == 2000000000LL);
    assert_true(c.request_header_timeout_ns == 250000000LL);
    assert_int_equal(c.max_paused_streams, 3);
    assert_int_equal(c.max_pending_input, 5000000);
    assert_int_equal(c.min_body_rate, 0);
    assert_int_equal(c.max_stream_rate, 0);
    assert_int_equal(c.max_connection_output, 65536);
    assert_int_equal(c.max_process_output, 1048576);
    config_dispose(&c);
    expect_invalid((char *[]){"inferd", "--max-pending-input", "1000", NULL}, NULL,
                   "--max-recv-message-size");
    expect_invalid((char *[]){"inferd", NULL}, (char *[]){"INFERD_MAX_PENDING_INPUT=2000", NULL},
                   "INFERD_MAX_PENDING_INPUT");
    expect_invalid((char *[]){"inferd", "--max-paused-streams", "0", NULL}, NULL,
                   "--max-paused-streams");
    expect_invalid((char *[]){"inferd", "--stream-stall-timeout", "soon", NULL}, NULL,
                   "--stream-stall-timeout");
    expect_invalid((char *[]){"inferd", "--request-header-timeout", "0", NULL}, NULL,
                   "--request-header-timeout");
    expect_invalid((char *[]){"inferd", "--max-connection-output", "100", NULL}, NULL,
                   "--max-connection-output");
    expect_invalid((char *[]){"inferd", "--max-stream-rate", "-1", NULL}, NULL,
                   "--max-stream-rate");
}

static void test_help_lists_every_option(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print_help(f);
    fclose(f);
    config_t c;
    char err[512];
    char *argv[] = {"inferd", NULL};
    assert_int_equal(load(&c, argv, NULL, err), 0);
    char *pbuf = NULL;
    size_t plen = 0;
    FILE *p = open_memstream(&pbuf, &plen);
    config_print(&c, p);
    fclose(p);
    /* every option --print-config shows is in --help, with a variable and a default */
    int n = 0;
    for (char *line = strtok(pbuf, "\n"); line; line = strtok(NULL, "\n")) {
        char flag[80], needle[90];
        assert_int_equal(sscanf(line, "%79s", flag), 1);
        snprintf(needle, sizeof needle, "  --%s\n", flag);
        if (!strstr(buf, needle)) fail_msg("--help lacks %s", flag);
        n++;
    }
    assert_true(n >= 30);
    assert_non_null(strstr(buf, "DYN_SYSTEM_PORT"));
    assert_non_null(strstr(buf, "DYN_CANARY_WAIT_TIME"));
    assert_non_null(strstr(buf, "default: 8081"));
    free(buf);
    free(pbuf);
    config_dispose(&c);
}

static void test_print_config_sources(void **state)
{
    (void)state;
    config_t c;
    char err[512];
    char *env[] = {"DYN_SYSTEM_PORT=9100", NULL};
    char *argv[] = {"inferd", "--listen", "127.0.0.1:1", NULL};
    assert_int_equal(load(&c, argv, env, err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print(&c, f);
    fclose(f);
    assert_non_null(strstr(buf, "127.0.0.1:1  # flag"));
    assert_non_null(strstr(buf, "9100  # DYN_SYSTEM_PORT"));
    assert_non_null(strstr(buf, "100  # default"));
    free(buf);
    config_dispose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_invalid_values),
        cmocka_unit_test(test_abuse_bounds),
        cmocka_unit_test(test_help_lists_every_option),
        cmocka_unit_test(test_print_config_sources),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
