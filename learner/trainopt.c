/* trainopt.c - the option table of a training run and everything derived from it (see
 * trainopt.h). */
#include "trainopt.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fsutil.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "stops.h"
#include "tasks.h"

/* ---- the table ------------------------------------------------------------------------- */

typedef enum { CH_NONE, CH_TASK, CH_ESTIMATOR, CH_AGGREGATION, CH_SCHEDULE } choice_id;

enum {
    F_RUN = 1,      /* how/where this process runs: the command line wins over a checkpoint */
    F_EMPTY_OK = 2, /* string/path: "" is a value (none) */
};

typedef struct entry {
    const char *name;  /* flag without dashes */
    topt_kind kind;
    size_t off, size;  /* the trainer_config field */
    double lo, hi;     /* numeric range */
    int lo_open, hi_open;
    choice_id choice;
    unsigned bins;     /* TOPT_TRAIN | TOPT_LEARNER */
    unsigned flags;    /* F_* */
    const char *key;   /* record key when it is not the name with '_' */
    const char *meta;  /* value placeholder in --help */
    const char *help;
} entry;

static const char *const TASK_NAMES[] = {"addition", "countdown", "reverse", "sort", NULL};
static const char *const ESTIMATOR_NAMES[] = {"grpo", "drgrpo", "rloo", "reinforce",
                                              "reinforce_pp", NULL};
static const char *const AGGREGATION_NAMES[] = {"token_mean", "seq_mean_token_mean",
                                                "constant", NULL};
static const char *const SCHEDULE_NAMES[] = {"constant", "linear", "cosine", NULL};

#define FIELD(f) .off = offsetof(trainer_config, f), .size = sizeof(((trainer_config *)0)->f)
#define STEPS_MAX 100000000.0 /* step counts and intervals: 10^8 */

#define E_INT(nm, f, l, h, fl, mt, hp)                                                     \
    {.name = nm, .kind = TOPT_INT, FIELD(f), .lo = l, .hi = h, .bins = TOPT_ALL,            \
     .flags = fl, .meta = mt, .help = hp}
#define E_FLOAT(nm, f, l, lopen, h, hopen, fl, mt, hp)                                     \
    {.name = nm, .kind = TOPT_FLOAT, FIELD(f), .lo = l, .hi = h, .lo_open = lopen,          \
     .hi_open = hopen, .bins = TOPT_ALL, .flags = fl, .meta = mt, .help = hp}
#define E_CHOICE(nm, f, ch, ky, hp)                                                        \
    {.name = nm, .kind = TOPT_CHOICE, FIELD(f), .choice = ch, .bins = TOPT_ALL, .key = ky,  \
     .meta = "NAME", .help = hp}
#define E_FLAG(nm, f, fl, hp)                                                              \
    {.name = nm, .kind = TOPT_FLAG, FIELD(f), .bins = TOPT_ALL, .flags = fl, .help = hp}

