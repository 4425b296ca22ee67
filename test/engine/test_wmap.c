/* The weights' mapping and its copy into transparent huge pages in place (wmap.h): the
 * mapping is aligned and file-backed, the copy keeps the address and the bytes, is
 * anonymous, read-only and (where the kernel offers them) in huge pages; a file that shrinks
 * leaves the mapping as it was; --hugepages' modes and their errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine.h"
#include "internal.h"
#include "wmap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_wmap.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* a file of n bytes, byte i = (i * 7 + i / 4096) & 255 (every page differs) */
static const char *pattern_file(const char *name, size_t n)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)((i * 7 + i / 4096) & 255), f);
    assert_int_equal(fclose(f), 0);
    return p;
}

static int has_pattern(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != ((i * 7 + i / 4096) & 255)) return 0;
    return 1;
}

/* The /proc/self/smaps entry holding addr: its header line (perms, path) and the
 * AnonHugePages it reports in kB. */
static void smaps_of(const void *addr, char *head, size_t headlen, long *anon_huge_kb)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    assert_non_null(f);
    char line[512];
    int in = 0;
    *anon_huge_kb = -1;
    head[0] = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2) {
            if (in) break;
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
            if (in) snprintf(head, headlen, "%s", line);
        } else if (in && !strncmp(line, "AnonHugePages:", 14)) {
            *anon_huge_kb = atol(line + 14);
        }
    }
    fclose(f);
    assert_true(head[0] != 0);
}

static void test_thp_mode_text(void **state)
{
    (void)state;
    assert_int_equal(wmap_thp_enabled("always [madvise] never"), 1);
    assert_int_equal(wmap_thp_enabled("[always] madvise never\n"), 1);
    assert_int_equal(wmap_thp_enabled("always madvise [never]"), 0);
    assert_int_equal(wmap_thp_enabled("always madvise never"), 0);
    assert_int_equal(wmap_thp_enabled("[always"), 0);
    assert_int_equal(wmap_thp_enabled("[madvisex] never"), 0);
    assert_int_equal(wmap_thp_enabled(""), 0);
    assert_int_equal(wmap_thp_enabled(NULL), 0);
    char why[256] = "";
    int a = wmap_thp_available(why, sizeof why);
    assert_true(a == 0 || a == 1);
    if (!a) assert_non_null(strstr(why, "transparent_hugepage"));
}

static void test_map_then_copy(void **state)
{
    (void)state;
    size_t n = 5 * WMAP_HUGE + 123; /* not a multiple of the page size */
    const char *p = pattern_file("w.bin", n);
    wmap_t w;
    char err[256], head[512];
    long huge_kb;
    assert_int_equal(wmap_open(&w, p, "", err, sizeof err), 0);
    assert_non_null(w.base);
    assert_int_equal((uintptr_t)w.base % WMAP_HUGE, 0);
    assert_int_equal(w.size, n);
    assert_int_equal(w.len, 6 * WMAP_HUGE);
    assert_true(w.fd >= 0);
    assert_int_equal(w.huge, 0);
    assert_true(has_pattern(w.base, n));
    smaps_of(w.base, head, sizeof head, &huge_kb);
    assert_non_null(strstr(head, "w.bin")); /* file-backed */
    uint8_t *base = w.base;

    assert_int_equal(wmap_hugepages(&w, err, sizeof err), 0);
    assert_ptr_equal(w.base, base); /* same address: pointers into it stay valid */
    assert_int_equal(w.huge, 1);
    assert_int_equal(w.fd, -1);
    assert_true(has_pattern(w.base, n));
    for (size_t i = n; i < w.len; i++) /* the rest of the last huge page reads as zeros */
        assert_int_equal(w.base[i], 0);
    smaps_of(w.base, head, sizeof head, &huge_kb);
    assert_null(strstr(head, "w.bin"));      /* anonymous now */
    assert_non_null(strstr(head, " r--p ")); /* and read-only, as the mapping was */
    char why[256];
    if (wmap_thp_available(why, sizeof why)) {
        /* huge pages were asked for an aligned range of six: the kernel gave some */
        if (huge_kb <= 0) fail_msg("no AnonHugePages after the copy: %s", head);
    }
    /* what the copy recorded is what smaps says (both read right after the copy) */
    size_t want = (size_t)huge_kb * 1024 < w.size ? (size_t)huge_kb * 1024 : w.size;
    assert_int_equal(w.huge_bytes, want);
    assert_int_equal(wmap_huge_bytes(w.base, w.size), want);
    assert_int_equal(wmap_huge_bytes(w.base, 4096), want < 4096 ? want : 4096);
    assert_int_equal(wmap_hugepages(&w, err, sizeof err), 0); /* idempotent */
    assert_ptr_equal(w.base, base);
    wmap_close(&w);
    assert_null(w.base);
    wmap_close(&w); /* twice is harmless */
}

