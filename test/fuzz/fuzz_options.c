/*
 * fuzz_options - the option parser: flags and environment through config_load(), then what
 * main() checks before it builds the server (the --log spec through log_configure, the
 * starting health status), and --print-config's printing of whatever was accepted.
 *
 * Input: words separated by NUL bytes (argv cannot hold a NUL); a word starting with byte
 * 0x01 is an environment entry NAME=VALUE (the byte dropped), every other word the next
 * argument after "inferd". At most 64 words.
 * Promises checked beyond "no crash": a refusal is -EINVAL with a message;
 * an accepted configuration has every string option set, a listen address that splits into
 * host and port, a source for every option, and prints; config_dispose() frees everything
 * (LeakSanitizer), on error too, as main() calls it.
 */
#include "fuzz.h"

#include <errno.h>

#include "health/health.h"
#include "server/base/config.h"
#include "server/base/log.h"

#define MAX_WORDS 64

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    devnull = fopen("/dev/null", "w");
    FUZZ_CHECK(devnull, "cannot open /dev/null");
    char err[256];
    FUZZ_CHECK(log_configure("off", 0, err, sizeof err) == 0, "%s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = fuzz_cstr(data, size);
    char *argv[MAX_WORDS + 2] = {"inferd"}, *envp[MAX_WORDS + 1];
    int argc = 1, envc = 0;
    for (size_t at = 0; at <= size && argc + envc <= MAX_WORDS;) {
        char *w = copy + at;
        size_t n = strlen(w);
        if (w[0] == 1)
            envp[envc++] = w + 1;
        else if (n || at < size)
            argv[argc++] = w;
        at += n + 1;
    }
    argv[argc] = NULL;
    envp[envc] = NULL;

    config_t cfg;
    char err[512] = "";
    int rc = config_load(&cfg, argc, argv, envp, err, sizeof err);
    if (rc) {
        FUZZ_CHECK(rc == -EINVAL, "config_load returned %d", rc);
        FUZZ_CHECK(err[0], "config_load refused without a message");
    } else {
        FUZZ_CHECK(cfg.listen && cfg.system_host && cfg.health_path && cfg.live_path &&
                       cfg.starting_health_status && cfg.log_spec && cfg.log_format &&
                       cfg.metrics_prefix && cfg.device && cfg.dtype,
                   "an accepted configuration lacks a string option");
        char host[128];
        int port;
        FUZZ_CHECK(config_split_hostport(cfg.listen, host, sizeof host, &port) == 0,
                   "--listen '%s' was accepted but does not split", cfg.listen);
        for (size_t i = 0; i < sizeof cfg.source / sizeof cfg.source[0] && cfg.source[i]; i++)
            FUZZ_CHECK(cfg.source[i][0], "option %zu has an empty source", i);
        config_print(&cfg, devnull);
        /* main's next checks: the --log spec (a refusal names it), the starting status */
        err[0] = 0;
        rc = log_configure(cfg.log_spec, !strcmp(cfg.log_format, "jsonl"), err, sizeof err);
        FUZZ_CHECK(rc == 0 || (rc == -EINVAL && err[0]), "log_configure returned %d", rc);
        health_status_t st;
        (void)health_parse_starting_status(cfg.starting_health_status, &st);
        log_configure("off", 0, err, sizeof err);
    }
    config_dispose(&cfg);
    free(copy);
    return 0;
}
