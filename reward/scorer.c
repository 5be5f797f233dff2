/* scorer.c - weighted reward components per item (see scorer.h). */
#include "scorer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codeverify.h"
#include "mathverify.h"
#include "rm.h"
#include "tasks.h"

#define MAX_VERIFIERS 32
#define MAX_ENDPOINTS SCORER_MAX_ENDPOINTS
#define MAX_IN_FLIGHT_MAX 64
#define TOKEN_MAX 4096
#define MAX_BUILTIN 4

typedef struct verifier {
    char name[SCORER_NAME_MAX - 16]; /* room for the "verifier:" prefix */
    char task[64];
    double weight;
    int timeout_ms;
    int n_endpoints, next;
    char endpoints[MAX_ENDPOINTS][256];
    scorer_verifier_stats st;
    char *token, *tls_ca_file, *tls_server_name; /* malloc'd or NULL */
    scorer_verifier_config cfg;                  /* points into this struct */
} verifier;

struct scorer {
    double w_correct, w_format;
    double w_length, length_per_char;
    int length_max_chars;
    double w_rm;
    rm_model *rm;
    int n_verifiers;
    verifier v[MAX_VERIFIERS];
    task *builtin[MAX_BUILTIN];
    task_config task_cfg;
    scorer_remote_fn remote;
    void *remote_ctx;
    int health_check_ms, default_timeout_ms;
    const scorer_verdict *verdicts; /* set during scorer_score_verdicts only */
    codev *code; /* task "code": made from the config's "code", or on first use */
};

static const char *const builtin_names[MAX_BUILTIN] = {"addition", "countdown", "reverse", "sort"};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---- configuration --------------------------------------------------------------------- */

static int get_number(const cJSON *o, const char *key, double lo, double hi, double *v,
                      coh_err *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it)
        return COH_OK;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < lo ||
        it->valuedouble > hi)
        return coh_fail(err, COH_EINVAL,
                        "reward config: \"%s\" must be a number in [%g, %g]", key, lo, hi);
    *v = it->valuedouble;
    return COH_OK;
}

static const char *const verifier_keys[] = {
    "name", "task", "endpoints", "weight", "timeout_ms", "max_in_flight",
    "token_file", "token_env", "tls_ca_file", "tls_server_name"};

/* A copy of a string member, or NULL when absent; COH_EINVAL when present but not a
 * non-empty string. */
static int get_string(const cJSON *o, const char *key, int idx, char **out, coh_err *err)
{
    *out = NULL;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it)
        return COH_OK;
    if (!cJSON_IsString(it) || !it->valuestring[0])
        return coh_fail(err, COH_EINVAL,
                        "reward config: verifiers[%d].%s must be a non-empty string", idx, key);
    if (!(*out = strdup(it->valuestring)))
        return coh_fail(err, COH_ENOMEM, "out of memory");
    return COH_OK;
}

/* The token of a verifier: from a file (trailing white space dropped) or a variable. */
static int load_token(verifier *v, const cJSON *o, int idx, coh_err *err)
{
    char *file = NULL, *env = NULL;
    int rc = get_string(o, "token_file", idx, &file, err);
    if (!rc)
        rc = get_string(o, "token_env", idx, &env, err);
    if (!rc && file && env)
        rc = coh_fail(err, COH_EINVAL,
                      "reward config: verifiers[%d] (%s) has both \"token_file\" and "
                      "\"token_env\": give one",
                      idx, v->name);
    if (!rc && file) {
        FILE *f = fopen(file, "rb");
        char buf[TOKEN_MAX + 1];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (!f)
            rc = coh_fail(err, COH_EIO, "reward config: verifiers[%d] (%s) \"token_file\": "
                          "cannot read %s", idx, v->name, file);
        else if (n > TOKEN_MAX)
            rc = coh_fail(err, COH_EINVAL, "reward config: verifiers[%d] (%s) \"token_file\": "
                          "%s is longer than %d bytes", idx, v->name, file, TOKEN_MAX);
        if (f)
            fclose(f);
        while (!rc && n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                                buf[n - 1] == '\t'))
            n--;
        if (!rc && n == 0)
            rc = coh_fail(err, COH_EINVAL,
                          "reward config: verifiers[%d] (%s) \"token_file\": %s is empty", idx,
                          v->name, file);
        if (!rc) {
            buf[n] = '\0';
            if (strpbrk(buf, "\r\n"))
                rc = coh_fail(err, COH_EINVAL, "reward config: verifiers[%d] (%s) "
                              "\"token_file\": %s holds more than one line", idx, v->name, file);
            else if (!(v->token = strdup(buf)))
                rc = coh_fail(err, COH_ENOMEM, "out of memory");
        }
    }
    if (!rc && env) {
        const char *val = getenv(env);
        if (!val || !val[0])
            rc = coh_fail(err, COH_EINVAL,
                          "reward config: verifiers[%d] (%s) \"token_env\": the environment "
                          "variable %s is not set or empty",
                          idx, v->name, env);
        else if (!(v->token = strdup(val)))
            rc = coh_fail(err, COH_ENOMEM, "out of memory");
    }
    free(file);
    free(env);
    return rc;
}

