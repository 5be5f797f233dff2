/* test_actor_download.c - the actor's downloader and watcher (actor/download.h) against a
 * real in-process Learner on a loopback port serving a real weights snapshot: a clean
 * download gives the exact weights; a chunk with a bad CRC and a stream broken after two
 * chunks are resumed at the verified offset; a version no longer kept is skipped; an unknown
 * actor registers again and goes on; and the watcher + downloader threads turn a
 * VersionNotice into a policy waiting in the vtrack.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "actor_harness.h"
#include "actlog.h"
#include "cohort/v1/learner.pb-c.h"
#include "download.h"
#include "model.h"
#include "rpc_wchunk.h"
#include "session.h"
#include "vtrack.h"
#include "weights.h"

#define VERSION 7
#define CHUNK 65536

enum mode {
    D_CLEAN,
    D_CORRUPT_FIRST,
    D_BREAK_AFTER_2,
    D_GONE,
    D_UNKNOWN_FIRST,
    /* the variant modes: served with wchunk_send (data as a slice over the snapshot) */
    D_VARIANTS,       /* BF16 / delta as asked */
    D_VARIANTS_BREAK, /* ... the first stream breaks after two chunks */
    D_NO_DELTA,       /* a delta request is answered with the full F32 blob */
    D_WRONG_BASE,     /* the delta is made from another base than the one named */
    D_REFUSE_VARIANT  /* INVALID_ARGUMENT for a BF16 / delta request (a strict learner) */
};

#define BASE_VERSION 6

static wt_snapshot *g_snap;
static wt_snapshot *g_base;       /* version 6: g_model with the first half of its params changed */
static wt_snapshot *g_bf16;       /* version 7 in BF16 */
static wt_snapshot *g_delta;      /* version 7 as a delta from version 6 */
static wt_snapshot *g_delta_bad;  /* version 7 as a delta from something else, named 6 */
static int g_req_bf16[16], g_req_delta[16];
static int g_mode;
static int g_streams;        /* DownloadWeights calls */
static uint64_t g_offsets[16], g_ids[16];
static int g_registrations;
static uint64_t g_next_id = 100;

typedef struct dl_call {
    size_t offset;
    int sent, corrupt, break_after;
    const wt_snapshot *s; /* variant modes: what this stream sends */
} dl_call;

static void dl_next(rpc_call *call, dl_call *d);

static void dl_sent(rpc_call *call, int ok, void *data)
{
    dl_call *d = data;
    if (!ok) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "peer went away");
        free(d);
        return;
    }
    dl_next(call, d);
}

static void dl_next_variant(rpc_call *call, dl_call *d);

static void dl_next(rpc_call *call, dl_call *d)
{
    if (d->s) {
        dl_next_variant(call, d);
        return;
    }
    size_t total = wt_snapshot_size(g_snap);
    if (d->break_after && d->sent == d->break_after) {
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "connection reset (test)");
        free(d);
        return;
    }
    if (d->sent > 0 && d->offset == total) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        free(d);
        return;
    }
    const void *data = NULL;
    size_t len = 0;
    uint32_t crc = 0;
    wt_snapshot_chunk(g_snap, d->offset, CHUNK, &data, &len, &crc, NULL);
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    Cohort__V1__WeightManifest man = COHORT__V1__WEIGHT_MANIFEST__INIT;
    c.version = VERSION;
    c.offset = d->offset;
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    c.chunk_crc32 = d->corrupt && d->sent == 0 ? crc ^ 1u : crc;
    c.total_bytes = total;
    c.total_crc32 = wt_snapshot_crc(g_snap);
    if (d->sent == 0) {
        man.format = "safetensors";
        man.config_json = (char *)wt_snapshot_config(g_snap);
        man.tokenizer_json = "";
        c.manifest = &man;
    }
    d->offset += len;
    d->sent++;
    if (rpc_call_send_msg(call, &c.base, dl_sent, d) != COH_OK) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, NULL);
        free(d);
    }
}

