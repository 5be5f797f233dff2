/* test_rpc_proto.c - the cohort.v1 and grpc.health.v1 messages as protoc-c generates them:
 * every field survives a pack/unpack round trip, a weights chunk fits the wire limit the
 * protocol promises (every message a server sends stays below gRPC's default 4 MiB receive
 * limit, see proto/cohort/v1/common.proto), and malformed bytes (truncated, garbage) unpack to
 * NULL instead of crashing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/v1/common.pb-c.h"
#include "cohort/v1/learner.pb-c.h"
#include "cohort/v1/monitor.pb-c.h"
#include "cohort/v1/reward.pb-c.h"
#include "cohort/v1/verifier.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "rpc.h"

/* gRPC's default max receive message size; WeightChunk must stay below it (learner.proto). */
#define WIRE_LIMIT (4u * 1024u * 1024u)
/* Largest data size per chunk the learner sends (DownloadRequest.max_chunk_bytes clamp). */
#define MAX_CHUNK_DATA (3u * 1024u * 1024u)

/* ---- helpers ------------------------------------------------------------------------------ */

/* Pack any message into a fresh buffer; *len gets its size. */
static uint8_t *pack_msg(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    size_t w = protobuf_c_message_pack(m, buf);
    assert_int_equal(w, n);
    *len = n;
    return buf;
}

static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* ---- SubmitGroupRequest -------------------------------------------------------------------- */

/* Two completions, each with two reward components; one OK, one timed out. */
typedef struct group_fixture {
    int32_t tok[2][5];
    float logp[2][5];
    Cohort__V1__RewardComponent comp[2][2];
    Cohort__V1__RewardComponent *comp_ptr[2][2];
    Cohort__V1__ScoredCompletion sc[2];
    Cohort__V1__ScoredCompletion *sc_ptr[2];
    Cohort__V1__SubmitGroupRequest req;
} group_fixture;

static const size_t group_len[2] = {5, 3};

static void group_fill(group_fixture *g)
{
    static const char *const names[2] = {"correct", "format"};
    static const char *const details[2] = {"", "verifier:judge timed out after 5000 ms"};
    for (int i = 0; i < 2; i++) {
        for (int t = 0; t < 5; t++) {
            g->tok[i][t] = 7 * i + t + (t == 4 ? 60000 : 0);
            g->logp[i][t] = -0.125f * (float)(t + 1) - (float)i;
        }
        for (int c = 0; c < 2; c++) {
            Cohort__V1__RewardComponent init = COHORT__V1__REWARD_COMPONENT__INIT;
            g->comp[i][c] = init;
            g->comp[i][c].name = (char *)names[c];
            g->comp[i][c].value = c == 0 ? (double)(1 - i) : 0.5;
            g->comp[i][c].weight = c == 0 ? 1.0 : -0.25;
            g->comp_ptr[i][c] = &g->comp[i][c];
        }
        Cohort__V1__ScoredCompletion sinit = COHORT__V1__SCORED_COMPLETION__INIT;
        g->sc[i] = sinit;
        g->sc[i].n_completion_tokens = group_len[i];
        g->sc[i].completion_tokens = g->tok[i];
        g->sc[i].n_behaviour_logprobs = group_len[i];
        g->sc[i].behaviour_logprobs = g->logp[i];
        g->sc[i].policy_version = 41 + i;
        g->sc[i].reward = i == 0 ? 0.875 : 0.0;
        g->sc[i].n_components = 2;
        g->sc[i].components = g->comp_ptr[i];
        g->sc[i].status = i == 0 ? COHORT__V1__ITEM_STATUS__ITEM_OK
                                 : COHORT__V1__ITEM_STATUS__ITEM_TIMED_OUT;
        g->sc[i].detail = (char *)details[i];
        g->sc_ptr[i] = &g->sc[i];
    }
    Cohort__V1__SubmitGroupRequest rinit = COHORT__V1__SUBMIT_GROUP_REQUEST__INIT;
    g->req = rinit;
    g->req.actor_id = 0xF00DCAFEDEADBEEFull; /* above 2^63: checks the full uint64 range */
    g->req.lease_id = 1234567890123ull;
    g->req.n_completions = 2;
    g->req.completions = g->sc_ptr;
    g->req.temperature = 0.7;
    g->req.reward_latency_ms = 12.5;
    g->req.sample_ms = 250.25;
}