static void test_errors(void **state)
{
    (void)state;
    wmap_t w;
    char err[256], p[128];
    snprintf(p, sizeof p, "%s/missing.bin", tmpdir);
    assert_int_equal(wmap_open(&w, p, "model ", err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "cannot open model "));
    assert_non_null(strstr(err, "missing.bin"));
    assert_null(w.base);
    assert_int_equal(wmap_open(&w, tmpdir, "", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(wmap_open(&w, pattern_file("short.bin", 3), "", err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "truncated"));

    /* the file shrinks between the mapping and the copy: an error, and the mapping (what
     * is left of the file) is as it was */
    const char *q = pattern_file("shrinks.bin", 3 * WMAP_HUGE);
    assert_int_equal(wmap_open(&w, q, "", err, sizeof err), 0);
    uint8_t *base = w.base;
    assert_int_equal(truncate(q, WMAP_HUGE), 0);
    assert_true(wmap_hugepages(&w, err, sizeof err) < 0);
    assert_non_null(strstr(err, "shrank"));
    assert_ptr_equal(w.base, base);
    assert_int_equal(w.huge, 0);
    assert_true(has_pattern(w.base, WMAP_HUGE));
    char head[512];
    long huge_kb;
    smaps_of(w.base, head, sizeof head, &huge_kb);
    assert_non_null(strstr(head, "shrinks.bin")); /* still the file */
    wmap_close(&w);
}

/* model_hugepages over a llama2.c checkpoint: the modes, what they say, the weights' bytes
 * and addresses unchanged. */
static void test_model_modes(void **state)
{
    (void)state;
    model_t m;
    char err[512], note[320], why[256];
    int thp = wmap_thp_available(why, sizeof why);
    assert_int_equal(model_load(&m, TINY_MODEL, 0, err, sizeof err), 0);
    const float *wq = m.v.layers[0].wq.data;
    size_t nq = (size_t)m.v.c.dim * (size_t)m.v.c.dim;
    float *copy = malloc(nq * sizeof(float));
    memcpy(copy, wq, nq * sizeof(float));

    assert_int_equal(model_hugepages(&m, "bogus", note, sizeof note, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "hugepages 'bogus' is not auto, on or off"));
    assert_int_equal(model_hugepages(&m, "off", note, sizeof note, err, sizeof err), 0);
    assert_non_null(strstr(note, "mapped from the file"));
    assert_int_equal(m.map.huge, 0);

    int rc = model_hugepages(&m, "on", note, sizeof note, err, sizeof err);
    if (thp) {
        assert_int_equal(rc, 0);
        assert_int_equal(m.map.huge, 1);
        assert_non_null(strstr(note, "copied into transparent huge pages"));
    } else {
        assert_int_equal(rc, -ENOTSUP);
        assert_non_null(strstr(err, "hugepages on: "));
        assert_int_equal(m.map.huge, 0);
    }
    assert_ptr_equal(m.v.layers[0].wq.data, wq);
    assert_memory_equal(wq, copy, nq * sizeof(float));
    model_dispose(&m);

    assert_int_equal(model_load(&m, TINY_MODEL, 0, err, sizeof err), 0);
    assert_int_equal(model_hugepages(&m, NULL, note, sizeof note, err, sizeof err), 0); /* auto */
    assert_int_equal(m.map.huge, thp);
    if (!thp) assert_non_null(strstr(note, why));
    assert_memory_equal(m.v.layers[0].wq.data, copy, nq * sizeof(float));
    model_dispose(&m);
    free(copy);
}

/* The engine refuses an unknown mode before it loads anything, and reports what it did. */
static void test_engine_mode(void **state)
{
    (void)state;
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = TINY_MODEL;
    cfg.tokenizer_path = TINY_TOKENIZER;
    cfg.threads = 1;
    cfg.hugepages = "sometimes";
    engine_t *e = NULL;
    char err[512];
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "hugepages 'sometimes' is not auto, on or off"));
    cfg.hugepages = "off";
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), 0);
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    assert_string_equal(mi.weights_note, "mapped from the file (hugepages off)");
    engine_free(e);
    cfg.hugepages = "auto";
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), 0);
    engine_model_info(e, &mi);
    char why[256];
    assert_non_null(strstr(mi.weights_note, wmap_thp_available(why, sizeof why)
                                                ? "copied into transparent huge pages"
                                                : "mapped from the file"));
    engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thp_mode_text), cmocka_unit_test(test_map_then_copy),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_model_modes),
        cmocka_unit_test(test_engine_mode),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