static void verifier_free(verifier *v)
{
    free(v->token);
    free(v->tls_ca_file);
    free(v->tls_server_name);
    v->token = v->tls_ca_file = v->tls_server_name = NULL;
}

static int parse_verifier(scorer *s, const cJSON *o, int idx, coh_err *err)
{
    if (s->n_verifiers >= MAX_VERIFIERS)
        return coh_fail(err, COH_ERANGE, "reward config: at most %d verifiers", MAX_VERIFIERS);
    if (!cJSON_IsObject(o))
        return coh_fail(err, COH_EINVAL, "reward config: verifiers[%d] must be an object", idx);
    verifier *v = &s->v[s->n_verifiers];
    memset(v, 0, sizeof *v);
    const cJSON *k;
    cJSON_ArrayForEach(k, o)
    {
        size_t i = 0;
        while (i < sizeof verifier_keys / sizeof *verifier_keys &&
               strcmp(k->string, verifier_keys[i]) != 0)
            i++;
        if (i == sizeof verifier_keys / sizeof *verifier_keys)
            return coh_fail(err, COH_EINVAL,
                            "reward config: verifiers[%d] has an unknown key \"%.64s\"%s (known: "
                            "name, task, endpoints, weight, timeout_ms, max_in_flight, "
                            "token_file, token_env, tls_ca_file, tls_server_name)",
                            idx, k->string,
                            strcmp(k->string, "token") == 0
                                ? " (a token never goes in the config: use \"token_file\" or "
                                  "\"token_env\")"
                                : "");
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *taskj = cJSON_GetObjectItemCaseSensitive(o, "task");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(o, "endpoints");
    if (!cJSON_IsString(taskj) || !taskj->valuestring[0])
        return coh_fail(err, COH_EINVAL,
                        "reward config: verifiers[%d] needs \"task\" (the task name it scores)",
                        idx);
    if (name && (!cJSON_IsString(name) || !name->valuestring[0]))
        return coh_fail(err, COH_EINVAL,
                        "reward config: verifiers[%d].name must be a non-empty string", idx);
    if (!cJSON_IsArray(eps) || cJSON_GetArraySize(eps) < 1 ||
        cJSON_GetArraySize(eps) > MAX_ENDPOINTS)
        return coh_fail(err, COH_EINVAL,
                        "reward config: verifiers[%d] needs \"endpoints\": 1..%d \"host:port\" "
                        "strings",
                        idx, MAX_ENDPOINTS);
    snprintf(v->task, sizeof v->task, "%s", taskj->valuestring);
    snprintf(v->name, sizeof v->name, "%s",
             cJSON_IsString(name) && name->valuestring[0] ? name->valuestring : taskj->valuestring);
    const cJSON *e;
    cJSON_ArrayForEach(e, eps)
    {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strlen(e->valuestring) >= 256)
            return coh_fail(err, COH_EINVAL,
                            "reward config: verifiers[%d].endpoints holds something that is not "
                            "a \"host:port\" string",
                            idx);
        snprintf(v->endpoints[v->n_endpoints++], 256, "%s", e->valuestring);
    }
    double w = 1.0, t = 2000, mif = 8;
    int rc = get_number(o, "weight", -1e6, 1e6, &w, err);
    if (!rc)
        rc = get_number(o, "timeout_ms", 1, 3600e3, &t, err);
    if (!rc)
        rc = get_number(o, "max_in_flight", 1, MAX_IN_FLIGHT_MAX, &mif, err);
    if (!rc && mif != (double)(int)mif)
        rc = coh_fail(err, COH_EINVAL, "reward config: \"max_in_flight\" must be a whole number");
    if (rc)
        return coh_wrap(err, rc, "verifiers[%d] (%s)", idx, v->name);
    rc = load_token(v, o, idx, err);
    if (!rc)
        rc = get_string(o, "tls_ca_file", idx, &v->tls_ca_file, err);
    if (!rc)
        rc = get_string(o, "tls_server_name", idx, &v->tls_server_name, err);
    if (!rc && v->tls_ca_file) {
        FILE *f = fopen(v->tls_ca_file, "rb");
        if (!f)
            rc = coh_fail(err, COH_EIO,
                          "reward config: verifiers[%d] (%s) \"tls_ca_file\": cannot read %s",
                          idx, v->name, v->tls_ca_file);
        else
            fclose(f);
    }
    if (!rc && v->tls_server_name && !v->tls_ca_file)
        rc = coh_fail(err, COH_EINVAL,
                      "reward config: verifiers[%d] (%s) \"tls_server_name\" needs "
                      "\"tls_ca_file\"",
                      idx, v->name);
    if (rc) {
        verifier_free(v);
        return rc;
    }
    v->weight = w;
    v->timeout_ms = (int)t;
    v->st.name = v->name;
    v->st.task = v->task;
    scorer_verifier_config *c = &v->cfg;
    c->name = v->name;
    c->task = v->task;
    c->weight = w;
    c->timeout_ms = (int)t;
    c->max_in_flight = (int)mif;
    c->n_endpoints = v->n_endpoints;
    for (int i = 0; i < v->n_endpoints; i++)
        c->endpoints[i] = v->endpoints[i];
    c->token = v->token;
    c->tls_ca_file = v->tls_ca_file;
    c->tls_server_name = v->tls_server_name;
    s->n_verifiers++;
    return COH_OK;
}