static void test_submit_group_roundtrip(void **state)
{
    (void)state;
    group_fixture g;
    group_fill(&g);
    size_t n;
    uint8_t *buf = pack_msg(&g.req.base, &n);

    Cohort__V1__SubmitGroupRequest *r = cohort__v1__submit_group_request__unpack(NULL, n, buf);
    assert_non_null(r);
    assert_true(r->actor_id == 0xF00DCAFEDEADBEEFull);
    assert_true(r->lease_id == 1234567890123ull);
    assert_true(r->temperature == 0.7);
    assert_true(r->reward_latency_ms == 12.5);
    assert_true(r->sample_ms == 250.25);
    assert_int_equal(r->n_completions, 2);
    for (int i = 0; i < 2; i++) {
        const Cohort__V1__ScoredCompletion *c = r->completions[i];
        assert_int_equal(c->n_completion_tokens, group_len[i]);
        assert_int_equal(c->n_behaviour_logprobs, group_len[i]);
        for (size_t t = 0; t < group_len[i]; t++) {
            assert_int_equal(c->completion_tokens[t], g.tok[i][t]);
            assert_true(c->behaviour_logprobs[t] == g.logp[i][t]); /* bit-exact floats */
        }
        assert_int_equal(c->policy_version, 41 + i);
        assert_true(c->reward == g.sc[i].reward);
        assert_int_equal(c->status, g.sc[i].status);
        assert_string_equal(c->detail, g.sc[i].detail);
        assert_int_equal(c->n_components, 2);
        for (int k = 0; k < 2; k++) {
            assert_string_equal(c->components[k]->name, g.comp[i][k].name);
            assert_true(c->components[k]->value == g.comp[i][k].value);
            assert_true(c->components[k]->weight == g.comp[i][k].weight);
        }
    }
    cohort__v1__submit_group_request__free_unpacked(r, NULL);
    free(buf);
}

/* ---- WeightChunk ------------------------------------------------------------------------ */

