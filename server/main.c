/* inferd: the binary. Configuration errors exit 2 with one line naming the option. */
#include <errno.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "server/base/config.h"
#include "inference.h"
#include "server/base/log.h"
#include "prober.h"
#include "server_run.h"

#ifndef INFERD_VERSION
#define INFERD_VERSION "0.1.0"
#endif

int main(int argc, char **argv)
{
    config_t cfg;
    char err[512] = "";
    if (config_load(&cfg, argc, argv, NULL, err, sizeof err)) {
        fprintf(stderr, "inferd: %s\n", err);
        config_dispose(&cfg);
        return 2;
    }
    if (cfg.help) {
        config_print_help(stdout);
        config_dispose(&cfg);
        return 0;
    }
    if (cfg.version) {
        printf("inferd %s\n", INFERD_VERSION);
        config_dispose(&cfg);
        return 0;
    }
    if (cfg.print_config) {
        config_print(&cfg, stdout);
        config_dispose(&cfg);
        return 0;
    }
    if (log_configure(cfg.log_spec, !strcmp(cfg.log_format, "jsonl"), err, sizeof err)) {
        fprintf(stderr, "inferd: invalid value '%s' for --log: %s\n", cfg.log_spec, err);
        config_dispose(&cfg);
        return 2;
    }
    if (prober_check_config(&cfg, err, sizeof err)) {
        fprintf(stderr, "inferd: %s\n", err);
        config_dispose(&cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    server_t *s = server_new(&cfg, err, sizeof err);
    if (!s) {
        fprintf(stderr, "inferd: %s\n", err);
        config_dispose(&cfg);
        return 1;
    }
    inference_t *inf = inference_new(s, err, sizeof err);
    if (!inf) {
        fprintf(stderr, "inferd: %s\n", err);
        server_free(s);
        config_dispose(&cfg);
        return 1;
    }
    prober_t *pr = NULL;
    int prc = prober_new(&pr, s, err, sizeof err);
    if (!prc) prc = prober_add(pr, "generate", inf, err, sizeof err);
    if (prc) {
        fprintf(stderr, "inferd: %s\n", err);
        prober_free(pr);
        inference_free(inf);
        server_free(s);
        config_dispose(&cfg);
        return prc == -EINVAL ? 2 : 1;
    }
    int rc = server_run(s);
    server_close_connections(s); /* cancels what is still in the engine */
    prober_free(pr);
    inference_free(inf);
    server_free(s);
    log_flush();
    config_dispose(&cfg);
    return rc;
}
