/* Stop strings over streamed text: matches across pieces, the text is cut before the match,
 * and no more than longest - 1 bytes are ever held back (and only while they could start a
 * match). Checked against a brute-force search on random streams. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_validate(void **state)
{
    (void)state;
    char err[256];
    const char *many[STOP_MAX_STRINGS + 1];
    for (int i = 0; i <= STOP_MAX_STRINGS; i++)
        many[i] = "x";
    assert_int_equal(stop_validate(many, STOP_MAX_STRINGS, err, sizeof err), 0);
    assert_int_equal(stop_validate(many, STOP_MAX_STRINGS + 1, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "at most 16"));
    const char *empty[] = {"ok", ""};
    assert_int_equal(stop_validate(empty, 2, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "stop string 1 is empty"));
    char big[STOP_MAX_BYTES + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const char *longs[] = {big};
    assert_int_equal(stop_validate(longs, 1, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "at most 256"));
    const char *cont[] = {"\x80x"};
    assert_int_equal(stop_validate(cont, 1, err, sizeof err), -EINVAL);
    const char *null[] = {NULL};
    assert_int_equal(stop_validate(null, 1, err, sizeof err), -EINVAL);
}

static void test_across_pieces(void **state)
{
    (void)state;
    stop_t s;
    char err[256], out[600];
    const char *stops[] = {"STOP", "\n\nUser:"};
    assert_int_equal(stop_init(&s, stops, 2, err, sizeof err), 0);
    assert_int_equal(s.longest, 7);
    size_t k = stop_feed(&s, "Hel", 3, out, sizeof out);
    assert_int_equal(k, 3);
    k = stop_feed(&s, "lo ST", 5, out, sizeof out);
    assert_int_equal(k, 3); /* "ST" held: it may start STOP */
    assert_memory_equal(out, "lo ", 3);
    assert_int_equal(s.nheld, 2);
    k = stop_feed(&s, "OP now", 6, out, sizeof out);
    assert_int_equal(k, 0);
    assert_true(s.hit);
    assert_int_equal(stop_feed(&s, "more", 4, out, sizeof out), 0);
    stop_dispose(&s);
    /* a held prefix that turns out not to match is released at once */
    assert_int_equal(stop_init(&s, stops, 2, err, sizeof err), 0);
    k = stop_feed(&s, "a\n\nUs", 5, out, sizeof out);
    assert_int_equal(k, 1);
    k = stop_feed(&s, "ual", 3, out, sizeof out);
    assert_int_equal(k, 7);
    assert_memory_equal(out, "\n\nUsual", 7);
    assert_int_equal(s.nheld, 0);
    /* end of generation: what is held comes out */
    k = stop_feed(&s, "xST", 3, out, sizeof out);
    assert_int_equal(k, 1);
    assert_int_equal(stop_flush(&s, out, sizeof out), 2);
    assert_memory_equal(out, "ST", 2);
    stop_dispose(&s);
    /* no stop strings: everything passes */
    assert_int_equal(stop_init(&s, NULL, 0, err, sizeof err), 0);
    assert_int_equal(stop_feed(&s, "abc", 3, out, sizeof out), 3);
    stop_dispose(&s);
}

/* random streams over a small alphabet against a brute-force search */
static void test_random_streams(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 1234);
    for (int iter = 0; iter < 2000; iter++) {
        char stops_buf[3][8];
        const char *stops[3];
        int ns = 1 + (int)(rng_next(&r) % 3), longest = 0;
        for (int i = 0; i < ns; i++) {
            int len = 1 + (int)(rng_next(&r) % 5);
            for (int j = 0; j < len; j++)
                stops_buf[i][j] = (char)('a' + rng_next(&r) % 3);
            stops_buf[i][len] = 0;
            stops[i] = stops_buf[i];
            if (len > longest) longest = len;
        }
        char text[80];
        int n = (int)(rng_next(&r) % 60);
        for (int j = 0; j < n; j++)
            text[j] = (char)('a' + rng_next(&r) % 4);
        text[n] = 0;
        /* expected: generation stops where a stop string is first complete and the text is
         * cut where that string starts */
        int first = n, end = 1 << 30;
        for (int i = 0; i < ns; i++) {
            char *h = strstr(text, stops[i]);
            if (!h) continue;
            int at = (int)(h - text), e = at + (int)strlen(stops[i]);
            if (e < end || (e == end && at < first)) first = at, end = e;
        }
        stop_t s;
        char err[128], got[200], out[400];
        assert_int_equal(stop_init(&s, stops, (size_t)ns, err, sizeof err), 0);
        int w = 0, pos = 0;
        while (pos < n && !s.hit) {
            int take = 1 + (int)(rng_next(&r) % 6);
            if (take > n - pos) take = n - pos;
            size_t k = stop_feed(&s, text + pos, (size_t)take, out, sizeof out);
            memcpy(got + w, out, k);
            w += (int)k;
            pos += take;
            assert_true(s.nheld <= longest - 1);
            /* what is held is always a proper prefix of some stop string */
            if (s.nheld) {
                bool prefix = false;
                for (int i = 0; i < ns; i++)
                    prefix |= (int)strlen(stops[i]) > s.nheld &&
                              !memcmp(stops[i], s.held, (size_t)s.nheld);
                assert_true(prefix);
            }
        }
        if (!s.hit) w += (int)stop_flush(&s, got + w, sizeof got - (size_t)w);
        if (s.hit != (first < n) || w != first)
            fprintf(stderr, "text '%s' stops '%s' '%s' '%s' (%d) got %d '%.*s'\n", text, stops[0],
                    ns > 1 ? stops[1] : "", ns > 2 ? stops[2] : "", ns, w, w, got);
        assert_int_equal(s.hit, first < n);
        assert_int_equal(w, first);
        assert_memory_equal(got, text, (size_t)first);
        stop_dispose(&s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_across_pieces),
        cmocka_unit_test(test_random_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
