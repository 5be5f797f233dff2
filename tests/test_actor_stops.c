/* test_actor_stops.c - the stop strings an actor takes from the learner's SamplingParams
 * (actor/session.h): a usable list (at most 8 strings of 1..64 bytes of valid UTF-8) is
 * accepted, anything else makes the whole SamplingParams unusable (the actor keeps its
 * previous parameters). The cut itself is tests/test_stops.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "session.h"

static void test_stop_strings_valid(void **state)
{
    (void)state;
    Cohort__V1__SamplingParams sp = COHORT__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = 1.0;
    sp.top_p = 1;
    sp.max_new_tokens = 16;
    assert_true(session_sampling_valid(&sp)); /* none */
    char *good[8] = {"+", "\n\nQ:", "\xE2\x82\xAC", "###", "a", "b", "c", "d"};
    sp.stop = good;
    sp.n_stop = 8;
    assert_true(session_sampling_valid(&sp));

    char long65[66];
    memset(long65, 'x', 65);
    long65[65] = '\0';
    char *bad_sets[][2] = {
        {"+", ""},              /* empty */
        {long65, "+"},          /* 65 bytes */
        {"ok\xC3", "+"},        /* cut-short UTF-8 */
        {"+", "\xED\xA0\x80"},  /* a surrogate */
    };
    for (size_t i = 0; i < sizeof bad_sets / sizeof bad_sets[0]; i++) {
        Cohort__V1__SamplingParams bad = sp;
        bad.stop = bad_sets[i];
        bad.n_stop = 2;
        if (session_sampling_valid(&bad))
            fail_msg("stop set %zu was accepted", i);
    }
    char *nine[9] = {"1", "2", "3", "4", "5", "6", "7", "8", "9"};
    Cohort__V1__SamplingParams bad = sp;
    bad.stop = nine;
    bad.n_stop = 9;
    assert_false(session_sampling_valid(&bad));
    bad.n_stop = 8;
    assert_true(session_sampling_valid(&bad));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_strings_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
