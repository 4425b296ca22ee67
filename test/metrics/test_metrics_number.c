/* Number formatting: what the exposition writes reads back as the same value. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics/number.h"

static void test_u64(void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal(metrics_fmt_u64(buf, 0), 1);
    assert_string_equal(buf, "0");
    assert_int_equal(metrics_fmt_u64(buf, 1234567890), 10);
    assert_string_equal(buf, "1234567890");
    assert_int_equal(metrics_fmt_u64(buf, UINT64_MAX), 20);
    assert_string_equal(buf, "18446744073709551615");
}

static void test_double_special_and_integers(void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal(metrics_fmt_double(buf, NAN), 3);
    assert_string_equal(buf, "NaN");
    metrics_fmt_double(buf, INFINITY);
    assert_string_equal(buf, "+Inf");
    metrics_fmt_double(buf, -INFINITY);
    assert_string_equal(buf, "-Inf");
    metrics_fmt_double(buf, 42.0);
    assert_string_equal(buf, "42");
    metrics_fmt_double(buf, -7.0);
    assert_string_equal(buf, "-7");
    metrics_fmt_double(buf, 0.0);
    assert_string_equal(buf, "0");
    /* 2^53 and beyond are no longer exact integers: printed through %g, still round-trip */
    metrics_fmt_double(buf, 9007199254740992.0 * 4);
    assert_true(strtod(buf, NULL) == 9007199254740992.0 * 4);
}

static void test_double_round_trips_shortest(void **state)
{
    (void)state;
    char buf[32];
    metrics_fmt_double(buf, 0.25);
    assert_string_equal(buf, "0.25");
    metrics_fmt_double(buf, 0.1);
    assert_string_equal(buf, "0.1"); /* %.15g suffices: not 0.10000000000000001 */
    const double vals[] = {1.0 / 3, 2.0 / 3, 1e-300, 1.7976931348623157e308, 5e-324, 123.456e7};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        size_t n = metrics_fmt_double(buf, vals[i]);
        assert_int_equal(n, strlen(buf));
        assert_true(strtod(buf, NULL) == vals[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_u64),
        cmocka_unit_test(test_double_special_and_integers),
        cmocka_unit_test(test_double_round_trips_shortest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