static void dl_next_variant(rpc_call *call, dl_call *d)
{
    const wt_snapshot *s = d->s;
    size_t total = wt_snapshot_size(s);
    if (d->break_after && d->sent == d->break_after) {
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "connection reset (test)");
        free(d);
        return;
    }
    if (d->sent > 0 && d->offset == total) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        free(d);
        return;
    }
    const void *data = NULL;
    size_t len = 0;
    uint32_t crc = 0;
    wt_snapshot_chunk(s, d->offset, CHUNK, &data, &len, &crc, NULL);
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    Cohort__V1__WeightManifest man = COHORT__V1__WEIGHT_MANIFEST__INIT;
    Cohort__V1__WeightDelta del = COHORT__V1__WEIGHT_DELTA__INIT;
    uint64_t ro[64], rl[64];
    c.version = wt_snapshot_version(s);
    c.offset = d->offset;
    c.chunk_crc32 = crc;
    c.total_bytes = total;
    c.total_crc32 = wt_snapshot_crc(s);
    if (wt_snapshot_wire(s) == WT_WIRE_BF16)
        c.wire_dtype = COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16;
    if (d->sent == 0) {
        man.format = "safetensors";
        man.config_json = (char *)wt_snapshot_config(s);
        man.tokenizer_json = "";
        c.manifest = &man;
        if (wt_snapshot_wire(s) == WT_WIRE_DELTA) {
            const wt_range *rg;
            size_t nr = wt_snapshot_delta_ranges(s, &rg);
            assert_true(nr <= 64);
            for (size_t i = 0; i < nr; i++) {
                ro[i] = rg[i].off;
                rl[i] = rg[i].len;
            }
            del.base_version = BASE_VERSION;
            del.result_bytes = wt_snapshot_delta_result_size(s);
            del.result_crc32 = wt_snapshot_delta_result_crc(s);
            del.n_range_offsets = del.n_range_lengths = nr;
            del.range_offsets = ro;
            del.range_lengths = rl;
            c.delta = &del;
        }
    }
    size_t off = d->offset;
    d->offset += len;
    d->sent++;
    if (wchunk_send(call, &c, s, off, len, dl_sent, d) != COH_OK) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, NULL);
        free(d);
    }
}

static void h_download(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__DownloadRequest *req = (Cohort__V1__DownloadRequest *)rpc_call_unpack_request(
        call, &cohort__v1__download_request__descriptor);
    if (!req)
        return;
    ah_lock();
    int n = g_streams++;
    if (n < 16) {
        g_offsets[n] = req->offset;
        g_ids[n] = req->actor_id;
        g_req_bf16[n] = req->wire_dtype == COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16;
        g_req_delta[n] = req->delta ? (int)req->base_version : -1;
    }
    int mode = g_mode;
    ah_unlock();
    int64_t v = req->version;
    uint64_t off = req->offset;
    int bf16 = req->wire_dtype == COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16;
    int delta = req->delta && req->base_version == BASE_VERSION;
    rpc_msg_free(&req->base);
    if (mode >= D_VARIANTS) {
        if (mode == D_REFUSE_VARIANT && (bf16 || delta)) {
            rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "unknown wire_dtype (test)");
            return;
        }
        const wt_snapshot *s = v == BASE_VERSION ? g_base
                               : bf16            ? g_bf16
                               : delta && mode == D_WRONG_BASE ? g_delta_bad
                               : delta && mode != D_NO_DELTA   ? g_delta
                                                               : g_snap;
        if ((v != VERSION && v != BASE_VERSION) || off > wt_snapshot_size(s)) {
            rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "no such version");
            return;
        }
        dl_call *d = calloc(1, sizeof *d);
        d->offset = off;
        d->s = s;
        d->break_after = mode == D_VARIANTS_BREAK && n == 0 ? 2 : 0;
        dl_next(call, d);
        return;
    }
    if (mode == D_GONE) {
        rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
                      "version 7 is no longer kept; download version 9");
        return;
    }
    if (mode == D_UNKNOWN_FIRST && n == 0) {
        /* as an older learner says it: no typed reason, the message prefix decides */
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "unknown actor 0000000000000064");
        return;
    }
    if (v != VERSION || off > wt_snapshot_size(g_snap)) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "no such version");
        return;
    }
    dl_call *d = calloc(1, sizeof *d);
    d->offset = off;
    d->corrupt = mode == D_CORRUPT_FIRST && n == 0;
    d->break_after = mode == D_BREAK_AFTER_2 && n == 0 ? 2 : 0;
    dl_next(call, d);
}

