/* The standard process_* collector, read from /proc/self at scrape time (a few small reads of
 * in-memory files: microseconds, no disk I/O). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics_internal.h"

typedef struct {
    metrics_series_t *cpu, *rss, *vsize, *open_fds, *max_fds, *start_time;
    long ticks, page_size;
} process_t;

/* Reads a small /proc file into buf (NUL-terminated). Returns bytes read or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

/* /proc/self/stat fields 14 (utime), 15 (stime), 22 (starttime), 23 (vsize), 24 (rss).
 * Field 2 (comm) may hold spaces and parentheses: parse from the last ')'. */
typedef struct {
    unsigned long long utime, stime, starttime, vsize;
    long long rss;
} stat_t;

static int read_stat(stat_t *st)
{
    char buf[1024];
    if (read_small("/proc/self/stat", buf, sizeof buf) <= 0) return -1;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    /* after ") " comes field 3 (state) */
    int n = sscanf(p + 1,
                   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                   "%*d %llu %llu %lld",
                   &st->utime, &st->stime, &st->starttime, &st->vsize, &st->rss);
    return n == 5 ? 0 : -1;
}

static double boot_time(void)
{
    char buf[8192];
    if (read_small("/proc/stat", buf, sizeof buf) <= 0) return 0;
    const char *p = strstr(buf, "\nbtime ");
    return p ? strtod(p + 7, NULL) : 0;
}

static double count_fds(void)
{
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return 0;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return 0;
    }
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (atoi(e->d_name) == dfd) /* our own directory handle */
            continue;
        n++;
    }
    closedir(d);
    return n;
}

static void collect(void *arg)
{
    process_t *p = arg;
    stat_t st;
    if (read_stat(&st) == 0) {
        metrics_set(p->cpu, (double)(st.utime + st.stime) / (double)p->ticks);
        metrics_set(p->vsize, (double)st.vsize);
        metrics_set(p->rss, (double)st.rss * (double)p->page_size);
    }
    metrics_set(p->open_fds, count_fds());
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        metrics_set(p->max_fds,
                    rl.rlim_cur == RLIM_INFINITY ? (double)INT64_MAX : (double)rl.rlim_cur);
}

int metrics_process_collector_add(metrics_registry_t *r)
{
    if (!r) return -EINVAL;
    if (r->process) return -EEXIST;
    process_t *p = calloc(1, sizeof *p);
    if (!p) return -ENOMEM;
    p->ticks = sysconf(_SC_CLK_TCK);
    if (p->ticks <= 0) p->ticks = 100;
    p->page_size = sysconf(_SC_PAGESIZE);
    if (p->page_size <= 0) p->page_size = 4096;

    const unsigned np = METRICS_NO_PREFIX;
    metrics_family_t *f;
    int err;
#define REG(field, ctor_and_args)                                                                  \
    do {                                                                                           \
        if ((err = ctor_and_args)) goto fail;                                                      \
        if (!(p->field = metrics_series(f, NULL))) {                                               \
            err = -ENOMEM;                                                                         \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
    REG(cpu,
        metrics_counter_new(&f, r, "process_cpu_seconds_total",
                            "Total user and system CPU time spent in seconds.", NULL, np, NULL, 0));
    REG(open_fds, metrics_gauge_new(&f, r, "process_open_fds", "Number of open file descriptors.",
                                    NULL, np, NULL, 0));
    REG(max_fds, metrics_gauge_new(&f, r, "process_max_fds",
                                   "Maximum number of open file descriptors.", NULL, np, NULL, 0));
    REG(vsize, metrics_gauge_new(&f, r, "process_virtual_memory_bytes",
                                 "Virtual memory size in bytes.", NULL, np, NULL, 0));
    REG(rss, metrics_gauge_new(&f, r, "process_resident_memory_bytes",
                               "Resident memory size in bytes.", NULL, np, NULL, 0));
    REG(start_time, metrics_gauge_new(&f, r, "process_start_time_seconds",
                                      "Start time of the process since unix epoch in seconds.",
                                      NULL, np, NULL, 0));
#undef REG

    stat_t st;
    if (read_stat(&st) == 0)
        metrics_set(p->start_time, boot_time() + (double)st.starttime / (double)p->ticks);
    err = metrics_add_collector(r, collect, p);
    if (err) goto fail;
    r->process = p;
    collect(p);
    return 0;

fail:
    /* Families already registered stay (the registry owns them) but read 0. */
    free(p);
    return err;
}
