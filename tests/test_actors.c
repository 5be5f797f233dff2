/* test_actors.c - the learner's registry of actors (learner/actors.c).
 *
 * Registration (ids non-zero and distinct, the default name, every refusal), heartbeats
 * (unknown ids, out-of-range fields, what a heartbeat updates), the sweep of silent actors
 * (exactly those silent for more than dead_after_ms go, their ids are reported, the rest keep
 * their order), the per-actor group counters and the two lookups.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

static actors *make(int max, uint64_t seed)
{
    actors *a = NULL;
    coh_err err;
    assert_int_equal(actors_create(max, seed, &a, &err), COH_OK);
    assert_non_null(a);
    return a;
}

static uint64_t reg(actors *a, const char *name, uint64_t now)
{
    uint64_t id = 0;
    coh_err err;
    assert_int_equal(actors_register(a, name, "ipv4:127.0.0.1:1", 2, now, &id, &err), ACTORS_OK);
    assert_true(id != 0);
    return id;
}

static void test_create_errors(void **state)
{
    (void)state;
    coh_err err;
    actors *a = (actors *)1;
    assert_int_equal(actors_create(0, 1, &a, &err), COH_EINVAL);
    assert_null(a);
    HAS(err.msg, "max_actors");
    a = (actors *)1;
    assert_int_equal(actors_create(65537, 1, &a, &err), COH_EINVAL);
    assert_null(a);
    a = make(65536, 1);
    assert_int_equal(actors_count(a), 0);
    actors_destroy(a);
    actors_destroy(NULL);
    assert_int_equal(actors_count(NULL), 0);
}

static void test_register(void **state)
{
    (void)state;
    actors *a = make(64, 42);
    coh_err err;
    uint64_t ids[64];
    for (int i = 0; i < 64; i++) {
        char name[32];
        snprintf(name, sizeof name, "a%d", i);
        ids[i] = 0;
        assert_int_equal(actors_register(a, name, NULL, i, 1000 + (uint64_t)i, &ids[i], &err),
                         ACTORS_OK);
        assert_true(ids[i] != 0);
        for (int j = 0; j < i; j++)
            assert_true(ids[j] != ids[i]);
        assert_int_equal(actors_check(a, ids[i]), ACTORS_OK);
    }
    assert_int_equal(actors_count(a), 64);

    /* the limit */
    uint64_t id = 77;
    assert_int_equal(actors_register(a, "one-too-many", NULL, 1, 5000, &id, &err), ACTORS_FULL);
    assert_int_equal(err.code, COH_EFULL);
    HAS(err.msg, "64 actors");
    assert_int_equal((long)id, 77); /* untouched */
    assert_int_equal(actors_count(a), 64);

    /* what was recorded */
    actor_info info;
    assert_int_equal(actors_at(a, 5, &info), COH_OK);
    assert_true(info.id == ids[5]);
    assert_string_equal(info.name, "a5");
    assert_string_equal(info.peer, "");
    assert_int_equal(info.threads, 5);
    assert_int_equal((long)info.registered_ms, 1005);
    assert_int_equal((long)info.last_heard_ms, 1005);
    assert_int_equal((long)info.held_version, -1);
    assert_true(info.tokens_per_s == 0.0);
    assert_int_equal((long)info.completions, 0);
    assert_int_equal((long)info.accepted, 0);
    assert_int_equal((long)info.rejected, 0);
    actors_destroy(a);

    /* the same seed gives the same ids, another seed other ones */
    actors *b = make(4, 42), *c = make(4, 43);
    uint64_t bid = reg(b, "x", 0), cid = reg(c, "x", 0);
    assert_true(bid == ids[0]);
    assert_true(cid != ids[0]);
    actors_destroy(b);
    actors_destroy(c);
}

static void test_register_fields(void **state)
{
    (void)state;
    actors *a = make(4, 7);
    coh_err err;
    uint64_t id = 0;
    actor_info info;

    /* "" becomes "actor", NULL too; the peer is kept */
    assert_int_equal(actors_register(a, "", "ipv4:10.0.0.1:5", 0, 10, &id, &err), ACTORS_OK);
    assert_int_equal(actors_get(a, id, &info), ACTORS_OK);
    assert_string_equal(info.name, "actor");
    assert_string_equal(info.peer, "ipv4:10.0.0.1:5");
    assert_int_equal(info.threads, 0);
    assert_int_equal(actors_register(a, NULL, NULL, 1, 10, &id, &err), ACTORS_OK);
    assert_int_equal(actors_get(a, id, &info), ACTORS_OK);
    assert_string_equal(info.name, "actor");

    /* 128 bytes are fine, 129 are not */
    char name[130];
    memset(name, 'n', 128);
    name[128] = 0;
    assert_int_equal(actors_register(a, name, NULL, 1, 10, &id, &err), ACTORS_OK);
    assert_int_equal(actors_get(a, id, &info), ACTORS_OK);
    assert_int_equal((int)strlen(info.name), 128);
    assert_memory_equal(info.name, name, 128);
    name[128] = 'n';
    name[129] = 0;
    id = 99;
    assert_int_equal(actors_register(a, name, NULL, 1, 10, &id, &err), ACTORS_BAD_REQUEST);
    assert_int_equal(err.code, COH_EINVAL);
    HAS(err.msg, "129 bytes");
    assert_int_equal((long)id, 99);
    assert_int_equal(actors_count(a), 3);

    /* threads < 0 */
    assert_int_equal(actors_register(a, "t", NULL, -1, 10, &id, &err), ACTORS_BAD_REQUEST);
    HAS(err.msg, "threads");
    HAS(err.msg, "-1");
    assert_int_equal(actors_count(a), 3);

    /* a refused request does not use up the last slot */
    assert_int_equal(actors_register(a, "last", NULL, 3, 10, &id, &err), ACTORS_OK);
    assert_int_equal(actors_count(a), 4);
    /* a bad request is reported as bad even when full */
    assert_int_equal(actors_register(a, "t", NULL, -2, 10, &id, &err), ACTORS_BAD_REQUEST);
    assert_int_equal(actors_register(a, "t", NULL, 2, 10, &id, &err), ACTORS_FULL);
    actors_destroy(a);
}