static void h_register(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__SamplingParams sp = COHORT__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = 1;
    sp.top_p = 1;
    sp.max_new_tokens = 4;
    Cohort__V1__RegisterReply rep = COHORT__V1__REGISTER_REPLY__INIT;
    ah_lock();
    g_registrations++;
    rep.actor_id = g_next_id++;
    ah_unlock();
    rep.heartbeat_interval_ms = 500;
    rep.lease_ttl_ms = 3000;
    rep.group_size = 2;
    rep.sampling = &sp;
    rep.current_version = VERSION;
    rpc_call_reply_msg(call, &rep.base);
}

static void watch_cancelled(rpc_call *call, void *data) {}

static void h_watch(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__WeightManifest man = COHORT__V1__WEIGHT_MANIFEST__INIT;
    man.format = "safetensors";
    man.config_json = (char *)wt_snapshot_config(g_snap);
    Cohort__V1__VersionNotice n = COHORT__V1__VERSION_NOTICE__INIT;
    n.version = VERSION;
    n.step = VERSION;
    n.total_bytes = wt_snapshot_size(g_snap);
    n.checksum = wt_snapshot_crc(g_snap);
    n.format = "safetensors";
    n.manifest = &man;
    rpc_call_on_cancel(call, watch_cancelled, NULL); /* held open until cancelled */
    rpc_call_send_msg(call, &n.base, NULL, NULL);
}

static ah_server srv;
static rpc_channel *ch;
static model *g_model;

static int setup(void **state)
{
    static const ah_method methods[] = {
        {"/cohort.v1.Learner/DownloadWeights", RPC_SERVER_STREAM, h_download, NULL},
        {"/cohort.v1.Learner/RegisterActor", RPC_UNARY, h_register, NULL},
        {"/cohort.v1.Learner/WatchVersions", RPC_SERVER_STREAM, h_watch, NULL},
    };
    actlog_setup("test", 1);
    coh_err err;
    model_config c = model_config_default(98);
    if (model_create(&c, &g_model, &err))
        return -1;
    model_init_random(g_model, 5);
    if (wt_snapshot_make(g_model, VERSION, &g_snap, &err))
        return -1;
    /* version 6: the first half of the parameters differ; the rest is frozen */
    model *m6 = NULL, *other = NULL;
    if (model_clone(g_model, &m6, &err) || model_clone(g_model, &other, &err))
        return -1;
    size_t np = model_num_params(m6);
    for (size_t i = 0; i < np / 2; i++)
        model_params(m6)[i] += 0.5f;
    for (size_t i = np / 2; i < np; i++) /* another base: its delta patches the wrong half */
        model_params(other)[i] -= 0.25f;
    wt_snapshot *s_other = NULL;
    if (wt_snapshot_make(m6, BASE_VERSION, &g_base, &err) ||
        wt_snapshot_make(other, BASE_VERSION, &s_other, &err) ||
        wt_snapshot_make_bf16(g_snap, &g_bf16, &err) ||
        wt_snapshot_make_delta(g_base, g_snap, &g_delta, &err) ||
        wt_snapshot_make_delta(s_other, g_snap, &g_delta_bad, &err)) {
        fprintf(stderr, "variants: %s\n", err.msg);
        return -1;
    }
    wt_snapshot_destroy(s_other);
    model_destroy(m6);
    model_destroy(other);
    if (wt_snapshot_size(g_snap) < 3 * CHUNK || wt_snapshot_size(g_delta) < 3 * CHUNK ||
        wt_snapshot_size(g_delta) >= wt_snapshot_size(g_snap)) {
        fprintf(stderr, "the test model is too small for three chunks\n");
        return -1;
    }
    if (ah_start(&srv, methods, 3) != COH_OK) {
        fprintf(stderr, "cannot start the test server: %s\n", srv.err);
        return -1;
    }
    char target[64];
    rpc_channel_config cc = {.max_receive_bytes = -1};
    if (rpc_channel_create(ah_target(&srv, target, sizeof target), &cc, &ch, &err))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    rpc_channel_destroy(ch);
    ah_stop(&srv);
    wt_snapshot_destroy(g_snap);
    wt_snapshot_destroy(g_base);
    wt_snapshot_destroy(g_bf16);
    wt_snapshot_destroy(g_delta);
    wt_snapshot_destroy(g_delta_bad);
    model_destroy(g_model);
    return 0;
}