static const entry T[] = {
    /* the run */
    {.name = "config", .kind = TOPT_CONFIG, .bins = TOPT_ALL, .meta = "FILE",
     .help = "JSON object of settings (keys as these flags); flags override it"},
    {.name = "out", .kind = TOPT_PATH, FIELD(out_dir), .bins = TOPT_ALL, .flags = F_RUN,
     .meta = "DIR", .help = "run folder: metrics.jsonl, checkpoints/, reference/"},
    E_CHOICE("task", task, CH_TASK, NULL, "built-in task"),
    E_INT("digits", task_cfg.digits, 1, 9, 0, "N", "addition: operand digits"),
    E_INT("numbers", task_cfg.n_numbers, 2, 8, 0, "N", "countdown: numbers given"),
    E_INT("max-number", task_cfg.max_number, 1, 1000, 0, "N",
          "countdown: numbers drawn from 1..N"),
    E_INT("max-target", task_cfg.max_target, 1, 100000, 0, "N", "countdown: targets 1..N"),
    E_INT("min-len", task_cfg.min_len, 1, 32, 0, "N", "reverse/sort: shortest string"),
    E_INT("max-len", task_cfg.max_len, 1, 32, 0, "N", "reverse/sort: longest string"),
    {.name = "prompts-file", .kind = TOPT_PATH, FIELD(prompts_file), .bins = TOPT_LEARNER,
     .flags = F_RUN | F_EMPTY_OK, .meta = "FILE",
     .help = "RL prompts from JSON Lines {\"prompt\", \"task\", \"answer\"?, \"metadata\"?}"},
    {.name = "chat-template", .kind = TOPT_PATH, FIELD(chat_template), .bins = TOPT_LEARNER,
     .flags = F_RUN | F_EMPTY_OK, .meta = "FILE",
     .help = "Jinja chat template for prompt files' \"messages\" (default: the policy's "
             "tokenizer_config.json)"},
    {.name = "init", .kind = TOPT_PATH, FIELD(init_from), .bins = TOPT_ALL,
     .flags = F_RUN | F_EMPTY_OK, .meta = "DIR",
     .help = "start from this checkpoint instead of a random policy"},
    {.name = "model-config", .kind = TOPT_MODEL, FIELD(model), .bins = TOPT_ALL, .flags = F_RUN,
     .meta = "FILE", .help = "config.json of the random policy to create"},
    {.name = "seed", .kind = TOPT_U64, FIELD(seed), .lo = 0, .hi = 18446744073709551615.0,
     .bins = TOPT_ALL, .meta = "N", .help = "seed of the policy, the task stream and sampling"},
    /* supervised warm start */
    E_INT("sft-steps", sft_steps, 0, STEPS_MAX, F_RUN, "N", "SFT steps"),
    E_INT("sft-batch", sft_batch, 1, 65536, 0, "N", "demonstrations per SFT step"),
    E_FLOAT("sft-lr", sft_lr, 0, 1, 1, 0, 0, "X", "SFT learning rate"),
    E_INT("sft-warmup", sft_warmup, 0, STEPS_MAX, 0, "N", "SFT warm-up steps"),
    E_INT("sft-demos", sft_demos, 0, 1000000000, 0, "N",
          "SFT cycles through only N demonstrations (0 = unlimited)"),
    E_FLOAT("sft-until", sft_until, 0, 0, 1, 0, 0, "ACC",
            "end SFT once two evaluations in a row reach ACC (0 = off)"),
    /* RAFT */
    E_INT("raft-steps", raft_steps, 0, STEPS_MAX, F_RUN, "N", "RAFT steps"),
    E_FLOAT("raft-threshold", raft_threshold, 0, 0, 1000, 0, 0, "X",
            "RAFT keeps completions with reward >= X"),
    /* RL */
    E_INT("rl-steps", rl_steps, 0, STEPS_MAX, F_RUN, "N", "RL steps"),
    {.name = "prompts", .kind = TOPT_INT, FIELD(prompts_per_step), .lo = 1, .hi = 4096,
     .bins = TOPT_ALL, .key = "prompts_per_step", .meta = "P", .help = "prompts per RL step"},
    E_INT("group-size", group_size, 1, 1024, 0, "G", "completions per prompt"),
    E_FLOAT("rl-lr", rl_lr, 0, 1, 1, 0, 0, "X", "RL learning rate"),
    E_INT("rl-warmup", rl_warmup, 0, STEPS_MAX, 0, "N", "RL warm-up steps"),
    E_CHOICE("estimator", loss.estimator, CH_ESTIMATOR, NULL, "advantage estimator"),
    E_CHOICE("aggregation", loss.aggregation, CH_AGGREGATION, NULL, "loss aggregation"),
    E_FLOAT("eps-low", loss.eps_low, 0, 0, 1, 1, 0, "X", "clip range low side, [0, 1)"),
    E_FLOAT("eps-high", loss.eps_high, 0, 0, 10, 0, 0, "X", "clip range high side"),
    E_FLOAT("beta", loss.beta, 0, 0, 100, 0, 0, "X",
            "k3-KL weight (0 = no reference policy kept)"),
    E_FLOAT("entropy-coef", loss.entropy_coef, 0, 0, 1, 0, 0, "X", "entropy bonus weight"),
    E_FLOAT("temperature", loss.temperature, 0, 1, 10, 0, 0, "X",
            "sampling temperature (the loss uses the same)"),
    E_INT("top-k", sampling.top_k, 0, 1048576, 0, "K", "sample from the K likeliest (0 = off)"),
    E_FLOAT("top-p", sampling.top_p, 0, 1, 1, 0, 0, "P", "nucleus sampling (1 = off)"),
    E_INT("max-new-tokens", sampling.max_new_tokens, 1, 65536, 0, "N",
          "tokens per completion at most"),
    {.name = "stop", .kind = TOPT_STRLIST, FIELD(stop), .bins = TOPT_ALL, .meta = "TEXT",
     .help = "end a completion after the token that completes TEXT (repeatable: at most 8, "
             "1..64 bytes of UTF-8 each)"},
    E_FLAG("drop-zero-signal", loss.drop_zero_signal, 0,
           "drop groups whose rewards are all equal (dynamic sampling)"),
    E_FLOAT("format-weight", format_weight, 0, 0, 100, 0, 0, "X",
            "reward = correct + X * format"),
    /* AdamW */
    E_FLOAT("weight-decay", optim.weight_decay, 0, 0, 10, 0, 0, "X", "AdamW weight decay"),
    E_FLOAT("grad-clip", optim.grad_clip, 0, 0, 1e6, 0, 0, "X",
            "global gradient-norm clip (0 = off)"),
    E_FLOAT("adam-beta1", optim.beta1, 0, 0, 1, 1, 0, "X", "AdamW beta1"),
    E_FLOAT("adam-beta2", optim.beta2, 0, 0, 1, 1, 0, "X", "AdamW beta2"),
    E_FLOAT("adam-eps", optim.eps, 0, 1, 1, 0, 0, "X", "AdamW epsilon"),
    E_CHOICE("schedule", optim.schedule, CH_SCHEDULE, "lr_schedule",
             "learning-rate schedule after warm-up"),
    E_FLOAT("min-lr-ratio", optim.min_lr_ratio, 0, 0, 1, 0, 0, "X",
            "floor of the decaying schedules, as a fraction of the peak"),
    /* evaluation, checkpoints, output */
    E_INT("eval-every", eval_every, 0, STEPS_MAX, F_RUN, "N",
          "evaluate every N steps and at phase ends (0 = never)"),
    E_INT("eval-size", eval_size, 1, TASK_EVAL_MAX, F_RUN, "N", "held-out prompts per evaluation"),
    E_INT("ckpt-every", ckpt_every, 0, STEPS_MAX, F_RUN, "N",
          "checkpoint every N steps (0 = only at the end)"),
    E_INT("log-every", log_every_sft, 0, STEPS_MAX, F_RUN, "N", "progress line every N SFT steps"),
    E_FLAG("quiet", quiet, F_RUN, "no progress lines"),
};

