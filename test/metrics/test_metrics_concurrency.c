/* Updates from several threads sum exactly; series creation and rendering run concurrently
 * with updates (ASan/UBSan and, when built with it, TSan check the memory model). */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"

/* A family the assertions below register and do not keep. */
static metrics_family_t *fam;
/* The family a registration that must succeed made. */
#define OK_FAM(call) (assert_int_equal((call), 0), fam)

#define THREADS 8
#define ITERS 100000

typedef struct {
    metrics_family_t *cf, *gf, *hf;
    metrics_series_t *c, *g, *h;
    int id;
} arg_t;

static void *worker(void *p)
{
    arg_t *a = p;
    for (int i = 0; i < ITERS; i++) {
        metrics_inc(a->c);
        metrics_add(a->c, 0.5);
        metrics_inc(a->g);
        metrics_dec(a->g);
        metrics_add(a->g, 2);
        metrics_observe(a->h, (double)(i % 4)); /* 0,1,2,3 */
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    arg_t base = {0};
    const double b[] = {0, 1, 2};
    base.c = metrics_series(OK_FAM(metrics_counter_new(&fam, r, "c_total", "C.", NULL, 0, NULL, 0)),
                            NULL);
    base.g = metrics_series(OK_FAM(metrics_gauge_new(&fam, r, "g", "G.", NULL, 0, NULL, 0)), NULL);
    base.h = metrics_series(
        OK_FAM(metrics_histogram_new(&fam, r, "h", "H.", NULL, b, 3, 0, NULL, 0)), NULL);
    pthread_t t[THREADS];
    arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = base;
        assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    const double n = (double)THREADS * ITERS;
    assert_true(metrics_value(base.c) == n * 1.5);
    assert_true(metrics_value(base.g) == n * 2);
    assert_int_equal(metrics_histogram_count(base.h), THREADS * ITERS);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(metrics_histogram_bucket(base.h, i), THREADS * ITERS / 4);
    assert_true(metrics_histogram_sum(base.h) == n / 4 * (0 + 1 + 2 + 3));
    metrics_registry_free(r);
}

typedef struct {
    metrics_family_t *f;
    metrics_series_t **got;
    int id;
} create_arg_t;

#define SERIES 2000

/* Every thread asks for the same label values: all must get the same handles. */
static void *creator(void *p)
{
    create_arg_t *a = p;
    char v[32];
    for (int i = 0; i < SERIES; i++) {
        int k = (i + a->id * 97) % SERIES;
        snprintf(v, sizeof v, "series-%d", k);
        const char *const vals[] = {v};
        metrics_series_t *s = metrics_series(a->f, vals);
        a->got[k] = s;
        metrics_inc(s);
    }
    return NULL;
}

typedef struct {
    metrics_registry_t *r;
    atomic_int stop;
    int renders;
} render_arg_t;

static void *renderer(void *p)
{
    render_arg_t *a = p;
    while (!atomic_load(&a->stop)) {
        char *out;
        size_t len;
        if (metrics_render(a->r, a->renders % 2 ? "application/openmetrics-text" : NULL, &out, &len,
                           NULL) == 0)
            free(out);
        a->renders++;
    }
    return NULL;
}

static void test_concurrent_create_and_render(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    const char *const ln[] = {"k", NULL};
    metrics_family_t *f = NULL;
    assert_int_equal(metrics_counter_new(&f, r, "c_total", "C.", ln, 0, NULL, 0), 0);
    pthread_t t[4], rt;
    create_arg_t args[4];
    render_arg_t ra = {.r = r};
    assert_int_equal(pthread_create(&rt, NULL, renderer, &ra), 0);
    for (int i = 0; i < 4; i++) {
        args[i].f = f;
        args[i].id = i;
        args[i].got = calloc(SERIES, sizeof(metrics_series_t *));
        assert_int_equal(pthread_create(&t[i], NULL, creator, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    atomic_store(&ra.stop, 1);
    pthread_join(rt, NULL);
    for (int k = 0; k < SERIES; k++) {
        assert_non_null(args[0].got[k]);
        for (int i = 1; i < 4; i++)
            assert_ptr_equal(args[i].got[k], args[0].got[k]);
        assert_true(metrics_value(args[0].got[k]) == 4);
    }
    /* the final render lists each series once */
    char *out;
    size_t len;
    assert_int_equal(metrics_render(r, NULL, &out, &len, NULL), 0);
    size_t lines = 0;
    for (const char *p = out; (p = strstr(p, "c_total{k=")); p++)
        lines++;
    assert_int_equal(lines, SERIES);
    free(out);
    for (int i = 0; i < 4; i++)
        free(args[i].got);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_concurrent_create_and_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