static const char config_json[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 256, \"hidden_size\": 64, "
    "\"intermediate_size\": 172, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
    "\"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
    "\"max_position_embeddings\": 128, \"tie_word_embeddings\": true}";

/* Pack a first chunk (with manifest) of data_len bytes, unpack it and check every field. */
static size_t chunk_roundtrip(size_t data_len)
{
    uint8_t *data = malloc(data_len);
    assert_non_null(data);
    for (size_t i = 0; i < data_len; i++)
        data[i] = (uint8_t)((i * 2654435761u) >> 13);
    const uint64_t total = 123456789012ull;

    Cohort__V1__WeightManifest man = COHORT__V1__WEIGHT_MANIFEST__INIT;
    man.format = "safetensors";
    man.config_json = (char *)config_json;
    man.tokenizer_json = "{\"type\": \"byte\"}";
    Cohort__V1__WeightChunk ch = COHORT__V1__WEIGHT_CHUNK__INIT;
    ch.version = 17;
    ch.offset = 5ull * 1024 * 1024 * 1024; /* beyond 32 bits */
    ch.data.len = data_len;
    ch.data.data = data;
    ch.chunk_crc32 = crc32_ieee(data, data_len);
    ch.total_bytes = total;
    ch.total_crc32 = 0xCBF43926u;
    ch.manifest = &man;

    size_t n;
    uint8_t *buf = pack_msg(&ch.base, &n);
    assert_true(n < WIRE_LIMIT);

    Cohort__V1__WeightChunk *r = cohort__v1__weight_chunk__unpack(NULL, n, buf);
    assert_non_null(r);
    assert_int_equal(r->version, 17);
    assert_true(r->offset == 5ull * 1024 * 1024 * 1024);
    assert_int_equal(r->data.len, data_len);
    assert_memory_equal(r->data.data, data, data_len);
    assert_true(r->chunk_crc32 == crc32_ieee(r->data.data, r->data.len));
    assert_true(r->total_bytes == total);
    assert_true(r->total_crc32 == 0xCBF43926u);
    assert_non_null(r->manifest);
    assert_string_equal(r->manifest->format, "safetensors");
    assert_string_equal(r->manifest->config_json, config_json);
    assert_string_equal(r->manifest->tokenizer_json, "{\"type\": \"byte\"}");
    cohort__v1__weight_chunk__free_unpacked(r, NULL);

    /* cut inside the data bytes: refused */
    r = cohort__v1__weight_chunk__unpack(NULL, n / 2, buf);
    assert_null(r);
    free(buf);
    free(data);
    return n;
}

static void test_weight_chunk_1mib(void **state)
{
    (void)state;
    assert_true(crc32_ieee((const uint8_t *)"123456789", 9) == 0xCBF43926u); /* IEEE check */
    size_t n = chunk_roundtrip(1024u * 1024u);
    /* 1 MiB of data costs well under 1 KiB of framing, manifest included */
    assert_true(n > 1024u * 1024u && n < 1024u * 1024u + 1024u);
    /* the largest chunk the learner may send, with its manifest, still fits */
    n = chunk_roundtrip(MAX_CHUNK_DATA);
    assert_true(n < WIRE_LIMIT - 512u * 1024u);
}

/* ---- StepMetrics ------------------------------------------------------------------------ */

static void test_step_metrics_roundtrip(void **state)
{
    (void)state;
    Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry e[2] = {
        COHORT__V1__STEP_METRICS__GROUPS_DROPPED_BY_REASON_ENTRY__INIT,
        COHORT__V1__STEP_METRICS__GROUPS_DROPPED_BY_REASON_ENTRY__INIT};
    e[0].key = "stale";
    e[0].value = 3;
    e[1].key = "zero_signal";
    e[1].value = 5;
    Cohort__V1__StepMetrics__GroupsDroppedByReasonEntry *ep[2] = {&e[0], &e[1]};

    Cohort__V1__StepMetrics m = COHORT__V1__STEP_METRICS__INIT;
    m.step = 120;
    m.version = 120;
    m.phase = "rl";
    m.reward_mean = 0.625;
    m.reward_std = 0.25;
    m.eval_accuracy_present_case = COHORT__V1__STEP_METRICS__EVAL_ACCURACY_PRESENT_EVAL_ACCURACY;
    m.eval_accuracy = 0.0; /* present and zero: distinct from absent */
    m.kl = 0.0123;
    m.clip_frac = 0.05;
    m.entropy = 1.5;
    m.grad_norm = NAN; /* a diverged step: non-finite values travel */
    m.lr = 1e-4;
    m.learner_tokens_per_s = 15000.5;
    m.sampler_tokens_per_s = 42000.25;
    m.staleness_mean = 0.75;
    m.groups_used = 16;
    m.groups_dropped = 8;
    m.time_s = 3600.5;
    m.loss = -0.03125;
    m.skipped = 1;
    m.logp_max_abs_diff = 3e-6;
    m.n_groups_dropped_by_reason = 2;
    m.groups_dropped_by_reason = ep;
    m.reward_latency_ms = 18.5;
    m.staleness_max = 2;

    size_t n;
    uint8_t *buf = pack_msg(&m.base, &n);
    Cohort__V1__StepMetrics *r = cohort__v1__step_metrics__unpack(NULL, n, buf);
    assert_non_null(r);
    assert_int_equal(r->step, 120);
    assert_int_equal(r->version, 120);
    assert_string_equal(r->phase, "rl");
    assert_true(r->reward_mean == 0.625);
    assert_true(r->reward_std == 0.25);
    assert_int_equal(r->eval_accuracy_present_case,
                     COHORT__V1__STEP_METRICS__EVAL_ACCURACY_PRESENT_EVAL_ACCURACY);
    assert_true(r->eval_accuracy == 0.0);
    assert_true(r->kl == 0.0123);
    assert_true(r->clip_frac == 0.05);
    assert_true(r->entropy == 1.5);
    assert_true(isnan(r->grad_norm));
    assert_true(r->lr == 1e-4);
    assert_true(r->learner_tokens_per_s == 15000.5);
    assert_true(r->sampler_tokens_per_s == 42000.25);
    assert_true(r->staleness_mean == 0.75);
    assert_int_equal(r->groups_used, 16);
    assert_int_equal(r->groups_dropped, 8);
    assert_true(r->time_s == 3600.5);
    assert_true(r->loss == -0.03125);
    assert_true(r->skipped);
    assert_true(r->logp_max_abs_diff == 3e-6);
    assert_int_equal(r->n_groups_dropped_by_reason, 2);
    int64_t sum = 0;
    for (size_t i = 0; i < r->n_groups_dropped_by_reason; i++) {
        const char *k = r->groups_dropped_by_reason[i]->key;
        int64_t v = r->groups_dropped_by_reason[i]->value;
        assert_true((strcmp(k, "stale") == 0 && v == 3) ||
                    (strcmp(k, "zero_signal") == 0 && v == 5));
        sum += v;
    }
    assert_int_equal(sum, 8);
    assert_true(r->reward_latency_ms == 18.5);
    assert_int_equal(r->staleness_max, 2);
    cohort__v1__step_metrics__free_unpacked(r, NULL);
    free(buf);

    /* a step that did not evaluate: eval_accuracy absent after the round trip */
    Cohort__V1__StepMetrics m2 = COHORT__V1__STEP_METRICS__INIT;
    m2.step = 121;
    m2.phase = "rl";
    buf = pack_msg(&m2.base, &n);
    r = cohort__v1__step_metrics__unpack(NULL, n, buf);
    assert_non_null(r);
    assert_int_equal(r->step, 121);
    assert_int_equal(r->eval_accuracy_present_case,
                     COHORT__V1__STEP_METRICS__EVAL_ACCURACY_PRESENT__NOT_SET);
    cohort__v1__step_metrics__free_unpacked(r, NULL);
    free(buf);
}

/* ---- grpc.health.v1 ----------------------------------------------------------------------- */

static void test_health_roundtrip(void **state)
{
    (void)state;
    Grpc__Health__V1__HealthCheckRequest q = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    q.service = "cohort.v1.Learner";
    size_t n;
    uint8_t *buf = pack_msg(&q.base, &n);
    Grpc__Health__V1__HealthCheckRequest *rq =
        grpc__health__v1__health_check_request__unpack(NULL, n, buf);
    assert_non_null(rq);
    assert_string_equal(rq->service, "cohort.v1.Learner");
    grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
    free(buf);

    static const Grpc__Health__V1__HealthCheckResponse__ServingStatus st[] = {
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING,
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING,
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN};
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
        Grpc__Health__V1__HealthCheckResponse a = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        a.status = st[i];
        buf = pack_msg(&a.base, &n);
        assert_int_equal(n, 2); /* tag + one-byte varint: fixed by the standard */
        Grpc__Health__V1__HealthCheckResponse *r =
            grpc__health__v1__health_check_response__unpack(NULL, n, buf);
        assert_non_null(r);
        assert_int_equal(r->status, st[i]);
        grpc__health__v1__health_check_response__free_unpacked(r, NULL);
        free(buf);
    }
}