#define N_ENTRIES ((int)(sizeof T / sizeof T[0]))

int topt_count(void) { return N_ENTRIES; }

static const entry *at(int index)
{
    return index >= 0 && index < N_ENTRIES ? &T[index] : NULL;
}

const char *topt_name(int index) { return at(index) ? T[index].name : NULL; }
topt_kind topt_kind_of(int index) { return at(index) ? T[index].kind : TOPT_CONFIG; }
unsigned topt_binaries(int index) { return at(index) ? T[index].bins : 0u; }

int topt_range(int index, double *lo, double *hi, int *lo_open, int *hi_open)
{
    const entry *e = at(index);
    if (!e || !(e->kind == TOPT_INT || e->kind == TOPT_LONG || e->kind == TOPT_U64 ||
                e->kind == TOPT_FLOAT))
        return COH_EINVAL;
    *lo = e->lo;
    *hi = e->hi;
    *lo_open = e->lo_open;
    *hi_open = e->hi_open;
    return COH_OK;
}

static const char *const *choice_names(choice_id ch)
{
    switch (ch) {
    case CH_TASK: return TASK_NAMES;
    case CH_ESTIMATOR: return ESTIMATOR_NAMES;
    case CH_AGGREGATION: return AGGREGATION_NAMES;
    case CH_SCHEDULE: return SCHEDULE_NAMES;
    case CH_NONE: break;
    }
    return NULL;
}

const char *const *topt_choices(int index)
{
    const entry *e = at(index);
    return e && e->kind == TOPT_CHOICE ? choice_names(e->choice) : NULL;
}

/* "rl-lr", "rl_lr", "--rl-lr" and the record key all name the same entry. */
static int same_name(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y)
            return 0;
    }
    return *a == *b;
}

int topt_find(const char *name)
{
    if (!name)
        return -1;
    if (name[0] == '-' && name[1] == '-')
        name += 2;
    for (int i = 0; i < N_ENTRIES; i++)
        if (same_name(name, T[i].name) || (T[i].key && same_name(name, T[i].key)))
            return i;
    return -1;
}

int topt_long_options(unsigned mask, struct option *opts, int max, int base)
{
    int n = 0;
    for (int i = 0; i < N_ENTRIES && n < max; i++) {
        if (!(T[i].bins & mask))
            continue;
        opts[n].name = T[i].name;
        opts[n].has_arg = T[i].kind == TOPT_FLAG ? no_argument : required_argument;
        opts[n].flag = NULL;
        opts[n].val = base + i;
        n++;
    }
    return n;
}

/* ---- field access ----------------------------------------------------------------------- */

static void *field(trainer_config *c, const entry *e) { return (char *)c + e->off; }
static const void *cfield(const trainer_config *c, const entry *e)
{
    return (const char *)c + e->off;
}

/* Store choice i of entry e (names come from the table; the module's own parser maps them,
 * so the table never depends on enum order). */
static int store_choice(trainer_config *c, const entry *e, int i, coh_err *err)
{
    const char *name = choice_names(e->choice)[i];
    switch (e->choice) {
    case CH_TASK: snprintf(c->task, sizeof c->task, "%s", name); return COH_OK;
    case CH_ESTIMATOR: return loss_parse_estimator(name, &c->loss.estimator, err);
    case CH_AGGREGATION: return loss_parse_aggregation(name, &c->loss.aggregation, err);
    case CH_SCHEDULE: return optim_parse_schedule(name, &c->optim.schedule, err);
    case CH_NONE: break;
    }
    return coh_fail(err, COH_EINVAL, "--%s: not a choice setting", e->name);
}

static const char *choice_value(const trainer_config *c, const entry *e)
{
    switch (e->choice) {
    case CH_TASK: return c->task;
    case CH_ESTIMATOR: return loss_estimator_name(c->loss.estimator);
    case CH_AGGREGATION: return loss_aggregation_name(c->loss.aggregation);
    case CH_SCHEDULE: return optim_schedule_name(c->optim.schedule);
    case CH_NONE: break;
    }
    return "";
}