/* An object's keys must all be known: a misspelt key ("format_wieght") is an error naming it,
 * never a setting silently left at its default. known is a NULL-terminated list; list is
 * the same names for the message. A non-object is left to the caller's own check. */
static int check_keys(const cJSON *o, const char *where, const char *const *known,
                      const char *list, coh_err *err)
{
    if (!cJSON_IsObject(o))
        return COH_OK;
    const cJSON *k;
    cJSON_ArrayForEach(k, o)
    {
        const char *const *n = known;
        while (*n && strcmp(*n, k->string) != 0)
            n++;
        if (!*n)
            return coh_fail(err, COH_EINVAL, "reward config: %s has an unknown key \"%.64s\" "
                                             "(known: %s)",
                            where, k->string, list);
    }
    return COH_OK;
}

static int parse_config(scorer *s, const char *text, coh_err *err)
{
    cJSON *root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return coh_fail(err, COH_EFORMAT, "reward config is not a JSON object");
    }
    static const char *const k_root[] = {"correctness_weight", "format_weight", "length_penalty",
                                         "reward_model", "verifiers", "health_check_ms",
                                         "default_timeout_ms", "tasks", "code", NULL};
    static const char *const k_lp[] = {"weight", "max_chars", "per_char", NULL};
    static const char *const k_rm[] = {"path", "weight", NULL};
    static const char *const k_tasks[] = {"addition", NULL};
    static const char *const k_add[] = {"digits", NULL};
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(root, "tasks");
    int rc = check_keys(root, "the top level", k_root,
                        "correctness_weight, format_weight, length_penalty, reward_model, "
                        "verifiers, health_check_ms, default_timeout_ms, tasks, code",
                        err);
    if (!rc)
        rc = check_keys(cJSON_GetObjectItemCaseSensitive(root, "length_penalty"),
                        "length_penalty", k_lp, "weight, max_chars, per_char", err);
    if (!rc)
        rc = check_keys(cJSON_GetObjectItemCaseSensitive(root, "reward_model"), "reward_model",
                        k_rm, "path, weight", err);
    if (!rc)
        rc = check_keys(tk, "tasks", k_tasks, "addition", err);
    if (!rc && tk)
        rc = check_keys(cJSON_GetObjectItemCaseSensitive(tk, "addition"), "tasks.addition",
                        k_add, "digits", err);
    if (rc) {
        cJSON_Delete(root);
        return rc;
    }
    rc = get_number(root, "correctness_weight", -1e6, 1e6, &s->w_correct, err);
    if (!rc)
        rc = get_number(root, "format_weight", -1e6, 1e6, &s->w_format, err);
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "length_penalty");
    if (!rc && lp) {
        double maxc = 32, w = 1.0, per = 0.01;
        rc = get_number(lp, "weight", -1e6, 1e6, &w, err);
        if (!rc)
            rc = get_number(lp, "max_chars", 0, 1e6, &maxc, err);
        if (!rc)
            rc = get_number(lp, "per_char", 0, 1e6, &per, err);
        s->w_length = w;
        s->length_max_chars = (int)maxc;
        s->length_per_char = per;
    }
    const cJSON *rmj = cJSON_GetObjectItemCaseSensitive(root, "reward_model");
    if (!rc && rmj) {
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(rmj, "path");
        double w = 1.0;
        if (!cJSON_IsString(path))
            rc = coh_fail(err, COH_EINVAL, "reward config: reward_model needs \"path\"");
        if (!rc)
            rc = get_number(rmj, "weight", -1e6, 1e6, &w, err);
        if (!rc && (rc = rm_load(path->valuestring, &s->rm, err)) != COH_OK)
            coh_wrap(err, rc, "reward config: reward_model");
        s->w_rm = w;
    }
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(root, "verifiers");
    if (!rc && vs) {
        if (!cJSON_IsArray(vs))
            rc = coh_fail(err, COH_EINVAL, "reward config: \"verifiers\" must be a list");
        int i = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, vs)
        {
            if (rc)
                break;
            rc = parse_verifier(s, v, i++, err);
        }
    }
    double hc = s->health_check_ms, dt = s->default_timeout_ms;
    if (!rc)
        rc = get_number(root, "health_check_ms", 0, 3600e3, &hc, err);
    if (!rc)
        rc = get_number(root, "default_timeout_ms", 1, 600e3, &dt, err);
    s->health_check_ms = (int)hc;
    s->default_timeout_ms = (int)dt;
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(root, "tasks");
    const cJSON *add = tasks ? cJSON_GetObjectItemCaseSensitive(tasks, "addition") : NULL;
    if (!rc && add) {
        double d = s->task_cfg.digits;
        rc = get_number(add, "digits", 1, 9, &d, err);
        s->task_cfg.digits = (int)d;
    }
    cJSON_Delete(root);
    return rc;
}