typedef struct fixture {
    vtrack *vt;
    session *s;
} fixture;

static void fixture_up(fixture *f, int mode)
{
    coh_err err;
    assert_int_equal(vtrack_create(&f->vt, &err), COH_OK);
    session_config sc = {.learner_addr = "test", .name = "dl", .threads = 1};
    assert_int_equal(session_create(ch, f->vt, &sc, &f->s, &err), COH_OK);
    assert_int_equal(session_register(f->s, 0), 0);
    ah_lock();
    g_mode = mode;
    g_streams = 0;
    g_registrations = 0;
    ah_unlock();
}

static void fixture_down(fixture *f)
{
    session_destroy(f->s);
    vtrack_destroy(f->vt);
}

static vtrack_notice notice(int with_config)
{
    vtrack_notice n = {.version = VERSION, .total_bytes = wt_snapshot_size(g_snap),
                       .checksum = wt_snapshot_crc(g_snap)};
    if (with_config)
        n.config_json = (char *)wt_snapshot_config(g_snap);
    return n;
}

static void assert_same_weights(const policy *p)
{
    assert_int_equal(policy_version(p), VERSION);
    assert_int_equal(policy_checksum(p), wt_snapshot_crc(g_snap));
    const model *m = policy_model(p);
    assert_int_equal(model_num_params(m), model_num_params(g_model));
    assert_memory_equal(model_params_const(m), model_params_const(g_model),
                        model_num_params(m) * sizeof(float));
    assert_non_null(policy_tokenizer(p));
}

static void test_clean_download(void **state)
{
    fixture f;
    fixture_up(&f, D_CLEAN);
    for (int with_config = 0; with_config < 2; with_config++) {
        vtrack_notice n = notice(with_config);
        policy *p = NULL;
        assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
        assert_same_weights(p);
        policy_destroy(p);
    }
    ah_lock();
    assert_int_equal(g_streams, 2); /* one stream each */
    assert_int_equal(g_offsets[0], 0);
    assert_int_equal(g_ids[0], 100);
    ah_unlock();
    fixture_down(&f);
}

static void test_bad_chunk_crc_resumes(void **state)
{
    fixture f;
    fixture_up(&f, D_CORRUPT_FIRST);
    vtrack_notice n = notice(0);
    policy *p = NULL;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    ah_lock();
    assert_int_equal(g_streams, 2);
    assert_int_equal(g_offsets[1], 0); /* the refused first chunk is fetched again */
    ah_unlock();
    fixture_down(&f);
}

static void test_broken_stream_resumes_at_offset(void **state)
{
    fixture f;
    fixture_up(&f, D_BREAK_AFTER_2);
    vtrack_notice n = notice(1);
    policy *p = NULL;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    ah_lock();
    assert_int_equal(g_streams, 2);
    assert_int_equal(g_offsets[0], 0);
    assert_int_equal(g_offsets[1], 2 * CHUNK); /* two chunks verified before the break */
    ah_unlock();
    fixture_down(&f);
}

static void test_version_gone_is_skipped(void **state)
{
    fixture f;
    fixture_up(&f, D_GONE);
    vtrack_notice n = notice(1);
    policy *p = (policy *)&n;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_SKIP);
    assert_null(p);
    ah_lock();
    assert_int_equal(g_streams, 1); /* not retried */
    ah_unlock();
    /* a notice whose size disagrees with the chunks is given up, not retried */
    ah_lock();
    g_mode = D_CLEAN;
    ah_unlock();
    n.total_bytes += 4;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_SKIP);
    assert_null(p);
    fixture_down(&f);
}