/* Set entry e of c from text; `shown` names it in messages ("--beta" or "\"beta\""). */
static int apply_text(trainer_config *c, const entry *e, const char *shown, const char *arg,
                      coh_err *err)
{
    int rc;
    switch (e->kind) {
    case TOPT_INT: {
        int v;
        if ((rc = cli_parse_int(shown, arg, (int)e->lo, (int)e->hi, &v, err)))
            return rc;
        memcpy(field(c, e), &v, sizeof v);
        return COH_OK;
    }
    case TOPT_LONG: {
        long v;
        if ((rc = cli_parse_long(shown, arg, (long)e->lo, (long)e->hi, &v, err)))
            return rc;
        memcpy(field(c, e), &v, sizeof v);
        return COH_OK;
    }
    case TOPT_U64: {
        uint64_t v;
        if ((rc = cli_parse_u64(shown, arg, 0, UINT64_MAX, &v, err)))
            return rc;
        memcpy(field(c, e), &v, sizeof v);
        return COH_OK;
    }
    case TOPT_FLOAT: {
        float v;
        if ((rc = cli_parse_float(shown, arg, e->lo, e->hi, e->lo_open, e->hi_open, &v, err)))
            return rc;
        memcpy(field(c, e), &v, sizeof v);
        return COH_OK;
    }
    case TOPT_CHOICE: {
        int i;
        if ((rc = cli_parse_choice(shown, arg, choice_names(e->choice), &i, err)))
            return rc;
        return store_choice(c, e, i, err);
    }
    case TOPT_STRING:
    case TOPT_PATH: {
        size_t n = arg ? strlen(arg) : 0;
        if (!arg || (n == 0 && !(e->flags & F_EMPTY_OK)))
            return coh_fail(err, COH_EINVAL, "%s: no %s given", shown,
                            e->kind == TOPT_PATH ? "file or folder name" : "value");
        if (n >= e->size)
            return coh_fail(err, COH_ERANGE, "%s: '%.48s...' is too long (at most %zu characters)",
                            shown, arg, e->size - 1);
        memcpy(field(c, e), arg, n + 1);
        return COH_OK;
    }
    case TOPT_STRLIST:
        if ((rc = stops_add(field(c, e), arg, err)))
            return coh_wrap(err, rc, "%s", shown);
        return COH_OK;
    case TOPT_FLAG: {
        int one = 1;
        memcpy(field(c, e), &one, sizeof one);
        return COH_OK;
    }
    case TOPT_MODEL: {
        if (!arg || !*arg)
            return coh_fail(err, COH_EINVAL, "%s: no config.json file given", shown);
        model_config m;
        if ((rc = model_config_load(arg, &m, err)))
            return coh_wrap(err, rc, "%s %s", shown, arg);
        c->model = m;
        c->model_from_config = 1;
        return COH_OK;
    }
    case TOPT_CONFIG:
        if (!arg || !*arg)
            return coh_fail(err, COH_EINVAL, "%s: no file given", shown);
        return topt_load_file(c, TOPT_ALL, arg, err);
    }
    return coh_fail(err, COH_EINVAL, "%s: unknown kind of option", shown);
}

int topt_apply(trainer_config *c, int index, const char *arg, coh_err *err)
{
    const entry *e = at(index);
    if (!e)
        return coh_fail(err, COH_EINVAL, "topt_apply: no option number %d", index);
    char shown[64];
    snprintf(shown, sizeof shown, "--%s", e->name);
    trainer_config r = *c;
    int rc = apply_text(&r, e, shown, arg, err);
    if (!rc)
        *c = r;
    return rc;
}

static const char *binary_name(unsigned bins)
{
    return bins == TOPT_LEARNER ? "cohort-learner" : bins == TOPT_TRAIN ? "cohort-train" : "";
}

int topt_apply_name(trainer_config *c, unsigned mask, const char *name, const char *arg,
                    coh_err *err)
{
    int i = topt_find(name);
    if (i < 0)
        return coh_fail(err, COH_EINVAL, "unknown setting '%s'; --help lists the settings",
                        name ? name : "");
    if (!(T[i].bins & mask))
        return coh_fail(err, COH_EINVAL, "--%s is a setting of %s only", T[i].name,
                        binary_name(T[i].bins));
    return topt_apply(c, i, arg, err);
}

/* ---- JSON ------------------------------------------------------------------------------ */

static const char *json_type(const cJSON *it)
{
    if (cJSON_IsString(it))
        return "a string";
    if (cJSON_IsNumber(it))
        return "a number";
    if (cJSON_IsBool(it))
        return cJSON_IsTrue(it) ? "true" : "false";
    if (cJSON_IsNull(it))
        return "null";
    if (cJSON_IsArray(it))
        return "an array";
    if (cJSON_IsObject(it))
        return "an object";
    return "an unknown JSON value";
}

static int wrong_type(const char *shown, const char *want, const cJSON *it, coh_err *err)
{
    return coh_fail(err, COH_EINVAL, "%s: expected %s, got %s", shown, want, json_type(it));
}

/* A JSON number as the text a user would have typed: integral values without exponent so
 * that an int setting reports "out of range" rather than "not an integer". */
static void number_text(const cJSON *it, int integral, char *buf, size_t cap)
{
    double v = it->valuedouble;
    if (integral && isfinite(v) && v == floor(v) && fabs(v) < 1e30)
        snprintf(buf, cap, "%.0f", v);
    else
        snprintf(buf, cap, "%.17g", v);
}