static void test_heartbeat(void **state)
{
    (void)state;
    actors *a = make(4, 9);
    coh_err err;
    uint64_t x = reg(a, "x", 100), y = reg(a, "y", 100);
    uint64_t unknown = x ^ y ^ 1;
    if (unknown == 0 || unknown == x || unknown == y)
        unknown = x + y + 3;
    assert_int_equal(actors_heartbeat(a, unknown, 0, 1.0, 0, 200, &err), ACTORS_UNKNOWN);
    assert_int_equal(err.code, COH_ENOTFOUND);
    HAS(err.msg, "register again");
    assert_int_equal(actors_check(a, unknown), ACTORS_UNKNOWN);
    assert_int_equal(actors_heartbeat(a, 0, 0, 1.0, 0, 200, &err), ACTORS_UNKNOWN);

    /* a good heartbeat updates exactly x */
    assert_int_equal(actors_heartbeat(a, x, 3, 125.5, 17, 250, &err), ACTORS_OK);
    actor_info info;
    assert_int_equal(actors_get(a, x, &info), ACTORS_OK);
    assert_int_equal((long)info.held_version, 3);
    assert_true(info.tokens_per_s == 125.5);
    assert_int_equal((long)info.completions, 17);
    assert_int_equal((long)info.last_heard_ms, 250);
    assert_int_equal((long)info.registered_ms, 100);
    assert_int_equal(actors_get(a, y, &info), ACTORS_OK);
    assert_int_equal((long)info.held_version, -1);
    assert_int_equal((long)info.last_heard_ms, 100);

    /* refused heartbeats change nothing, not even the time last heard */
    assert_int_equal(actors_heartbeat(a, x, 4, 1.0, -1, 300, &err), ACTORS_BAD_REQUEST);
    assert_int_equal(err.code, COH_EINVAL);
    HAS(err.msg, "completions");
    assert_int_equal(actors_heartbeat(a, x, 4, NAN, 20, 300, &err), ACTORS_BAD_REQUEST);
    HAS(err.msg, "tokens_per_s");
    assert_int_equal(actors_heartbeat(a, x, 4, INFINITY, 20, 300, &err), ACTORS_BAD_REQUEST);
    assert_int_equal(actors_heartbeat(a, x, 4, -0.5, 20, 300, &err), ACTORS_BAD_REQUEST);
    assert_int_equal(actors_heartbeat(a, x, -2, 1.0, 20, 300, &err), ACTORS_BAD_REQUEST);
    HAS(err.msg, "held_version");
    assert_int_equal(actors_get(a, x, &info), ACTORS_OK);
    assert_int_equal((long)info.held_version, 3);
    assert_true(info.tokens_per_s == 125.5);
    assert_int_equal((long)info.completions, 17);
    assert_int_equal((long)info.last_heard_ms, 250);

    /* -1 (nothing held yet) and 0 tokens/s are in range */
    assert_int_equal(actors_heartbeat(a, y, -1, 0.0, 0, 260, &err), ACTORS_OK);
    assert_int_equal(actors_get(a, y, &info), ACTORS_OK);
    assert_int_equal((long)info.last_heard_ms, 260);
    actors_destroy(a);
}

