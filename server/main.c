/* inferd: the binary. Configuration errors exit 2 with one line naming the option. */
#include <errno.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "server/app.h"
#include "server/base/config.h"
#include "server/base/log.h"

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
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads(); /* before the event base: engine and health wake it from threads */
    app_t *app;
    int rc = app_new(&app, &cfg, err, sizeof err);
    if (rc) {
        fprintf(stderr, "inferd: %s\n", err);
        log_flush();
        config_dispose(&cfg);
        return rc == -EINVAL ? 2 : 1;
    }
    int status = app_run(app);
    app_free(app);
    log_flush();
    config_dispose(&cfg);
    return status;
}