static int apply_json(trainer_config *c, const entry *e, const char *shown, const cJSON *it,
                      coh_err *err)
{
    char num[64];
    switch (e->kind) {
    case TOPT_INT:
    case TOPT_LONG:
    case TOPT_U64:
    case TOPT_FLOAT:
        if (cJSON_IsNumber(it)) {
            number_text(it, e->kind != TOPT_FLOAT, num, sizeof num);
            return apply_text(c, e, shown, num, err);
        }
        if (e->kind == TOPT_U64 && cJSON_IsString(it))
            return apply_text(c, e, shown, it->valuestring, err);
        return wrong_type(shown, e->kind == TOPT_U64 ? "a number or a string of digits"
                                                     : "a number",
                          it, err);
    case TOPT_CHOICE:
    case TOPT_STRING:
    case TOPT_PATH:
        if (!cJSON_IsString(it))
            return wrong_type(shown, "a string", it, err);
        return apply_text(c, e, shown, it->valuestring, err);
    case TOPT_STRLIST: {
        if (!cJSON_IsArray(it))
            return wrong_type(shown, "an array of strings", it, err);
        stops_list l;
        memset(&l, 0, sizeof l);
        int i = 0, rc;
        const cJSON *s;
        cJSON_ArrayForEach(s, it)
        {
            char at[128];
            snprintf(at, sizeof at, "%s[%d]", shown, i++);
            if (!cJSON_IsString(s))
                return wrong_type(at, "a string", s, err);
            if (l.n >= STOPS_MAX)
                return coh_fail(err, COH_ERANGE, "%s: more than %d stop strings given", shown,
                                STOPS_MAX);
            if ((rc = stops_add(&l, s->valuestring, err)))
                return coh_wrap(err, rc, "%s", at);
        }
        memcpy(field(c, e), &l, sizeof l);
        return COH_OK;
    }
    case TOPT_FLAG: {
        if (!cJSON_IsBool(it))
            return wrong_type(shown, "true or false", it, err);
        int v = cJSON_IsTrue(it) ? 1 : 0;
        memcpy(field(c, e), &v, sizeof v);
        return COH_OK;
    }
    case TOPT_MODEL: {
        if (cJSON_IsString(it))
            return apply_text(c, e, shown, it->valuestring, err);
        if (!cJSON_IsObject(it))
            return wrong_type(shown, "a config.json path or a config object", it, err);
        char *text = cJSON_PrintUnformatted(it);
        if (!text)
            return coh_fail(err, COH_ENOMEM, "%s: out of memory", shown);
        model_config m;
        int rc = model_config_parse(text, strlen(text), &m, err);
        free(text);
        if (rc)
            return coh_wrap(err, rc, "%s", shown);
        c->model = m;
        c->model_from_config = 1;
        return COH_OK;
    }
    case TOPT_CONFIG:
        return coh_fail(err, COH_EINVAL,
                        "%s: a config file cannot name another config file; put the settings "
                        "in this one",
                        shown);
    }
    return coh_fail(err, COH_EINVAL, "%s: unknown kind of option", shown);
}

static const char *kl_placement(const trainer_config *c)
{
    return c->loss.estimator == EST_REINFORCE_PP ? "reward" : "loss";
}

int topt_from_json(trainer_config *c, unsigned mask, const cJSON *obj, coh_err *err)
{
    if (!cJSON_IsObject(obj))
        return coh_fail(err, COH_EINVAL, "settings must be a JSON object {\"key\": value, ...}");
    trainer_config r = *c;
    unsigned char seen[N_ENTRIES];
    memset(seen, 0, sizeof seen);
    const cJSON *task_it = NULL, *builtin = NULL, *placement = NULL, *kl_est = NULL;
    int task_index = topt_find("task"), rc;
    char shown[96];
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        const char *key = it->string ? it->string : "";
        snprintf(shown, sizeof shown, "\"%.80s\"", key);
        const cJSON **special = strcmp(key, "builtin_task") == 0   ? &builtin
                                : strcmp(key, "kl_placement") == 0 ? &placement
                                : strcmp(key, "kl_estimator") == 0 ? &kl_est
                                                                   : NULL;
        if (special) {
            if (*special)
                return coh_fail(err, COH_EINVAL, "%s is given twice", shown);
            if (!cJSON_IsString(it))
                return wrong_type(shown, "a string", it, err);
            *special = it;
            continue;
        }
        int i = topt_find(key);
        if (i < 0 || (key[0] == '-'))
            return coh_fail(err, COH_EINVAL,
                            "unknown setting %s; the keys are the flag names (\"rl-lr\" or "
                            "\"rl_lr\"), --help lists them",
                            shown);
        if (!(T[i].bins & mask))
            return coh_fail(err, COH_EINVAL, "%s is a setting of %s only", shown,
                            binary_name(T[i].bins));
        if (seen[i]++)
            return coh_fail(err, COH_EINVAL,
                            "%s is given twice (as \"%s\" and another spelling); keep one",
                            shown, T[i].name);
        if (i == task_index) {
            task_it = it;
            continue;
        }
        if ((rc = apply_json(&r, &T[i], shown, it, err)))
            return rc;
    }
    /* "task": "file" (a prompt-file run) with the built-in task in "builtin_task" */
    if (task_it && cJSON_IsString(task_it) && strcmp(task_it->valuestring, "file") == 0) {
        if (!(mask & TOPT_LEARNER))
            return coh_fail(err, COH_EINVAL,
                            "\"task\": \"file\" is a cohort-learner run with --prompts-file; "
                            "cohort-train takes a built-in task (%s)",
                            "addition, countdown, reverse, sort");
        if (!r.prompts_file[0])
            return coh_fail(err, COH_EINVAL,
                            "\"task\": \"file\" needs \"prompts_file\" naming the prompt file");
        if (builtin && (rc = apply_text(&r, &T[task_index], "\"builtin_task\"",
                                        builtin->valuestring, err)))
            return rc;
    } else {
        if (builtin)
            return coh_fail(err, COH_EINVAL,
                            "\"builtin_task\" belongs with \"task\": \"file\"; use \"task\" "
                            "for the built-in task");
        if (task_it && (rc = apply_json(&r, &T[task_index], "\"task\"", task_it, err)))
            return rc;
    }
    if (kl_est && strcmp(kl_est->valuestring, "k3") != 0)
        return coh_fail(err, COH_EINVAL,
                        "\"kl_estimator\": '%.40s' is not supported; Cohort's KL estimator is "
                        "\"k3\"",
                        kl_est->valuestring);
    if (placement && strcmp(placement->valuestring, kl_placement(&r)) != 0)
        return coh_fail(err, COH_EINVAL,
                        "\"kl_placement\": '%.40s' contradicts \"estimator\": \"%s\", whose KL "
                        "enters the %s; drop the key or change the estimator",
                        placement->valuestring, loss_estimator_name(r.loss.estimator),
                        kl_placement(&r));
    *c = r;
    return COH_OK;
}