int scorer_create(const char *config_json, scorer_remote_fn remote, void *remote_ctx,
                  scorer **out, coh_err *err)
{
    *out = NULL;
    scorer *s = calloc(1, sizeof *s);
    if (!s)
        return coh_fail(err, COH_ENOMEM, "out of memory for the scorer");
    s->w_correct = 1.0;
    s->task_cfg = task_config_default();
    s->remote = remote;
    s->remote_ctx = remote_ctx;
    s->health_check_ms = 2000;
    s->default_timeout_ms = 5000;
    int rc = config_json ? parse_config(s, config_json, err) : COH_OK;
    if (!rc)
        rc = codev_create_from_config(config_json, &s->code, err);
    if (!rc && s->n_verifiers > 0 && !remote)
        rc = coh_fail(err, COH_EINVAL, "verifiers are configured but no way to call them");
    if (rc) {
        scorer_destroy(s);
        return rc;
    }
    *out = s;
    return COH_OK;
}

void scorer_destroy(scorer *s)
{
    if (!s)
        return;
    rm_destroy(s->rm);
    codev_destroy(s->code);
    for (int i = 0; i < MAX_BUILTIN; i++)
        task_destroy(s->builtin[i]);
    for (int i = 0; i < s->n_verifiers; i++)
        verifier_free(&s->v[i]);
    free(s);
}