/* ---- the other services' requests: defaults and enums survive --------------------------- */

static void test_other_requests_roundtrip(void **state)
{
    (void)state;
    size_t n;
    uint8_t *buf;

    /* Reward.Score request with an item */
    Cohort__V1__RewardItem it = COHORT__V1__REWARD_ITEM__INIT;
    it.item_id = "1234/0";
    it.task = "countdown";
    it.prompt = "Use 3 7 25 to make 175:";
    it.completion = "(25*7)";
    it.metadata_json = "{\"numbers\": [3, 7, 25], \"target\": 175}";
    it.completion_num_tokens = 6;
    it.truncated = 1;
    Cohort__V1__RewardItem *itp = &it;
    Cohort__V1__ScoreRequest sr = COHORT__V1__SCORE_REQUEST__INIT;
    sr.n_items = 1;
    sr.items = &itp;
    sr.timeout_ms = 5000;
    buf = pack_msg(&sr.base, &n);
    Cohort__V1__ScoreRequest *rs = cohort__v1__score_request__unpack(NULL, n, buf);
    assert_non_null(rs);
    assert_int_equal(rs->n_items, 1);
    assert_int_equal(rs->timeout_ms, 5000);
    assert_string_equal(rs->items[0]->item_id, "1234/0");
    assert_string_equal(rs->items[0]->metadata_json, it.metadata_json);
    assert_string_equal(rs->items[0]->answer, ""); /* unset string: empty, never NULL */
    assert_int_equal(rs->items[0]->completion_num_tokens, 6);
    assert_true(rs->items[0]->truncated);
    cohort__v1__score_request__free_unpacked(rs, NULL);
    free(buf);

    /* Verifier reply */
    Cohort__V1__VerifyReply vr = COHORT__V1__VERIFY_REPLY__INIT;
    vr.score = 1.0;
    vr.passed = 1;
    vr.details = "175 = 25*7";
    buf = pack_msg(&vr.base, &n);
    Cohort__V1__VerifyReply *rv = cohort__v1__verify_reply__unpack(NULL, n, buf);
    assert_non_null(rv);
    assert_true(rv->score == 1.0 && rv->passed);
    assert_string_equal(rv->details, "175 = 25*7");
    cohort__v1__verify_reply__free_unpacked(rv, NULL);
    free(buf);

    /* Monitor.SetHyperparameters request */
    Cohort__V1__Setting s = COHORT__V1__SETTING__INIT;
    s.key = "lr";
    s.value = 5e-4;
    Cohort__V1__Setting *sp = &s;
    Cohort__V1__SetRequest set = COHORT__V1__SET_REQUEST__INIT;
    set.n_settings = 1;
    set.settings = &sp;
    set.reason = "lower lr";
    buf = pack_msg(&set.base, &n);
    Cohort__V1__SetRequest *rset = cohort__v1__set_request__unpack(NULL, n, buf);
    assert_non_null(rset);
    assert_int_equal(rset->n_settings, 1);
    assert_string_equal(rset->settings[0]->key, "lr");
    assert_true(rset->settings[0]->value == 5e-4);
    cohort__v1__set_request__free_unpacked(rset, NULL);
    free(buf);

    /* an empty message packs to 0 bytes and unpacks to all defaults */
    Cohort__V1__GetStatusRequest gs = COHORT__V1__GET_STATUS_REQUEST__INIT;
    assert_int_equal(protobuf_c_message_get_packed_size(&gs.base), 0);
    Cohort__V1__HeartbeatRequest *hb = cohort__v1__heartbeat_request__unpack(NULL, 0, NULL);
    assert_non_null(hb);
    assert_int_equal(hb->actor_id, 0);
    cohort__v1__heartbeat_request__free_unpacked(hb, NULL);
}