int topt_load_file(trainer_config *c, unsigned mask, const char *path, coh_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc)
        return coh_wrap(err, rc, "--config %s", path);
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithOpts(text, &end, 1);
    if (!obj) {
        int line = 1;
        for (const char *p = text; end && p < end && *p; p++)
            line += *p == '\n';
        free(text);
        return coh_fail(err, COH_EFORMAT, "--config %s: not valid JSON (error on line %d)", path,
                        line);
    }
    free(text);
    if (!cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        return coh_fail(err, COH_EFORMAT,
                        "--config %s: the file must hold one JSON object of settings, "
                        "{\"rl-lr\": 0.0005, ...}",
                        path);
    }
    rc = topt_from_json(c, mask, obj, err);
    cJSON_Delete(obj);
    if (rc)
        return coh_wrap(err, rc, "--config %s", path);
    return COH_OK;
}

/* The shortest decimal that reads back as the same float (0.0005, not 0.000500000024). */
static double float_for_json(float f)
{
    char buf[48];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f)
            return strtod(buf, NULL);
    }
    return (double)f;
}

static int add_entry_json(cJSON *o, const trainer_config *c, const entry *e)
{
    char key[64];
    const char *k = e->key ? e->key : e->name;
    size_t n = strlen(k);
    if (n >= sizeof key)
        n = sizeof key - 1;
    for (size_t i = 0; i < n; i++)
        key[i] = k[i] == '-' ? '_' : k[i];
    key[n] = '\0';
    cJSON *v = NULL;
    switch (e->kind) {
    case TOPT_INT: {
        int x;
        memcpy(&x, cfield(c, e), sizeof x);
        v = cJSON_CreateNumber(x);
        break;
    }
    case TOPT_LONG: {
        long x;
        memcpy(&x, cfield(c, e), sizeof x);
        v = cJSON_CreateNumber((double)x);
        break;
    }
    case TOPT_U64: {
        uint64_t x;
        memcpy(&x, cfield(c, e), sizeof x);
        if (x <= ((uint64_t)1 << 53)) {
            v = cJSON_CreateNumber((double)x);
        } else { /* a double cannot hold it exactly */
            char digits[32];
            snprintf(digits, sizeof digits, "%llu", (unsigned long long)x);
            v = cJSON_CreateString(digits);
        }
        break;
    }
    case TOPT_FLOAT: {
        float x;
        memcpy(&x, cfield(c, e), sizeof x);
        v = cJSON_CreateNumber(float_for_json(x));
        break;
    }
    case TOPT_CHOICE: v = cJSON_CreateString(choice_value(c, e)); break;
    case TOPT_STRING:
    case TOPT_PATH: {
        char s[1024];
        size_t len = strnlen((const char *)cfield(c, e), e->size);
        if (len >= sizeof s)
            len = sizeof s - 1;
        memcpy(s, cfield(c, e), len);
        s[len] = '\0';
        v = cJSON_CreateString(s);
        break;
    }
    case TOPT_STRLIST: {
        const stops_list *l = cfield(c, e);
        v = cJSON_CreateArray();
        for (int i = 0; v && i < l->n && i < STOPS_MAX; i++) {
            cJSON *s = cJSON_CreateString(l->text[i]);
            if (!s) {
                cJSON_Delete(v);
                v = NULL;
                break;
            }
            cJSON_AddItemToArray(v, s);
        }
        break;
    }
    case TOPT_FLAG: {
        int x;
        memcpy(&x, cfield(c, e), sizeof x);
        v = cJSON_CreateBool(x != 0);
        break;
    }
    case TOPT_MODEL: {
        char *text = NULL;
        if (model_config_to_json(&c->model, &text, NULL) == COH_OK)
            v = cJSON_Parse(text);
        free(text);
        break;
    }
    case TOPT_CONFIG: return 1; /* no field */
    }
    if (!v)
        return 0;
    cJSON_AddItemToObject(o, key, v);
    return 1;
}