static void test_sweep(void **state)
{
    (void)state;
    actors *a = make(8, 5);
    coh_err err;
    /* last heard: a 1000, b 1500, c 2000, d 1500 (registered at 900, heartbeat at 1500), e 2600 */
    uint64_t ida = reg(a, "a", 1000), idb = reg(a, "b", 1500), idc = reg(a, "c", 2000);
    uint64_t idd = reg(a, "d", 900), ide = reg(a, "e", 2600);
    assert_int_equal(actors_heartbeat(a, idd, 1, 1.0, 1, 1500, &err), ACTORS_OK);

    uint64_t dead[8] = {0};
    /* at 2500 with dead_after 1000: a is silent 1500 (> 1000, dead), b and d 1000 exactly (not
     * more: alive), c 500, e heard in the "future" (clock skew: alive) */
    assert_int_equal(actors_sweep(a, 2500, 1000, dead, 8), 1);
    assert_true(dead[0] == ida);
    assert_int_equal(actors_count(a), 4);
    assert_int_equal(actors_check(a, ida), ACTORS_UNKNOWN);
    actor_info info;
    assert_int_equal(actors_get(a, ida, &info), ACTORS_UNKNOWN);
    uint64_t order1[] = {idb, idc, idd, ide};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(actors_at(a, i, &info), COH_OK);
        assert_true(info.id == order1[i]);
    }

    /* nothing more to sweep at the same time */
    assert_int_equal(actors_sweep(a, 2500, 1000, dead, 8), 0);

    /* at 2501: b and d go (in registration order), c and e stay in theirs */
    memset(dead, 0, sizeof dead);
    assert_int_equal(actors_sweep(a, 2501, 1000, dead, 8), 2);
    assert_true(dead[0] == idb);
    assert_true(dead[1] == idd);
    assert_true(dead[2] == 0);
    assert_int_equal(actors_count(a), 2);
    assert_int_equal(actors_at(a, 0, &info), COH_OK);
    assert_true(info.id == idc);
    assert_string_equal(info.name, "c");
    assert_int_equal(actors_at(a, 1, &info), COH_OK);
    assert_true(info.id == ide);
    assert_string_equal(info.name, "e");
    assert_int_equal(actors_at(a, 2, &info), COH_EINVAL);

    /* a heartbeat after being swept: unknown */
    assert_int_equal(actors_heartbeat(a, idb, 1, 1.0, 1, 2502, &err), ACTORS_UNKNOWN);

    /* more dead than room: all removed, only max reported */
    uint64_t f = reg(a, "f", 2700), g = reg(a, "g", 2700);
    (void)f;
    (void)g;
    assert_int_equal(actors_count(a), 4);
    memset(dead, 0, sizeof dead);
    assert_int_equal(actors_sweep(a, 10000, 100, dead, 2), 4);
    assert_true(dead[0] == idc);
    assert_true(dead[1] == ide);
    assert_true(dead[2] == 0);
    assert_int_equal(actors_count(a), 0);

    /* dead may be NULL */
    uint64_t h = reg(a, "h", 0);
    assert_int_equal(actors_sweep(a, 10, 5, NULL, 0), 1);
    assert_int_equal(actors_check(a, h), ACTORS_UNKNOWN);

    /* freed slots can be registered again, with fresh ids */
    for (int i = 0; i < 8; i++) {
        uint64_t id = reg(a, "again", 20000);
        assert_true(id != ida && id != idb && id != idc && id != idd && id != ide);
    }
    assert_int_equal(actors_count(a), 8);
    actors_destroy(a);
}

static void test_note_group_and_lookups(void **state)
{
    (void)state;
    actors *a = make(4, 11);
    uint64_t x = reg(a, "x", 0), y = reg(a, "y", 0);
    actors_note_group(a, x, 1);
    actors_note_group(a, x, 1);
    actors_note_group(a, x, 0);
    actors_note_group(a, y, 0);
    actors_note_group(a, x ^ y ^ 0x55, 1); /* unknown: ignored */
    actor_info info;
    memset(&info, 0xab, sizeof info);
    assert_int_equal(actors_get(a, x, &info), ACTORS_OK);
    assert_int_equal((long)info.accepted, 2);
    assert_int_equal((long)info.rejected, 1);
    assert_string_equal(info.name, "x");
    assert_int_equal(actors_get(a, y, &info), ACTORS_OK);
    assert_int_equal((long)info.accepted, 0);
    assert_int_equal((long)info.rejected, 1);
    assert_int_equal(actors_get(a, y, NULL), ACTORS_OK);

    /* actors_at: registration order, bounds */
    assert_int_equal(actors_at(a, 0, &info), COH_OK);
    assert_true(info.id == x);
    assert_int_equal((long)info.accepted, 2);
    assert_int_equal(actors_at(a, 1, &info), COH_OK);
    assert_true(info.id == y);
    assert_int_equal(actors_at(a, -1, &info), COH_EINVAL);
    assert_int_equal(actors_at(a, 2, &info), COH_EINVAL);

    /* a copy: changing it changes nothing */
    info.accepted = 1000;
    snprintf(info.name, sizeof info.name, "changed");
    assert_int_equal(actors_get(a, y, &info), ACTORS_OK);
    assert_string_equal(info.name, "y");
    assert_int_equal((long)info.accepted, 0);

    /* counters survive a heartbeat */
    coh_err err;
    assert_int_equal(actors_heartbeat(a, x, 2, 3.0, 4, 10, &err), ACTORS_OK);
    assert_int_equal(actors_get(a, x, &info), ACTORS_OK);
    assert_int_equal((long)info.accepted, 2);
    assert_int_equal((long)info.rejected, 1);
    actors_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_register),
        cmocka_unit_test(test_register_fields),
        cmocka_unit_test(test_heartbeat),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_note_group_and_lookups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