static void test_unknown_actor_registers_again(void **state)
{
    fixture f;
    fixture_up(&f, D_UNKNOWN_FIRST);
    vtrack_notice n = notice(0);
    policy *p = NULL;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    uint64_t id = session_identity(f.s, NULL);
    ah_lock();
    assert_int_equal(g_registrations, 1);
    assert_int_equal(g_streams, 2);
    assert_int_equal(g_ids[1], id); /* the second stream uses the new id */
    assert_true(g_ids[0] != id);
    ah_unlock();
    fixture_down(&f);
}

typedef struct thread_arg {
    session *s;
    vtrack *vt;
} thread_arg;

static void *watch_main(void *arg)
{
    thread_arg *a = arg;
    download_watch_run(a->s, a->vt);
    return NULL;
}

static void *download_main(void *arg)
{
    thread_arg *a = arg;
    download_run(a->s, a->vt);
    return NULL;
}

static void test_watch_and_download_threads(void **state)
{
    fixture f;
    fixture_up(&f, D_CLEAN);
    thread_arg a = {.s = f.s, .vt = f.vt};
    pthread_t tw, td;
    assert_int_equal(pthread_create(&tw, NULL, watch_main, &a), 0);
    assert_int_equal(pthread_create(&td, NULL, download_main, &a), 0);
    policy *p = vtrack_wait_policy(f.vt);
    assert_non_null(p);
    assert_same_weights(p);
    assert_int_equal(vtrack_learner_version(f.vt), VERSION);
    assert_int_equal(vtrack_held(f.vt, NULL), VERSION);
    /* stop: the watch stream held open by the server is cancelled, both threads end */
    session_stop(f.s, 0);
    pthread_join(tw, NULL);
    pthread_join(td, NULL);
    assert_int_equal(session_fatal(f.s), 0);
    ah_lock();
    assert_int_equal(g_streams, 1); /* downloaded once: the held version is not fetched again */
    ah_unlock();
    policy_destroy(p);
    fixture_down(&f);
}

/* ---- variants: BF16 and delta downloads ---- */

static void assert_bf16_weights(const policy *p)
{
    const model *m = policy_model(p);
    size_t n = model_num_params(m);
    assert_int_equal(n, model_num_params(g_model));
    const float *got = model_params_const(m), *want = model_params_const(g_model);
    for (size_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)wt_f32_to_bf16(want[i]) << 16;
        float w;
        memcpy(&w, &b, 4);
        if (memcmp(&got[i], &w, 4) != 0)
            fail_msg("param %zu: %g, want the bf16 rounding %g of %g", i, got[i], w, want[i]);
    }
}