int scorer_num_verifiers(const scorer *s) { return s->n_verifiers; }

void scorer_get_verifier_stats(const scorer *s, int i, scorer_verifier_stats *out)
{
    *out = s->v[i].st;
}

const scorer_verifier_config *scorer_verifier(const scorer *s, int i) { return &s->v[i].cfg; }

int scorer_routes(const scorer *s, const char *task_name, int *idx, int max)
{
    int n = 0;
    for (int i = 0; i < s->n_verifiers; i++)
        if (strcmp(s->v[i].task, task_name) == 0) {
            if (n < max)
                idx[n] = i;
            n++;
        }
    return n;
}

int scorer_health_check_ms(const scorer *s) { return s->health_check_ms; }
int scorer_default_timeout_ms(const scorer *s) { return s->default_timeout_ms; }

/* ---- scoring ------------------------------------------------------------------------------- */

static void add_component(scorer_result *r, const char *name, double value, double weight)
{
    if (r->n_components >= SCORER_MAX_COMPONENTS)
        return;
    scorer_component *c = &r->comp[r->n_components++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->value = value;
    c->weight = weight;
    r->reward += value * weight;
}

static void fail_item(scorer_result *r, score_status st, const char *fmt, const char *a,
                      const char *b)
{
    r->status = st;
    r->reward = 0.0;
    snprintf(r->detail, sizeof r->detail, fmt, a, b);
}

/* One verifier: try its endpoints in turn until one answers or the deadline passes. */
static int use_verdict(scorer *s, verifier *v, const scorer_verdict *vd, scorer_result *r)
{
    v->st.calls++;
    if (vd->status == SCORE_OK && isfinite(vd->reply.score)) {
        v->st.ok++;
        char cname[SCORER_NAME_MAX];
        snprintf(cname, sizeof cname, "verifier:%s", v->name);
        add_component(r, cname, vd->reply.score, v->weight);
        if (vd->reply.details[0] && !r->detail[0])
            snprintf(r->detail, sizeof r->detail, "%.40s: %.200s", v->name, vd->reply.details);
        return 0;
    }
    if (vd->status == SCORE_OK) {
        v->st.failed++;
        fail_item(r, SCORE_FAILED, "verifier %s returned a non-finite score: %.200s", v->name,
                  vd->reply.details);
    } else {
        if (vd->status == SCORE_TIMED_OUT)
            v->st.timed_out++;
        else
            v->st.failed++;
        fail_item(r, vd->status, "verifier %s %.200s", v->name, vd->error);
    }
    (void)s;
    return -1;
}

static int call_verifier(scorer *s, verifier *v, const scorer_item *item, scorer_result *r)
{
    if (s->verdicts)
        return use_verdict(s, v, &s->verdicts[v - s->v], r);
    double t0 = now_ms();
    v->st.calls++;
    coh_err err;
    coh_err_clear(&err);
    int timed_out = 0, answered = 0, unknown = 0;
    scorer_remote_reply reply;
    for (int tries = 0; tries < v->n_endpoints; tries++) {
        int left = v->timeout_ms - (int)(now_ms() - t0);
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        const char *ep = v->endpoints[v->next];
        v->next = (v->next + 1) % v->n_endpoints;
        int to = 0, unavailable = 0;
        memset(&reply, 0, sizeof reply);
        int rc = s->remote(s->remote_ctx, ep, item, left, &reply, &to, &unavailable, &unknown,
                           &err);
        if (rc == COH_OK) {
            answered = 1;
            break;
        }
        if (to) {
            timed_out = 1;
            break;
        }
        if (!unavailable)
            break; /* the verifier answered with an error: no point asking another copy */
    }
    double dt = now_ms() - t0;
    v->st.latency_ms_sum += dt;
    if (dt > v->st.latency_ms_max)
        v->st.latency_ms_max = dt;
    if (answered && !isfinite(reply.score)) {
        answered = 0;
        snprintf(err.msg, sizeof err.msg, "it returned a non-finite score");
    }
    if (answered) {
        v->st.ok++;
        char cname[SCORER_NAME_MAX];
        snprintf(cname, sizeof cname, "verifier:%s", v->name);
        add_component(r, cname, reply.score, v->weight);
        if (reply.details[0] && !r->detail[0])
            snprintf(r->detail, sizeof r->detail, "%.40s: %.200s", v->name, reply.details);
        return 0;
    }
    if (unknown) {
        v->st.failed++;
        fail_item(r, SCORE_UNKNOWN_TASK, "verifier %s does not serve this task: %.200s", v->name,
                  err.msg);
    } else if (timed_out) {
        v->st.timed_out++;
        char ms[32];
        snprintf(ms, sizeof ms, "%d", v->timeout_ms);
        fail_item(r, SCORE_TIMED_OUT, "verifier %s gave no answer within %s ms", v->name, ms);
    } else {
        v->st.failed++;
        fail_item(r, SCORE_FAILED, "verifier %s failed: %.200s", v->name, err.msg);
    }
    return -1;
}

/* The verifier-only task "math" (mathverify.h): the reference is the item's answer, or
 * else its metadata's "answer" (a string or a number). The verifier reads any length of
 * prompt and completion, so nothing goes through task_item's fixed-size fields. */
static void score_math(scorer *s, const scorer_item *item, scorer_result *r)
{
    char *printed = NULL;
    cJSON *meta = NULL;
    const char *ref = item->answer ? item->answer : "";
    if (!ref[0] && item->metadata_json && item->metadata_json[0]) {
        meta = cJSON_Parse(item->metadata_json);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(meta, "answer");
        if (cJSON_IsString(a))
            ref = a->valuestring;
        else if (cJSON_IsNumber(a) && (printed = cJSON_PrintUnformatted(a)) != NULL)
            ref = printed;
    }
    mathv_score sc;
    coh_err e2;
    if (mathv_verify(item->completion, ref, &sc, &e2)) {
        fail_item(r, SCORE_FAILED, "task math: %.200s%s", e2.msg, "");
    } else {
        add_component(r, "correct", sc.correct, s->w_correct);
        if (s->w_format != 0.0)
            add_component(r, "format", sc.format, s->w_format);
        snprintf(r->detail, sizeof r->detail, "%s", sc.detail);
    }
    free(printed);
    cJSON_Delete(meta);
}

/* The verifier-only task "code" (codeverify.h): the program against the metadata's tests in
 * a sandbox; no free sandbox before the deadline -> TIMED_OUT, unusable metadata -> FAILED. */
static void score_code(scorer *s, const scorer_item *item, scorer_result *r)
{
    codev_result cr;
    coh_err e2;
    int rc = s->code ? COH_OK : codev_create(NULL, &s->code, &e2);
    if (!rc)
        rc = codev_verify(s->code, item->completion, item->metadata_json,
                          item->timeout_ms > 0 ? item->timeout_ms : 0, &cr, &e2);
    if (rc) {
        fail_item(r, rc == COH_EFULL ? SCORE_TIMED_OUT : SCORE_FAILED, "task code: %.200s%s",
                  e2.msg, "");
        return;
    }
    add_component(r, "correct", cr.score, s->w_correct);
    if (s->w_format != 0.0)
        add_component(r, "format", cr.format, s->w_format);
    snprintf(r->detail, sizeof r->detail, "%s", cr.detail);
}

static task *builtin_task(scorer *s, const char *name)
{
    for (int i = 0; i < MAX_BUILTIN; i++)
        if (strcmp(name, builtin_names[i]) == 0) {
            if (!s->builtin[i]) {
                task_config c = s->task_cfg;
                c.eval_size = 1; /* the reward service never evaluates */
                if (task_create(name, &c, &s->builtin[i], NULL))
                    return NULL;
            }
            return s->builtin[i];
        }
    return NULL;
}

int scorer_score(scorer *s, const scorer_item *item, scorer_result *r, coh_err *err)
{
    memset(r, 0, sizeof *r);
    if (!item || !item->task || !item->prompt || !item->completion)
        return coh_fail(err, COH_EINVAL, "scorer_score: an item needs task, prompt, completion");
    double t0 = now_ms();
    r->status = SCORE_OK;
    int routed = 0;
    for (int i = 0; i < s->n_verifiers && r->status == SCORE_OK; i++)
        if (strcmp(s->v[i].task, item->task) == 0) {
            routed = 1;
            call_verifier(s, &s->v[i], item, r);
        }
    if (!routed && strcmp(item->task, "math") == 0) {
        score_math(s, item, r);
    } else if (!routed && strcmp(item->task, "code") == 0) {
        score_code(s, item, r);
    } else if (!routed) {
        task *t = builtin_task(s, item->task);
        if (!t) {
            fail_item(r, SCORE_UNKNOWN_TASK,
                      "no verifier serves task \"%.64s\"%s; route it to a Verifier service in "
                      "the reward config",
                      item->task, "");
        } else {
            task_item ti;
            memset(&ti, 0, sizeof ti);
            const char *answer = item->answer ? item->answer : "";
            const char *meta = item->metadata_json ? item->metadata_json : "";
            if (strlen(item->prompt) >= sizeof ti.prompt || strlen(answer) >= sizeof ti.answer ||
                strlen(meta) >= sizeof ti.meta) {
                fail_item(r, SCORE_FAILED, "item of task %s is too long for its built-in "
                          "verifier%s", item->task, "");
            } else {
                strcpy(ti.prompt, item->prompt);
                strcpy(ti.answer, answer);
                strcpy(ti.meta, meta);
                task_score sc;
                coh_err e2;
                if (task_verify(t, &ti, item->completion, &sc, &e2)) {
                    fail_item(r, SCORE_FAILED, "task %s: %.200s", item->task, e2.msg);
                } else {
                    add_component(r, "correct", sc.correct, s->w_correct);
                    if (s->w_format != 0.0)
                        add_component(r, "format", sc.format, s->w_format);
                    snprintf(r->detail, sizeof r->detail, "%s", sc.detail);
                }
            }
        }
    }
    if (r->status == SCORE_OK && s->w_length != 0.0) {
        size_t n = strlen(item->completion);
        double over = n > (size_t)s->length_max_chars ? (double)(n - (size_t)s->length_max_chars) : 0;
        add_component(r, "length", -s->length_per_char * over, s->w_length);
    }
    if (r->status == SCORE_OK && s->rm) {
        double v = 0.0;
        coh_err e2;
        if (rm_score_text(s->rm, item->prompt, item->completion, &v, &e2))
            fail_item(r, SCORE_FAILED, "reward model: %.200s%s", e2.msg, "");
        else
            add_component(r, "reward_model", v, s->w_rm);
    }
    if (r->status == SCORE_OK && !isfinite(r->reward)) {
        /* each component was finite, but weighted and summed they overflow (e.g. a verifier's
         * 1.79e308 with weight 2): no reward, never an infinite one */
        char what[96] = "";
        for (int k = 0; k < r->n_components; k++) {
            size_t u = strlen(what);
            snprintf(what + u, sizeof what - u, "%s%s = %.3g", k ? ", " : "", r->comp[k].name,
                     r->comp[k].value);
        }
        fail_item(r, SCORE_FAILED,
                  "weighted sum of the components not finite (%.90s); check the scores "
                  "and weights%s",
                  what, "");
    }
    if (r->status != SCORE_OK) {
        r->reward = 0.0;
        r->n_components = 0;
    }
    r->latency_ms = now_ms() - t0;
    return COH_OK;
}

int scorer_score_verdicts(scorer *s, const scorer_item *item, const scorer_verdict *verdicts,
                          scorer_result *out, coh_err *err)
{
    s->verdicts = verdicts;
    int rc = scorer_score(s, item, out, err);
    s->verdicts = NULL;
    return rc;
}