/* ---- malformed input ---------------------------------------------------------------------- */

/* Every prefix of a packed SubmitGroupRequest unpacks to NULL or to a message (a cut at a
 * field boundary is a valid, shorter message); none crashes (run under ASan in the sanitizer
 * build). A cut inside a field is refused. */
static void test_truncated_refused(void **state)
{
    (void)state;
    group_fixture g;
    group_fill(&g);
    size_t n;
    uint8_t *buf = pack_msg(&g.req.base, &n);
    int refused = 0;
    for (size_t len = 0; len < n; len++) {
        /* a fresh heap copy of exactly len bytes, so ASan sees any read past the end */
        uint8_t *cut = malloc(len ? len : 1);
        assert_non_null(cut);
        memcpy(cut, buf, len);
        Cohort__V1__SubmitGroupRequest *r =
            cohort__v1__submit_group_request__unpack(NULL, len, cut);
        if (r)
            cohort__v1__submit_group_request__free_unpacked(r, NULL);
        else
            refused++;
        free(cut);
    }
    assert_true(refused > 0);
    /* one byte short: inside the last completion */
    assert_null(cohort__v1__submit_group_request__unpack(NULL, n - 1, buf));
    free(buf);
}

static void test_garbage_refused(void **state)
{
    (void)state;
    /* wire type 7 does not exist */
    static const uint8_t bad_wiretype[] = {0x0F, 0x01};
    /* a varint that never ends */
    static const uint8_t endless_varint[] = {0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                             0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    /* field 3 (data) claims 1000 bytes, 2 follow */
    static const uint8_t long_length[] = {0x1A, 0xE8, 0x07, 0xAA, 0xBB};
    /* field 3 of SubmitGroupRequest (a message) declared as a varint */
    static const uint8_t wrong_type[] = {0x18, 0x05};
    /* field number 0 is invalid */
    static const uint8_t field_zero[] = {0x00, 0x01};

    assert_null(cohort__v1__weight_chunk__unpack(NULL, sizeof bad_wiretype, bad_wiretype));
    assert_null(cohort__v1__weight_chunk__unpack(NULL, sizeof endless_varint, endless_varint));
    assert_null(cohort__v1__weight_chunk__unpack(NULL, sizeof long_length, long_length));
    assert_null(cohort__v1__submit_group_request__unpack(NULL, sizeof wrong_type, wrong_type));
    assert_null(cohort__v1__step_metrics__unpack(NULL, sizeof field_zero, field_zero));
    assert_null(grpc__health__v1__health_check_response__unpack(NULL, sizeof long_length,
                                                                long_length));

    /* pseudo-random bytes: never crash, and free whatever unpacks */
    uint32_t x = 0x12345678u;
    int refused = 0;
    for (int trial = 0; trial < 2000; trial++) {
        size_t len = 1 + (size_t)(trial % 64);
        uint8_t *b = malloc(len);
        assert_non_null(b);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b[i] = (uint8_t)x;
        }
        Cohort__V1__SubmitGroupRequest *r = cohort__v1__submit_group_request__unpack(NULL, len, b);
        if (r)
            cohort__v1__submit_group_request__free_unpacked(r, NULL);
        else
            refused++;
        Cohort__V1__StepMetrics *m = cohort__v1__step_metrics__unpack(NULL, len, b);
        if (m)
            cohort__v1__step_metrics__free_unpacked(m, NULL);
        free(b);
    }
    assert_true(refused > 1000);
}