static void test_bf16_download(void **state)
{
    fixture f;
    fixture_up(&f, D_VARIANTS);
    vtrack_notice n = notice(0);
    download_opts o = {.bf16 = 1};
    policy *p = NULL;
    assert_int_equal(download_version_opts(f.s, &n, &o, NULL, &p), DOWNLOAD_OK);
    assert_bf16_weights(p);
    assert_int_equal(policy_version(p), VERSION);
    policy_destroy(p);
    ah_lock();
    assert_int_equal(g_streams, 1);
    assert_int_equal(g_req_bf16[0], 1);
    ah_unlock();
    /* a learner that refuses BF16 (INVALID_ARGUMENT): the actor falls back to F32 */
    ah_lock();
    g_mode = D_REFUSE_VARIANT;
    g_streams = 0;
    ah_unlock();
    assert_int_equal(download_version_opts(f.s, &n, &o, NULL, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    ah_lock();
    assert_int_equal(g_streams, 2);
    assert_int_equal(g_req_bf16[1], 0);
    ah_unlock();
    fixture_down(&f);
}

static vtrack_notice base_notice(void)
{
    vtrack_notice n = {.version = BASE_VERSION, .total_bytes = wt_snapshot_size(g_base),
                       .checksum = wt_snapshot_crc(g_base)};
    return n;
}

/* Hold version 6 in the cache (a full F32 download with delta on). */
static download_cache *cache_with_base(fixture *f, const download_opts *o)
{
    download_cache *c = NULL;
    assert_int_equal(download_cache_create(&c), COH_OK);
    vtrack_notice n = base_notice();
    policy *p = NULL;
    assert_int_equal(download_version_opts(f->s, &n, o, c, &p), DOWNLOAD_OK);
    policy_destroy(p);
    assert_int_equal(download_cache_version(c), BASE_VERSION);
    return c;
}

static void test_delta_download(void **state)
{
    int modes[] = {D_VARIANTS, D_VARIANTS_BREAK};
    for (int k = 0; k < 2; k++) {
        fixture f;
        fixture_up(&f, D_VARIANTS);
        download_opts o = {.delta = 1};
        download_cache *c = cache_with_base(&f, &o);
        ah_lock();
        assert_int_equal(g_req_delta[0], -1); /* nothing held yet: a full download */
        g_mode = modes[k];
        g_streams = 0;
        ah_unlock();
        vtrack_notice n = notice(0);
        policy *p = NULL;
        assert_int_equal(download_version_opts(f.s, &n, &o, c, &p), DOWNLOAD_OK);
        assert_same_weights(p); /* patched and verified: exactly version 7 */
        policy_destroy(p);
        assert_int_equal(download_cache_version(c), VERSION);
        ah_lock();
        assert_int_equal(g_req_delta[0], BASE_VERSION);
        if (modes[k] == D_VARIANTS_BREAK) { /* the delta resumed at its own offset */
            assert_int_equal(g_streams, 2);
            assert_int_equal(g_req_delta[1], BASE_VERSION);
            assert_int_equal(g_offsets[1], 2 * CHUNK);
        } else {
            assert_int_equal(g_streams, 1);
        }
        ah_unlock();
        download_cache_destroy(c);
        fixture_down(&f);
    }
}

static void test_delta_fallbacks(void **state)
{
    int modes[] = {D_NO_DELTA, D_WRONG_BASE, D_REFUSE_VARIANT};
    for (int k = 0; k < 3; k++) {
        fixture f;
        fixture_up(&f, D_VARIANTS);
        download_opts o = {.delta = 1};
        download_cache *c = cache_with_base(&f, &o);
        ah_lock();
        g_mode = modes[k];
        g_streams = 0;
        ah_unlock();
        vtrack_notice n = notice(1);
        policy *p = NULL;
        assert_int_equal(download_version_opts(f.s, &n, &o, c, &p), DOWNLOAD_OK);
        assert_same_weights(p);
        policy_destroy(p);
        assert_int_equal(download_cache_version(c), VERSION);
        ah_lock();
        if (modes[k] == D_NO_DELTA) {
            assert_int_equal(g_streams, 1); /* the full blob, accepted as it is */
        } else {
            /* wrong base: the patched result fails the CRC, then a full download;
             * refused: INVALID_ARGUMENT, then a full download */
            assert_int_equal(g_streams, 2);
            assert_int_equal(g_req_delta[1], -1);
            assert_int_equal(g_offsets[1], 0);
        }
        ah_unlock();
        download_cache_destroy(c);
        fixture_down(&f);
    }
}

/* The download cache keeps its buffers from one version to the next: the F32 blob a full
 * download writes into is the one the previous download gave back (no fresh pages), with
 * or without deltas and with BF16; a failed download leaves the held version intact. */
static void test_cache_reuses_buffers(void **state)
{
    fixture f;
    fixture_up(&f, D_VARIANTS);
    wt_pool_stats st;
    policy *p = NULL;
    /* plain F32: one buffer, handed out again for every later version */
    download_opts plain = {0};
    download_cache *c = NULL;
    assert_int_equal(download_cache_create(&c), COH_OK);
    vtrack_notice b = base_notice(), n = notice(1);
    assert_int_equal(download_version_opts(f.s, &b, &plain, c, &p), DOWNLOAD_OK);
    policy_destroy(p);
    download_cache_stats(c, &st);
    assert_int_equal(st.fresh, 1);
    assert_int_equal(st.buffers, 1);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(download_version_opts(f.s, &n, &plain, c, &p), DOWNLOAD_OK);
        assert_same_weights(p);
        policy_destroy(p);
    }
    download_cache_stats(c, &st);
    assert_int_equal(st.fresh, 1); /* never a fresh buffer after the first download */
    assert_true(st.reused >= 3);
    assert_int_equal(st.buffers, 1);
    assert_int_equal(download_cache_version(c), -1); /* no delta: no held version */
    download_cache_destroy(c);

    /* delta on: the held blob and a spare swap places */
    download_opts od = {.delta = 1};
    c = cache_with_base(&f, &od);
    size_t len = 0;
    const void *b6 = download_cache_blob(c, &len);
    assert_non_null(b6);
    assert_int_equal(len, wt_snapshot_size(g_base));
    assert_memory_equal(b6, wt_snapshot_blob(g_base), len);
    /* a failed download (the version is gone) leaves the held version as it was */
    ah_lock();
    g_mode = D_GONE;
    ah_unlock();
    assert_int_equal(download_version_opts(f.s, &n, &od, c, &p), DOWNLOAD_SKIP);
    assert_null(p);
    assert_int_equal(download_cache_version(c), BASE_VERSION);
    assert_ptr_equal(download_cache_blob(c, &len), b6);
    assert_memory_equal(b6, wt_snapshot_blob(g_base), wt_snapshot_size(g_base));
    /* ... and the next delta is made from it */
    ah_lock();
    g_mode = D_VARIANTS;
    g_streams = 0;
    ah_unlock();
    assert_int_equal(download_version_opts(f.s, &n, &od, c, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    ah_lock();
    assert_int_equal(g_req_delta[0], BASE_VERSION);
    ah_unlock();
    const void *b7 = download_cache_blob(c, &len);
    assert_int_equal(download_cache_version(c), VERSION);
    assert_ptr_not_equal(b7, b6); /* the patched copy went to a second buffer */
    assert_memory_equal(b7, wt_snapshot_blob(g_snap), len);
    /* version 6 again (a full download): written into version 6's old buffer */
    assert_int_equal(download_version_opts(f.s, &b, &od, c, &p), DOWNLOAD_OK);
    policy_destroy(p);
    assert_ptr_equal(download_cache_blob(c, &len), b6);
    assert_memory_equal(b6, wt_snapshot_blob(g_base), len);
    download_cache_stats(c, &st);
    size_t fresh = st.fresh;
    /* then 7 as a delta and 6 in full, again and again: no fresh buffer any more */
    for (int k = 0; k < 3; k++) {
        assert_int_equal(download_version_opts(f.s, &n, &od, c, &p), DOWNLOAD_OK);
        assert_same_weights(p);
        policy_destroy(p);
        assert_ptr_equal(download_cache_blob(c, &len), b7);
        assert_int_equal(download_version_opts(f.s, &b, &od, c, &p), DOWNLOAD_OK);
        policy_destroy(p);
        assert_ptr_equal(download_cache_blob(c, &len), b6);
    }
    download_cache_stats(c, &st);
    assert_int_equal(st.fresh, fresh);
    assert_true(st.buffers <= WT_POOL_MAX);
    download_cache_destroy(c);

    /* BF16: the receive buffer and the widened blob both come back */
    download_opts ob = {.bf16 = 1};
    assert_int_equal(download_cache_create(&c), COH_OK);
    assert_int_equal(download_version_opts(f.s, &n, &ob, c, &p), DOWNLOAD_OK);
    policy_destroy(p);
    download_cache_stats(c, &st);
    fresh = st.fresh;
    for (int k = 0; k < 3; k++) {
        assert_int_equal(download_version_opts(f.s, &n, &ob, c, &p), DOWNLOAD_OK);
        assert_bf16_weights(p);
        policy_destroy(p);
    }
    download_cache_stats(c, &st);
    assert_int_equal(st.fresh, fresh);
    download_cache_destroy(c);
    fixture_down(&f);
}

/* The zero-copy WeightChunk decoder on a message cut into arbitrary pieces. */
static void test_wchunk_decode_pieces(void **state)
{
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    Cohort__V1__WeightManifest man = COHORT__V1__WEIGHT_MANIFEST__INIT;
    man.format = "safetensors";
    man.config_json = "{\"x\": 1}";
    c.version = 9;
    c.offset = 123456789012ull;
    c.data.data = data;
    c.data.len = sizeof data;
    c.chunk_crc32 = 0xdeadbeef;
    c.total_bytes = 1ull << 35;
    c.total_crc32 = 0x01020304;
    c.manifest = &man;
    c.wire_dtype = COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16;
    size_t len = protobuf_c_message_get_packed_size(&c.base);
    uint8_t *buf = malloc(len + 16);
    protobuf_c_message_pack(&c.base, buf);
    /* an unknown field (number 15, varint) appended: skipped */
    buf[len++] = 15 << 3;
    buf[len++] = 0x96;
    buf[len++] = 0x01;
    wchunk_view v;
    wchunk_view_init(&v);
    coh_err err;
    uint64_t x = 88172645463325252ull;
    for (int t = 0; t < 200; t++) {
        rpc_piece pc[8];
        size_t np = t == 0 ? 1 : 1 + (size_t)(t % 8), at = 0;
        for (size_t i = 0; i < np; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t k = i + 1 == np ? len - at : (size_t)(x % (len - at + 1));
            pc[i].bytes = buf + at;
            pc[i].len = k;
            at += k;
        }
        assert_int_equal(wchunk_decode(&v, pc, np, &err), COH_OK);
        assert_int_equal(v.version, 9);
        assert_int_equal(v.offset, 123456789012ull);
        assert_int_equal(v.chunk_crc32, 0xdeadbeef);
        assert_int_equal(v.total_bytes, 1ull << 35);
        assert_int_equal(v.total_crc32, 0x01020304);
        assert_int_equal(v.wire_dtype, 1);
        assert_non_null(v.manifest);
        assert_string_equal(v.manifest->config_json, "{\"x\": 1}");
        assert_null(v.delta);
        assert_int_equal(v.data_len, sizeof data);
        uint8_t back[sizeof data];
        size_t got = 0;
        for (size_t i = 0; i < v.ndata; i++) {
            memcpy(back + got, v.data[i].data, v.data[i].len);
            got += v.data[i].len;
        }
        assert_int_equal(got, sizeof data);
        assert_memory_equal(back, data, sizeof data);
    }
    /* truncated anywhere: refused */
    for (size_t cut = 1; cut < len - 3; cut += 97) {
        rpc_piece one = {buf, cut};
        int rc = wchunk_decode(&v, &one, 1, &err);
        if (cut < len - 3 && rc == COH_OK)
            assert_true(v.data_len == sizeof data || v.data_len == 0);
    }
    rpc_piece half = {buf, len / 2};
    assert_int_equal(wchunk_decode(&v, &half, 1, &err), COH_EFORMAT);
    assert_non_null(strstr(err.msg, "WeightChunk"));
    /* a known field with the wrong wire type */
    uint8_t bad[] = {1 << 3 | 2, 1, 0};
    rpc_piece b1 = {bad, sizeof bad};
    assert_int_equal(wchunk_decode(&v, &b1, 1, &err), COH_EFORMAT);
    wchunk_view_clear(&v);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_download),
        cmocka_unit_test(test_bad_chunk_crc_resumes),
        cmocka_unit_test(test_broken_stream_resumes_at_offset),
        cmocka_unit_test(test_version_gone_is_skipped),
        cmocka_unit_test(test_unknown_actor_registers_again),
        cmocka_unit_test(test_watch_and_download_threads),
        cmocka_unit_test(test_bf16_download),
        cmocka_unit_test(test_delta_download),
        cmocka_unit_test(test_delta_fallbacks),
        cmocka_unit_test(test_cache_reuses_buffers),
        cmocka_unit_test(test_wchunk_decode_pieces),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