cJSON *topt_to_json(const trainer_config *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    int ok = 1;
    for (int i = 0; i < N_ENTRIES && ok; i++) {
        const entry *e = &T[i];
        if (e->kind == TOPT_CHOICE && e->choice == CH_TASK && c->prompts_file[0]) {
            ok = cJSON_AddStringToObject(o, "task", "file") &&
                 cJSON_AddStringToObject(o, "builtin_task", c->task);
            continue;
        }
        if (e->bins == TOPT_LEARNER && e->kind == TOPT_PATH &&
            !((const char *)c + e->off)[0])
            continue; /* a cohort-learner setting: recorded only when set */
        ok = add_entry_json(o, c, e);
        if (ok && e->kind == TOPT_CHOICE && e->choice == CH_ESTIMATOR)
            ok = cJSON_AddStringToObject(o, "kl_estimator", "k3") &&
                 cJSON_AddStringToObject(o, "kl_placement", kl_placement(c));
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int topt_merge_resume(trainer_config *c, const cJSON *recorded, coh_err *err)
{
    trainer_config r = *c;
    int rc = topt_from_json(&r, TOPT_ALL, recorded, err);
    if (rc)
        return rc;
    for (int i = 0; i < N_ENTRIES; i++) {
        const entry *e = &T[i];
        if (!(e->flags & F_RUN) || e->kind == TOPT_CONFIG)
            continue;
        memcpy(field(&r, e), cfield(c, e), e->size);
        if (e->kind == TOPT_MODEL)
            r.model_from_config = c->model_from_config;
    }
    *c = r;
    return COH_OK;
}

/* ---- the command line -------------------------------------------------------------------- */

/* "unknown option '--bta'" and friends, from getopt_long's state after it returned '?'/':'. */
static int getopt_error(int ch, char **argv, const struct option *opts, coh_err *err)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    if (ch == ':') {
        if (optopt > 0 && optopt < 128 && arg[0] == '-' && arg[1] != '-')
            return coh_fail(err, COH_EINVAL, "option '-%c' needs a value", optopt);
        return coh_fail(err, COH_EINVAL, "option '%s' needs a value", arg);
    }
    if (optopt == 0 && arg[0] == '-' && arg[1] == '-') {
        /* getopt_long takes unique abbreviations; name the candidates of an ambiguous one */
        size_t n = strcspn(arg + 2, "="), used = 0;
        char list[200] = "";
        int hits = 0;
        for (const struct option *o = opts; o->name; o++) {
            if (strncmp(o->name, arg + 2, n) != 0)
                continue;
            int w = snprintf(list + used, sizeof list - used, "%s--%s", hits ? ", " : "",
                             o->name);
            if (w > 0 && (size_t)w < sizeof list - used)
                used += (size_t)w;
            hits++;
        }
        if (hits > 1)
            return coh_fail(err, COH_EINVAL, "option '%.*s' is ambiguous: %s", (int)n + 2, arg,
                            list);
    }
    if (optopt == 0)
        return coh_fail(err, COH_EINVAL, "unknown option '%s'; --help lists the options", arg);
    for (const struct option *o = opts; o->name; o++)
        if (o->val == optopt && o->has_arg == no_argument && arg[0] == '-' && arg[1] == '-')
            return coh_fail(err, COH_EINVAL, "option '--%s' takes no value (got '%s')",
                            o->name, arg);
    if (optopt > 0 && optopt < 128)
        return coh_fail(err, COH_EINVAL, "unknown option '-%c'; --help lists the options",
                        optopt);
    return coh_fail(err, COH_EINVAL, "unknown option '%s'; --help lists the options", arg);
}

int topt_parse_args(trainer_config *c, unsigned mask, int argc, char **argv,
                    const char *shortopts, const struct option *extra, topt_other_fn other,
                    void *ctx, int *next_arg, coh_err *err)
{
    int n_extra = 0;
    while (extra && extra[n_extra].name)
        n_extra++;
    for (int i = 0; i < n_extra; i++) {
        if (extra[i].flag || extra[i].val >= TOPT_VAL_BASE || extra[i].val < 0)
            return coh_fail(err, COH_EINVAL,
                            "option --%s: a binary's own options need flag NULL and a value "
                            "below TOPT_VAL_BASE",
                            extra[i].name);
        int j = topt_find(extra[i].name);
        if (j >= 0 && (T[j].bins & mask))
            return coh_fail(err, COH_EINVAL, "option --%s is defined twice", extra[i].name);
    }
    struct option *opts = calloc((size_t)(N_ENTRIES + n_extra + 1), sizeof *opts);
    char *sopts = malloc(strlen(shortopts ? shortopts : "") + 3);
    if (!opts || !sopts) {
        free(opts);
        free(sopts);
        return coh_fail(err, COH_ENOMEM, "out of memory parsing the command line");
    }
    int n = topt_long_options(mask, opts, N_ENTRIES, TOPT_VAL_BASE);
    for (int i = 0; i < n_extra; i++)
        opts[n++] = extra[i];
    /* ':' first (after a '+' or '-' mode character): a missing value returns ':' */
    const char *s = shortopts ? shortopts : "";
    size_t k = 0;
    if (*s == '+' || *s == '-')
        sopts[k++] = *s++;
    sopts[k++] = ':';
    strcpy(sopts + k, s);

    int saved_opterr = opterr, rc = COH_OK, ch, configs = 0;
    opterr = 0;
    /* sweep 1: the whole command line parses; --config is loaded */
    optind = 0;
    while (rc == COH_OK && (ch = getopt_long(argc, argv, sopts, opts, NULL)) != -1) {
        if (ch == '?' || ch == ':') {
            rc = getopt_error(ch, argv, opts, err);
        } else if (ch >= TOPT_VAL_BASE && T[ch - TOPT_VAL_BASE].kind == TOPT_CONFIG) {
            if (configs++)
                rc = coh_fail(err, COH_EINVAL,
                              "--config is given twice; put all settings in one file (later "
                              "flags override it)");
            else if (!optarg || !*optarg)
                rc = coh_fail(err, COH_EINVAL, "--config: no file given");
            else
                rc = topt_load_file(c, mask, optarg, err);
        }
    }
    /* sweep 2: every other option in order; the first use of a list replaces the file's */
    if (rc == COH_OK) {
        unsigned char listed[N_ENTRIES];
        memset(listed, 0, sizeof listed);
        optind = 0;
        while (rc == COH_OK && (ch = getopt_long(argc, argv, sopts, opts, NULL)) != -1) {
            if (ch >= TOPT_VAL_BASE) {
                const entry *e = &T[ch - TOPT_VAL_BASE];
                if (e->kind == TOPT_STRLIST && !listed[ch - TOPT_VAL_BASE]++) {
                    trainer_config r = *c;
                    memset(field(&r, e), 0, e->size);
                    if ((rc = topt_apply(&r, ch - TOPT_VAL_BASE, optarg, err)) == COH_OK)
                        *c = r;
                } else if (e->kind != TOPT_CONFIG) {
                    rc = topt_apply(c, ch - TOPT_VAL_BASE, optarg, err);
                }
            } else if (other) {
                rc = other(ctx, ch, optarg, err);
            } else {
                rc = coh_fail(err, COH_EINVAL, "option '%s' is not handled",
                              optind > 0 ? argv[optind - 1] : "");
            }
        }
        if (next_arg)
            *next_arg = optind;
    }
    opterr = saved_opterr;
    free(opts);
    free(sopts);
    return rc;
}

/* ---- help ------------------------------------------------------------------------------- */

static void range_text(const entry *e, char *buf, size_t cap)
{
    buf[0] = '\0';
    switch (e->kind) {
    case TOPT_INT:
    case TOPT_LONG: snprintf(buf, cap, "%.0f..%.0f", e->lo, e->hi); break;
    case TOPT_FLOAT:
        snprintf(buf, cap, "%c%g, %g%c", e->lo_open ? '(' : '[', e->lo, e->hi,
                 e->hi_open ? ')' : ']');
        break;
    case TOPT_CHOICE: {
        size_t used = 0;
        const char *const *names = choice_names(e->choice);
        for (int i = 0; names[i]; i++) {
            int w = snprintf(buf + used, cap - used, "%s%s", i ? "|" : "", names[i]);
            if (w < 0 || (size_t)w >= cap - used)
                break;
            used += (size_t)w;
        }
        break;
    }
    default: break;
    }
}

static void default_text(const trainer_config *d, const entry *e, char *buf, size_t cap)
{
    buf[0] = '\0';
    switch (e->kind) {
    case TOPT_INT: {
        int x;
        memcpy(&x, cfield(d, e), sizeof x);
        snprintf(buf, cap, "%d", x);
        break;
    }
    case TOPT_LONG: {
        long x;
        memcpy(&x, cfield(d, e), sizeof x);
        snprintf(buf, cap, "%ld", x);
        break;
    }
    case TOPT_U64: {
        uint64_t x;
        memcpy(&x, cfield(d, e), sizeof x);
        snprintf(buf, cap, "%llu", (unsigned long long)x);
        break;
    }
    case TOPT_FLOAT: {
        float x;
        memcpy(&x, cfield(d, e), sizeof x);
        snprintf(buf, cap, "%g", float_for_json(x));
        break;
    }
    case TOPT_CHOICE: snprintf(buf, cap, "%s", choice_value(d, e)); break;
    case TOPT_STRING:
    case TOPT_PATH: {
        const char *s = cfield(d, e);
        snprintf(buf, cap, "%.*s", (int)strnlen(s, e->size), s);
        break;
    }
    case TOPT_MODEL: snprintf(buf, cap, "built-in small policy"); break;
    case TOPT_STRLIST: {
        const stops_list *l = cfield(d, e);
        size_t used = 0;
        for (int i = 0; i < l->n && i < STOPS_MAX; i++) {
            int w = snprintf(buf + used, cap - used, "%s\"%s\"", i ? ", " : "", l->text[i]);
            if (w < 0 || (size_t)w >= cap - used)
                break;
            used += (size_t)w;
        }
        break;
    }
    default: break;
    }
}

void topt_print_help_with(unsigned mask, const trainer_config *defaults, FILE *f)
{
    for (int i = 0; i < N_ENTRIES; i++) {
        const entry *e = &T[i];
        if (!(e->bins & mask))
            continue;
        char left[64], range[128], def[128];
        snprintf(left, sizeof left, "--%s%s%s", e->name, e->meta ? " " : "",
                 e->meta ? e->meta : "");
        range_text(e, range, sizeof range);
        default_text(defaults, e, def, sizeof def);
        fprintf(f, "  %-24s %s", left, e->help);
        if (range[0])
            fprintf(f, "; %s", range);
        if (def[0])
            fprintf(f, " [%s]", def);
        fputc('\n', f);
    }
}

void topt_print_help(unsigned mask, FILE *f)
{
    trainer_config d = trainer_config_default();
    topt_print_help_with(mask, &d, f);
}