/* ---- the wire check (issue 12: what protobuf-c alone lets through) -------------------------- */

/* A ScoreRequest with one item whose completion is the given bytes. */
static size_t score_request_bytes(const char *completion, size_t clen, uint8_t *out)
{
    /* RewardItem: item_id "a" (field 1), task "addition" (2), completion (4) */
    uint8_t item[256];
    size_t n = 0;
    item[n++] = 0x0a, item[n++] = 1, item[n++] = 'a';
    item[n++] = 0x12, item[n++] = 8;
    memcpy(item + n, "addition", 8), n += 8;
    item[n++] = 0x22, item[n++] = (uint8_t)clen;
    memcpy(item + n, completion, clen), n += clen;
    size_t m = 0;
    out[m++] = 0x0a, out[m++] = (uint8_t)n; /* ScoreRequest.items (1) */
    memcpy(out + m, item, n);
    return m + n;
}

static void test_wire_check(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *sr = &cohort__v1__score_request__descriptor;
    uint8_t b[300];
    char why[200];
    /* a good request decodes */
    size_t n = score_request_bytes("1999", 4, b);
    assert_int_equal(rpc_wire_check(sr, b, n, why, sizeof why), 0);
    ProtobufCMessage *m = rpc_unpack(sr, b, n);
    assert_non_null(m);
    assert_string_equal(((Cohort__V1__ScoreRequest *)m)->items[0]->completion, "1999");
    rpc_msg_free(m);
    /* "2\0999" in a nested string: protobuf-c would read "2" */
    n = score_request_bytes("2\0" "999", 5, b);
    assert_int_not_equal(rpc_wire_check(sr, b, n, why, sizeof why), 0);
    assert_non_null(strstr(why, "cohort.v1.RewardItem.completion holds a NUL byte at byte 1"));
    assert_null(rpc_unpack(sr, b, n));
    /* not UTF-8: a cut-short sequence, a surrogate, an overlong encoding */
    const char *bad[] = {"ok\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xff"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        n = score_request_bytes(bad[i], strlen(bad[i]), b);
        assert_int_not_equal(rpc_wire_check(sr, b, n, why, sizeof why), 0);
        assert_non_null(strstr(why, "is not UTF-8"));
        assert_null(rpc_unpack(sr, b, n));
    }
    /* UTF-8 text is fine */
    const char *text = "d\xc3\xa9j\xc3\xa0 \xe2\x82\xac \xf0\x9f\x98\x80";
    n = score_request_bytes(text, strlen(text), b);
    assert_int_equal(rpc_wire_check(sr, b, n, why, sizeof why), 0);
    /* a field numbered 0 (an unknown field that protobuf-c keeps and cannot re-encode) */
    const uint8_t f0[] = {0x00, 0x01};
    assert_int_not_equal(rpc_wire_check(sr, f0, sizeof f0, why, sizeof why), 0);
    assert_non_null(strstr(why, "a field numbered 0"));
    assert_null(rpc_unpack(&cohort__v1__set_request__descriptor, f0, sizeof f0));
    /* a group (wire type 3), a truncated varint, a length past the end */
    const uint8_t grp[] = {0x0b, 0x0c};
    assert_int_not_equal(rpc_wire_check(sr, grp, sizeof grp, why, sizeof why), 0);
    assert_non_null(strstr(why, "wire type 3"));
    const uint8_t trunc[] = {0x10, 0x80};
    assert_int_not_equal(rpc_wire_check(sr, trunc, sizeof trunc, why, sizeof why), 0);
    const uint8_t past[] = {0x0a, 0x05, 0x01};
    assert_int_not_equal(rpc_wire_check(sr, past, sizeof past, why, sizeof why), 0);
    assert_non_null(strstr(why, "past the end"));
    /* an unknown field with a valid number is skipped (forward compatibility) */
    const uint8_t unk[] = {0xf8, 0x01, 0x05, 0x82, 0x02, 0x02, 'h', 'i'};
    assert_int_equal(rpc_wire_check(sr, unk, sizeof unk, why, sizeof why), 0);
    /* an empty message is valid */
    assert_int_equal(rpc_wire_check(sr, NULL, 0, why, sizeof why), 0);
    /* a key "lr\0x" in SetRequest.settings[].key */
    const uint8_t key[] = {0x0a, 0x06, 0x0a, 0x04, 'l', 'r', 0, 'x'};
    assert_int_not_equal(
        rpc_wire_check(&cohort__v1__set_request__descriptor, key, sizeof key, why, sizeof why), 0);
    assert_non_null(strstr(why, "holds a NUL byte"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_group_roundtrip),
        cmocka_unit_test(test_weight_chunk_1mib),
        cmocka_unit_test(test_step_metrics_roundtrip),
        cmocka_unit_test(test_health_roundtrip),
        cmocka_unit_test(test_other_requests_roundtrip),
        cmocka_unit_test(test_truncated_refused),
        cmocka_unit_test(test_garbage_refused),
        cmocka_unit_test(test_wire_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
