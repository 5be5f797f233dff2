/* tasks.c - built-in procedurally generated tasks with exact verifiers (see tasks.h).
 *
 * Every item is generated from one 64-bit seed: training item i of a task is drawn from
 * derive(derive(derive(config seed, task salt), i), k) for the first sub-index k = 0, 1, ...
 * whose prompt is not held out, and the held-out set is drawn the same way from a constant
 * seed (TASK_EVAL_SEED) so that it does not move when the training seed changes. Held-out
 * prompts live in an open-addressing hash set built once by task_create; lookups compare
 * the full prompt text, so a hash collision can never hide or invent a held-out prompt.
 *
 * Countdown is verified by a recursive-descent parser that evaluates as it parses, with
 * exact rationals (64-bit numerator and denominator, every operation overflow-checked).
 * Syntax errors end the parse at once (format 0); semantic errors (unknown or reused number,
 * division by zero, overflow) are recorded and the parse goes on so that the format score
 * still says whether the expression was well formed.
 */
#include "tasks.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rng.h"

/* ---- Constants and types ---------------------------------------------------------------- */

#define TASK_EVAL_SEED 0x636f686f72746576ULL /* "cohortev": held-out stream, never configurable */
#define TRAIN_MAX_RESAMPLE 100000            /* sub-indices tried before giving up */
#define COVER_PROBE 1000                     /* training draws sampled by the coverage check */
#define CD_MAX_NUMBERS 8                     /* countdown generator limit (n_numbers) */
#define CD_META_NUMBERS 32                   /* countdown verifier limit (meta from files) */
#define CD_NODES (2 * CD_MAX_NUMBERS - 1)
#define CD_DRAWS 2000                        /* number draws per generated countdown item */
#define STR_MAX_LEN 32                       /* reverse/sort string length limit */
#define JSON_INT_MAX 9007199254740992.0      /* 2^53: integers a double holds exactly */

typedef enum task_kind { TASK_ADDITION, TASK_COUNTDOWN, TASK_REVERSE, TASK_SORT } task_kind;

static const struct {
    const char *name;
    task_kind kind;
} task_names[] = {
    {"addition", TASK_ADDITION},
    {"countdown", TASK_COUNTDOWN},
    {"reverse", TASK_REVERSE},
    {"sort", TASK_SORT},
};
#define N_TASK_NAMES (sizeof task_names / sizeof task_names[0])

struct task {
    task_kind kind;
    const char *name;  /* points into task_names */
    task_config cfg;
    uint64_t train_base; /* derive(cfg.seed, salt) */
    task_item *eval;     /* held-out items, n_eval of them */
    int n_eval;
    uint32_t *slots;     /* hash set of held-out prompts: 0 empty, else eval index + 1 */
    uint32_t slot_mask;  /* number of slots - 1 (a power of two minus one) */
};

/* ---- Small helpers ---------------------------------------------------------------------- */

static uint64_t derive(uint64_t a, uint64_t b)
{
    return rng_mix(a ^ rng_mix(b + 0x632be59bd9b4e019ULL));
}

static uint64_t task_salt(task_kind kind) { return 0x7461736bULL * (uint64_t)(kind + 1); }

static uint64_t hash_text(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* Length of s, or cap when s has no NUL in its first cap bytes. */
static size_t bounded_len(const char *s, size_t cap)
{
    size_t n = 0;
    while (n < cap && s[n])
        n++;
    return n;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Copy up to 40 chars of s into buf for a detail message: non-printable bytes become '?',
 * and a cut is marked with "...". */
static const char *show(const char *s, char *buf, size_t cap)
{
    size_t keep = cap > 44 ? 40 : (cap > 4 ? cap - 4 : 0);
    size_t i = 0;
    for (; s[i] && i < keep; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 32 && c <= 126) ? (char)c : '?';
    }
    if (s[i] && cap >= 4) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static void score_set(task_score *out, double correct, double format, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void score_set(task_score *out, double correct, double format, const char *fmt, ...)
{
    va_list ap;
    out->correct = correct;
    out->format = format;
    va_start(ap, fmt);
    vsnprintf(out->detail, sizeof out->detail, fmt, ap);
    va_end(ap);
}

/* ---- Exact rationals -------------------------------------------------------------------- */

/* Invariant: d > 0, gcd(|n|, d) == 1, and n != INT64_MIN (so negation is always safe). */
typedef struct rat {
    int64_t n, d;
} rat;

enum { RAT_OK = 0, RAT_OVERFLOW = 1, RAT_DIV0 = 2 };

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static uint64_t abs_u64(int64_t x) { return x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x; }

static int rat_make(int64_t n, int64_t d, rat *out)
{
    if (d == 0)
        return RAT_DIV0;
    if (n == INT64_MIN || d == INT64_MIN)
        return RAT_OVERFLOW;
    if (d < 0) {
        n = -n;
        d = -d;
    }
    int64_t g = (int64_t)gcd_u64(abs_u64(n), (uint64_t)d); /* >= 1 because d > 0 */
    out->n = n / g;
    out->d = d / g;
    return RAT_OK;
}

static int rat_add(rat a, rat b, rat *out)
{
    int64_t g = (int64_t)gcd_u64((uint64_t)a.d, (uint64_t)b.d);
    int64_t x, y, num, den;
    if (__builtin_mul_overflow(a.n, b.d / g, &x) || __builtin_mul_overflow(b.n, a.d / g, &y) ||
        __builtin_add_overflow(x, y, &num) || __builtin_mul_overflow(a.d / g, b.d, &den))
        return RAT_OVERFLOW;
    return rat_make(num, den, out);
}

static int rat_sub(rat a, rat b, rat *out)
{
    b.n = -b.n;
    return rat_add(a, b, out);
}

static int rat_mul(rat a, rat b, rat *out)
{
    int64_t g1 = (int64_t)gcd_u64(abs_u64(a.n), (uint64_t)b.d);
    int64_t g2 = (int64_t)gcd_u64(abs_u64(b.n), (uint64_t)a.d);
    int64_t num, den;
    if (__builtin_mul_overflow(a.n / g1, b.n / g2, &num) ||
        __builtin_mul_overflow(a.d / g2, b.d / g1, &den))
        return RAT_OVERFLOW;
    return rat_make(num, den, out);
}

static int rat_div(rat a, rat b, rat *out)
{
    if (b.n == 0)
        return RAT_DIV0;
    rat inv = b.n < 0 ? (rat){-b.d, -b.n} : (rat){b.d, b.n};
    return rat_mul(a, inv, out);
}

/* ---- Generators ------------------------------------------------------------------------- */

static uint64_t pow10_u64(int e)
{
    uint64_t p = 1;
    while (e-- > 0)
        p *= 10;
    return p;
}

static int gen_addition(const task_config *c, rng *r, task_item *out)
{
    /* operands have exactly `digits` digits (0 is allowed only for 1-digit addition), so
     * every prompt of a task has the same length */
    uint64_t lo = c->digits > 1 ? pow10_u64(c->digits - 1) : 0, hi = pow10_u64(c->digits);
    uint64_t a = lo + rng_below(r, hi - lo), b = lo + rng_below(r, hi - lo);
    snprintf(out->prompt, sizeof out->prompt, "%" PRIu64 "+%" PRIu64 "=", a, b);
    snprintf(out->answer, sizeof out->answer, "%" PRIu64, a + b);
    snprintf(out->meta, sizeof out->meta, "{\"a\":%" PRIu64 ",\"b\":%" PRIu64 "}", a, b);
    return 0;
}

static void gen_string(const task_config *c, rng *r, char *s)
{
    int len = c->min_len + (int)rng_below(r, (uint64_t)(c->max_len - c->min_len + 1));
    for (int i = 0; i < len; i++)
        s[i] = (char)('a' + rng_below(r, 26));
    s[len] = '\0';
}

static int cmp_char(const void *a, const void *b)
{
    return *(const unsigned char *)a - *(const unsigned char *)b;
}

static void reverse_text(const char *s, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        out[i] = s[len - 1 - i];
    out[len] = '\0';
}

static void sort_text(const char *s, size_t len, char *out)
{
    memcpy(out, s, len);
    out[len] = '\0';
    qsort(out, len, 1, cmp_char);
}

static int gen_string_task(const task_config *c, task_kind kind, rng *r, task_item *out)
{
    char s[STR_MAX_LEN + 1], t[STR_MAX_LEN + 1];
    gen_string(c, r, s);
    if (kind == TASK_REVERSE) {
        reverse_text(s, strlen(s), t);
        snprintf(out->prompt, sizeof out->prompt, "rev:%s=", s);
    } else {
        sort_text(s, strlen(s), t);
        snprintf(out->prompt, sizeof out->prompt, "sort:%s=", s);
    }
    snprintf(out->answer, sizeof out->answer, "%s", t);
    snprintf(out->meta, sizeof out->meta, "{\"text\":\"%s\"}", s);
    return 0;
}

/* A random expression tree over some of the countdown numbers. Node i is a leaf when
 * op[i] == 0; val[i] is its (positive integer) value. */
typedef struct cd_expr {
    char op[CD_NODES];
    int left[CD_NODES], right[CD_NODES];
    int64_t val[CD_NODES];
} cd_expr;

static int cd_prec(const cd_expr *e, int node)
{
    switch (e->op[node]) {
    case '+':
    case '-':
        return 1;
    case '*':
    case '/':
        return 2;
    default:
        return 3;
    }
}

/* Print with only the parentheses that change the value (exact arithmetic makes a*(b/c)
 * equal to a*b/c, so only the right operand of - and / keeps equal-precedence parens). */
static void cd_print(const cd_expr *e, int node, char *buf, size_t cap, size_t *len)
{
    if (!e->op[node]) {
        int w = snprintf(buf + *len, cap - *len, "%" PRId64, e->val[node]);
        *len += (size_t)w < cap - *len ? (size_t)w : cap - *len - 1;
        return;
    }
    int p = cd_prec(e, node);
    int lp = cd_prec(e, e->left[node]) < p;
    int rp = cd_prec(e, e->right[node]) < p ||
             (cd_prec(e, e->right[node]) == p && (e->op[node] == '-' || e->op[node] == '/'));
    if (lp && *len + 1 < cap)
        buf[(*len)++] = '(';
    cd_print(e, e->left[node], buf, cap, len);
    if (lp && *len + 1 < cap)
        buf[(*len)++] = ')';
    if (*len + 1 < cap)
        buf[(*len)++] = e->op[node];
    if (rp && *len + 1 < cap)
        buf[(*len)++] = '(';
    cd_print(e, e->right[node], buf, cap, len);
    if (rp && *len + 1 < cap)
        buf[(*len)++] = ')';
    buf[*len] = '\0';
}

typedef struct cd_choice {
    char op;
    int swap; /* 1: the second picked operand goes on the left */
} cd_choice;

/* Combine k (2 <= k <= n) of nums[] at random into an expression whose intermediate values are all
 * positive integers. Returns the root node, or -1 on overflow. */
static int cd_random_expr(const int64_t *nums, int n, rng *r, cd_expr *e)
{
    int idx[CD_MAX_NUMBERS], pool[CD_MAX_NUMBERS];
    /* all numbers half the time (harder, like the real game), else 2..n of them */
    int k = rng_below(r, 2) ? n : 2 + (int)rng_below(r, (uint64_t)(n - 1));
    for (int i = 0; i < n; i++)
        idx[i] = i;
    for (int i = 0; i < k; i++) { /* partial Fisher-Yates: idx[0..k) is a random k-subset */
        int j = i + (int)rng_below(r, (uint64_t)(n - i));
        int tmp = idx[i];
        idx[i] = idx[j];
        idx[j] = tmp;
    }
    int n_nodes = 0;
    for (int i = 0; i < k; i++) {
        e->op[n_nodes] = 0;
        e->val[n_nodes] = nums[idx[i]];
        pool[i] = n_nodes++;
    }
    for (int m = k; m > 1; m--) {
        int i = (int)rng_below(r, (uint64_t)m);
        int j = (int)rng_below(r, (uint64_t)(m - 1));
        if (j >= i)
            j++;
        int64_t a = e->val[pool[i]], b = e->val[pool[j]];
        /* the operations (and operand orders) whose result is a positive integer */
        cd_choice cand[6];
        int nc = 0;
        cand[nc++] = (cd_choice){'+', 0};
        cand[nc++] = (cd_choice){'*', 0};
        if (a > b)
            cand[nc++] = (cd_choice){'-', 0};
        if (b > a)
            cand[nc++] = (cd_choice){'-', 1};
        if (a % b == 0)
            cand[nc++] = (cd_choice){'/', 0};
        if (b % a == 0)
            cand[nc++] = (cd_choice){'/', 1};
        cd_choice ch = cand[rng_below(r, (uint64_t)nc)];
        int l = ch.swap ? pool[j] : pool[i], rt = ch.swap ? pool[i] : pool[j];
        int64_t x = e->val[l], y = e->val[rt], v;
        switch (ch.op) {
        case '+':
            if (__builtin_add_overflow(x, y, &v))
                return -1;
            break;
        case '*':
            if (__builtin_mul_overflow(x, y, &v))
                return -1;
            break;
        case '-':
            v = x - y;
            break;
        default:
            v = x / y;
            break;
        }
        e->op[n_nodes] = ch.op;
        e->left[n_nodes] = l;
        e->right[n_nodes] = rt;
        e->val[n_nodes] = v;
        int lo = i < j ? i : j, hi = i < j ? j : i;
        pool[lo] = n_nodes++;
        pool[hi] = pool[m - 1];
    }
    return pool[0];
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int gen_countdown(const task_config *c, rng *r, task_item *out)
{
    int n = c->n_numbers;
    for (int draw = 0; draw < CD_DRAWS; draw++) {
        int64_t nums[CD_MAX_NUMBERS];
        for (int i = 0; i < n; i++)
            nums[i] = 1 + (int64_t)rng_below(r, (uint64_t)c->max_number);
        qsort(nums, (size_t)n, sizeof nums[0], cmp_i64);
        for (int attempt = 0; attempt < 8 * n; attempt++) {
            cd_expr e;
            int root = cd_random_expr(nums, n, r, &e);
            if (root < 0 || e.val[root] < 1 || e.val[root] > c->max_target)
                continue;
            size_t pl = 0, ml, al = 0;
            for (int i = 0; i < n; i++)
                pl += (size_t)snprintf(out->prompt + pl, sizeof out->prompt - pl, "%s%" PRId64,
                                       i ? "," : "", nums[i]);
            snprintf(out->prompt + pl, sizeof out->prompt - pl, ">%" PRId64 ":", e.val[root]);
            ml = (size_t)snprintf(out->meta, sizeof out->meta, "{\"numbers\":[");
            for (int i = 0; i < n; i++)
                ml += (size_t)snprintf(out->meta + ml, sizeof out->meta - ml, "%s%" PRId64,
                                       i ? "," : "", nums[i]);
            snprintf(out->meta + ml, sizeof out->meta - ml, "],\"target\":%" PRId64 "}",
                     e.val[root]);
            out->answer[0] = '\0';
            cd_print(&e, root, out->answer, sizeof out->answer, &al);
            return 0;
        }
    }
    return COH_ERANGE;
}

/* Generate the item of this task for one seed (0, or COH_ERANGE if countdown found none). */
static int gen_item(const task *t, uint64_t seed, task_item *out)
{
    rng r;
    rng_init(&r, seed);
    memset(out, 0, sizeof *out);
    switch (t->kind) {
    case TASK_ADDITION:
        return gen_addition(&t->cfg, &r, out);
    case TASK_COUNTDOWN:
        return gen_countdown(&t->cfg, &r, out);
    default:
        return gen_string_task(&t->cfg, t->kind, &r, out);
    }
}

/* ---- Held-out set ----------------------------------------------------------------------- */

static int eval_contains(const task *t, const char *prompt)
{
    if (!t->n_eval)
        return 0;
    for (uint32_t s = (uint32_t)hash_text(prompt) & t->slot_mask;; s = (s + 1) & t->slot_mask) {
        uint32_t v = t->slots[s];
        if (!v)
            return 0;
        if (!strcmp(t->eval[v - 1].prompt, prompt))
            return 1;
    }
}

static void eval_insert(task *t, int index)
{
    uint32_t s = (uint32_t)hash_text(t->eval[index].prompt) & t->slot_mask;
    while (t->slots[s])
        s = (s + 1) & t->slot_mask;
    t->slots[s] = (uint32_t)index + 1;
}

static int eval_build(task *t, coh_err *err)
{
    int want = t->cfg.eval_size;
    if (!want)
        return COH_OK;
    uint32_t n_slots = 4;
    while (n_slots < 2u * (uint32_t)want)
        n_slots *= 2;
    t->eval = calloc((size_t)want, sizeof *t->eval);
    t->slots = calloc(n_slots, sizeof *t->slots);
    if (!t->eval || !t->slots)
        return coh_fail(err, COH_ENOMEM, "task %s: no memory for %d held-out items", t->name,
                        want);
    t->slot_mask = n_slots - 1;
    uint64_t base = derive(TASK_EVAL_SEED, task_salt(t->kind));
    uint64_t tries = 20 * (uint64_t)want + 1000;
    for (uint64_t j = 0; j < tries && t->n_eval < want; j++) {
        task_item *it = &t->eval[t->n_eval];
        if (gen_item(t, derive(base, j), it) || eval_contains(t, it->prompt))
            continue;
        eval_insert(t, t->n_eval++);
    }
    if (t->n_eval < want)
        return coh_fail(err, COH_EINVAL,
                        "task %s: found only %d distinct prompts in %" PRIu64
                        " draws for eval_size %d; lower eval_size or widen the task "
                        "(more digits, longer strings, larger numbers or targets)",
                        t->name, t->n_eval, tries, want);
    return COH_OK;
}

/* Refuse a held-out set that swallows nearly all training draws: the training stream would
 * then have almost nothing left to teach (and resampling would take long). */
static int eval_check_coverage(const task *t, coh_err *err)
{
    if (!t->n_eval)
        return COH_OK;
    int hits = 0, made = 0;
    for (uint64_t i = 0; i < COVER_PROBE; i++) {
        task_item it;
        if (gen_item(t, derive(t->train_base, i), &it))
            continue;
        made++;
        hits += eval_contains(t, it.prompt);
    }
    if (made == 0 || hits * 10 >= made * 9)
        return coh_fail(err, COH_EINVAL,
                        "task %s: the %d held-out prompts cover %d of %d sampled training "
                        "draws; lower eval_size or widen the task",
                        t->name, t->n_eval, hits, made);
    return COH_OK;
}

/* ---- Lifecycle -------------------------------------------------------------------------- */

task_config task_config_default(void)
{
    task_config c;
    memset(&c, 0, sizeof c);
    c.seed = 1;
    c.eval_size = 200;
    c.digits = 3;
    c.n_numbers = 3;
    c.max_number = 9;
    c.max_target = 50;
    c.min_len = 3;
    c.max_len = 6;
    return c;
}

static int check_range(const char *task_name_, const char *field, int v, int lo, int hi,
                       coh_err *err)
{
    if (v < lo || v > hi)
        return coh_fail(err, COH_EINVAL, "task %s: %s must be in %d..%d, got %d", task_name_,
                        field, lo, hi, v);
    return COH_OK;
}

static int config_check(const char *name, task_kind kind, const task_config *c, coh_err *err)
{
    int rc = check_range(name, "eval_size", c->eval_size, 0, TASK_EVAL_MAX, err);
    if (rc)
        return rc;
    switch (kind) {
    case TASK_ADDITION:
        return check_range(name, "digits", c->digits, 1, 9, err);
    case TASK_COUNTDOWN:
        if ((rc = check_range(name, "n_numbers", c->n_numbers, 2, CD_MAX_NUMBERS, err)) ||
            (rc = check_range(name, "max_number", c->max_number, 1, 1000, err)) ||
            (rc = check_range(name, "max_target", c->max_target, 1, 100000, err)))
            return rc;
        return COH_OK;
    default:
        if ((rc = check_range(name, "min_len", c->min_len, 1, STR_MAX_LEN, err)) ||
            (rc = check_range(name, "max_len", c->max_len, 1, STR_MAX_LEN, err)))
            return rc;
        if (c->min_len > c->max_len)
            return coh_fail(err, COH_EINVAL, "task %s: min_len %d is greater than max_len %d",
                            name, c->min_len, c->max_len);
        return COH_OK;
    }
}

int task_create(const char *name, const task_config *c, task **out, coh_err *err)
{
    if (!out)
        return coh_fail(err, COH_EINVAL, "task_create: out is NULL");
    *out = NULL;
    if (!name)
        return coh_fail(err, COH_EINVAL, "task_create: name is NULL");
    size_t k = 0;
    while (k < N_TASK_NAMES && strcmp(task_names[k].name, name))
        k++;
    if (k == N_TASK_NAMES && strcmp(name, "math") == 0)
        return coh_fail(err, COH_EUNSUPPORTED,
                        "task \"math\" is verifier-only (mathverify.h): it has no generator; "
                        "give its prompts in a prompt file (deploy/gsm8k-to-prompts.py makes one "
                        "from GSM8K) and let the reward service score them");
    if (k == N_TASK_NAMES) {
        char shown[48];
        return coh_fail(err, COH_ENOTFOUND,
                        "unknown task \"%s\"; known tasks: addition, countdown, reverse, sort",
                        show(name, shown, sizeof shown));
    }
    task_config cfg = c ? *c : task_config_default();
    int rc = config_check(task_names[k].name, task_names[k].kind, &cfg, err);
    if (rc)
        return rc;
    task *t = calloc(1, sizeof *t);
    if (!t)
        return coh_fail(err, COH_ENOMEM, "task %s: out of memory", task_names[k].name);
    t->kind = task_names[k].kind;
    t->name = task_names[k].name;
    t->cfg = cfg;
    t->train_base = derive(cfg.seed, task_salt(t->kind));
    if ((rc = eval_build(t, err)) || (rc = eval_check_coverage(t, err))) {
        task_destroy(t);
        return rc;
    }
    *out = t;
    return COH_OK;
}

void task_destroy(task *t)
{
    if (!t)
        return;
    free(t->eval);
    free(t->slots);
    free(t);
}

const char *task_name(const task *t) { return t ? t->name : "(null)"; }

int task_train_item(const task *t, uint64_t index, task_item *out)
{
    if (!t || !out)
        return COH_EINVAL;
    uint64_t base = derive(t->train_base, index);
    for (uint64_t sub = 0; sub < TRAIN_MAX_RESAMPLE; sub++) {
        /* sub 0 is the draw eval_check_coverage probes */
        uint64_t seed = sub ? derive(base, sub) : base;
        if (gen_item(t, seed, out) == 0 && !eval_contains(t, out->prompt))
            return COH_OK;
    }
    memset(out, 0, sizeof *out);
    return COH_ERANGE;
}

int task_eval_size(const task *t) { return t ? t->n_eval : 0; }

static int decimal_digits(long v)
{
    int d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

int task_max_prompt_len(const task *t)
{
    if (!t)
        return 0;
    const task_config *c = &t->cfg;
    switch (t->kind) {
    case TASK_ADDITION: return 2 * c->digits + 2;                    /* "A+B=" */
    case TASK_COUNTDOWN:                                             /* "n,n,n>T:" */
        return c->n_numbers * (decimal_digits(c->max_number) + 1) +
               decimal_digits(c->max_target) + 1;
    case TASK_REVERSE: return 4 + c->max_len + 1;                    /* "rev:s=" */
    case TASK_SORT: return 5 + c->max_len + 1;                       /* "sort:s=" */
    }
    return TASK_TEXT_MAX - 1;
}

int task_eval_item(const task *t, int i, task_item *out)
{
    if (!t || !out || i < 0 || i >= t->n_eval)
        return COH_EINVAL;
    *out = t->eval[i];
    return COH_OK;
}

/* ---- Verifiers: addition, reverse, sort -------------------------------------------------- */

/* Sum of two decimal digit strings into out (cap >= max(la, lb) + 2). */
static void add_decimal(const char *a, size_t la, const char *b, size_t lb, char *out)
{
    char tmp[2 * TASK_TEXT_MAX + 2];
    size_t n = 0;
    int carry = 0;
    while (la || lb || carry) {
        int s = carry + (la ? a[--la] - '0' : 0) + (lb ? b[--lb] - '0' : 0);
        tmp[n++] = (char)('0' + s % 10);
        carry = s / 10;
    }
    size_t i = 0;
    while (n > 1 && tmp[n - 1] == '0') /* operands with leading zeros */
        n--;
    while (n)
        out[i++] = tmp[--n];
    out[i] = '\0';
}

static size_t digit_run(const char *s)
{
    size_t n = 0;
    while (is_digit(s[n]))
        n++;
    return n;
}

/* Expected sum from item->answer, or recomputed from an "A+B=" prompt. */
static int addition_expected(const task_item *item, char *exp, coh_err *err)
{
    size_t la = bounded_len(item->answer, TASK_TEXT_MAX);
    size_t lp = bounded_len(item->prompt, TASK_TEXT_MAX);
    if (la == TASK_TEXT_MAX || lp == TASK_TEXT_MAX)
        return coh_fail(err, COH_EINVAL, "addition item: prompt or answer not terminated");
    if (la) {
        if (digit_run(item->answer) != la)
            return coh_fail(err, COH_EINVAL, "addition item: answer is not a decimal number");
        size_t z = 0;
        while (z + 1 < la && item->answer[z] == '0')
            z++;
        memcpy(exp, item->answer + z, la - z + 1);
        return COH_OK;
    }
    const char *p = item->prompt;
    size_t na = digit_run(p);
    size_t nb = na && p[na] == '+' ? digit_run(p + na + 1) : 0;
    if (!nb || strcmp(p + na + 1 + nb, "="))
        return coh_fail(err, COH_EINVAL,
                        "addition item: no answer, and the prompt is not of the form \"A+B=\"");
    add_decimal(p, na, p + na + 1, nb, exp);
    return COH_OK;
}

static void verify_addition(const char *exp, const char *got, size_t len, task_score *out)
{
    char shown[48];
    if (len == 0 || digit_run(got) != len)
        score_set(out, 0, 0, "expected digits only (%.40s), got \"%s\"", exp,
                  show(got, shown, sizeof shown));
    else if (len > 1 && got[0] == '0')
        score_set(out, 0, 1, "leading zero: expected %.40s, got %s", exp,
                  show(got, shown, sizeof shown));
    else if (strcmp(got, exp))
        score_set(out, 0, 1, "expected %.40s, got %s", exp, show(got, shown, sizeof shown));
    else
        score_set(out, 1, 1, "correct: %.40s", exp);
}

/* Expected text for reverse/sort from item->answer, or recomputed from the prompt. */
static int string_expected(const task *t, const task_item *item, char *exp, coh_err *err)
{
    size_t la = bounded_len(item->answer, TASK_TEXT_MAX);
    size_t lp = bounded_len(item->prompt, TASK_TEXT_MAX);
    if (la == TASK_TEXT_MAX || lp == TASK_TEXT_MAX)
        return coh_fail(err, COH_EINVAL, "%s item: prompt or answer not terminated", t->name);
    if (la) {
        memcpy(exp, item->answer, la + 1);
        return COH_OK;
    }
    const char *prefix = t->kind == TASK_REVERSE ? "rev:" : "sort:";
    size_t np = strlen(prefix);
    if (lp < np + 1 || strncmp(item->prompt, prefix, np) || item->prompt[lp - 1] != '=')
        return coh_fail(err, COH_EINVAL, "%s item: no answer, and the prompt is not of the form "
                        "\"%sTEXT=\"", t->name, prefix);
    if (t->kind == TASK_REVERSE)
        reverse_text(item->prompt + np, lp - np - 1, exp);
    else
        sort_text(item->prompt + np, lp - np - 1, exp);
    return COH_OK;
}

static void verify_string(const char *exp, const char *got, size_t len, task_score *out)
{
    char se[48], sg[48];
    int shape = len == strlen(exp);
    for (size_t i = 0; shape && i < len; i++)
        shape = got[i] > ' ' && got[i] <= '~';
    if (!strcmp(exp, got))
        score_set(out, 1, 1, "correct: %s", show(exp, se, sizeof se));
    else
        score_set(out, 0, shape, "expected %s, got \"%s\"", show(exp, se, sizeof se),
                  show(got, sg, sizeof sg));
}

/* ---- Verifier: countdown ---------------------------------------------------------------- */

typedef struct cd_problem {
    int64_t numbers[CD_META_NUMBERS];
    int n;
    int64_t target;
} cd_problem;

static int json_int(const cJSON *v, double lo, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= lo && d <= JSON_INT_MAX) || d != (double)(int64_t)d)
        return -1;
    *out = (int64_t)d;
    return 0;
}

static int cd_problem_parse(const task_item *item, cd_problem *pb, coh_err *err)
{
    size_t ml = bounded_len(item->meta, TASK_META_MAX);
    cJSON *root = cJSON_ParseWithLength(item->meta, ml);
    int rc = COH_OK;
    if (!cJSON_IsObject(root)) {
        rc = coh_fail(err, COH_EINVAL, "countdown item: meta is not a JSON object");
        goto done;
    }
    const cJSON *nums = cJSON_GetObjectItemCaseSensitive(root, "numbers");
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(root, "target");
    int n = cJSON_IsArray(nums) ? cJSON_GetArraySize(nums) : -1;
    if (n < 1 || n > CD_META_NUMBERS) {
        rc = coh_fail(err, COH_EINVAL,
                      "countdown item: meta needs \"numbers\": an array of 1..%d integers",
                      CD_META_NUMBERS);
        goto done;
    }
    pb->n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, nums)
    {
        if (json_int(v, 0, &pb->numbers[pb->n++])) {
            rc = coh_fail(err, COH_EINVAL,
                          "countdown item: meta numbers must be integers in 0..2^53");
            goto done;
        }
    }
    if (json_int(target, -JSON_INT_MAX, &pb->target))
        rc = coh_fail(err, COH_EINVAL,
                      "countdown item: meta needs \"target\": an integer of magnitude <= 2^53");
done:
    cJSON_Delete(root);
    return rc;
}

typedef struct cd_parser {
    const char *s;
    size_t pos;
    int depth;
    const cd_problem *pb;
    unsigned char used[CD_META_NUMBERS];
    int syntax; /* a syntax error ended the parse */
    int wrong;  /* a semantic error was recorded; values after it are placeholders */
    char why[100];
} cd_parser;

static void cd_syntax(cd_parser *p, const char *what)
{
    if (p->syntax)
        return;
    p->syntax = 1;
    unsigned char c = (unsigned char)p->s[p->pos];
    if (!c)
        snprintf(p->why, sizeof p->why, "%s at end of input", what);
    else if (c >= 32 && c <= 126)
        snprintf(p->why, sizeof p->why, "%s at '%c' (position %zu)", what, c, p->pos);
    else
        snprintf(p->why, sizeof p->why, "%s at byte 0x%02x (position %zu)", what, c, p->pos);
}

static void cd_wrong(cd_parser *p, const char *msg)
{
    if (p->wrong)
        return;
    p->wrong = 1;
    snprintf(p->why, sizeof p->why, "%s", msg);
}

static void cd_skip(cd_parser *p)
{
    while (p->s[p->pos] == ' ')
        p->pos++;
}

static rat cd_expr_(cd_parser *p);

static rat cd_number(cd_parser *p)
{
    static const rat zero = {0, 1};
    const char *start = p->s + p->pos;
    size_t n = digit_run(start);
    char msg[100], shown[48], lit[48];
    int64_t v = 0;
    int big = 0;
    for (size_t i = 0; i < n; i++)
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, start[i] - '0', &v))
            big = 1;
    p->pos += n;
    if (n > sizeof lit - 1)
        n = sizeof lit - 1;
    memcpy(lit, start, n);
    lit[n] = '\0';
    if (big) {
        snprintf(msg, sizeof msg, "number %s is too large", show(lit, shown, sizeof shown));
        cd_wrong(p, msg);
        return zero;
    }
    if (n > 1 && start[0] == '0') {
        snprintf(msg, sizeof msg, "number %s has a leading zero", show(lit, shown, sizeof shown));
        cd_wrong(p, msg);
    }
    int seen = 0;
    for (int i = 0; i < p->pb->n; i++) {
        if (p->pb->numbers[i] != v)
            continue;
        seen = 1;
        if (!p->used[i]) {
            p->used[i] = 1;
            return (rat){v, 1};
        }
    }
    snprintf(msg, sizeof msg, seen ? "number %" PRId64 " used more times than given"
                                   : "number %" PRId64 " is not among the given numbers", v);
    cd_wrong(p, msg);
    return (rat){v, 1};
}

static rat cd_factor(cd_parser *p)
{
    static const rat zero = {0, 1};
    cd_skip(p);
    char c = p->s[p->pos];
    if (is_digit(c))
        return cd_number(p);
    if (c != '(') {
        cd_syntax(p, c ? "expected a number or '('" : "expression ends early");
        return zero;
    }
    if (p->depth >= TASK_COUNTDOWN_DEPTH_MAX) {
        cd_syntax(p, "parentheses nested too deeply");
        return zero;
    }
    p->depth++;
    p->pos++;
    rat v = cd_expr_(p);
    if (p->syntax)
        return zero;
    cd_skip(p);
    if (p->s[p->pos] != ')') {
        cd_syntax(p, "unbalanced parentheses: expected ')'");
        return zero;
    }
    p->pos++;
    p->depth--;
    return v;
}

/* Apply op to a and b; a failure records why and yields a placeholder value. */
static rat cd_apply(cd_parser *p, char op, rat a, rat b)
{
    static const rat zero = {0, 1};
    rat v;
    int rc = op == '+'   ? rat_add(a, b, &v)
             : op == '-' ? rat_sub(a, b, &v)
             : op == '*' ? rat_mul(a, b, &v)
                         : rat_div(a, b, &v);
    if (rc == RAT_OK)
        return v;
    cd_wrong(p, rc == RAT_DIV0 ? "division by zero" : "arithmetic overflow (beyond 64 bits)");
    return zero;
}

static rat cd_term(cd_parser *p)
{
    rat v = cd_factor(p);
    for (;;) {
        if (p->syntax)
            return v;
        cd_skip(p);
        char op = p->s[p->pos];
        if (op != '*' && op != '/')
            return v;
        p->pos++;
        rat rhs = cd_factor(p);
        if (!p->syntax)
            v = cd_apply(p, op, v, rhs);
    }
}

static rat cd_expr_(cd_parser *p)
{
    rat v = cd_term(p);
    for (;;) {
        if (p->syntax)
            return v;
        cd_skip(p);
        char op = p->s[p->pos];
        if (op != '+' && op != '-')
            return v;
        p->pos++;
        rat rhs = cd_term(p);
        if (!p->syntax)
            v = cd_apply(p, op, v, rhs);
    }
}

static void verify_countdown(const cd_problem *pb, const char *got, task_score *out)
{
    cd_parser p;
    memset(&p, 0, sizeof p);
    p.s = got;
    p.pb = pb;
    rat v = cd_expr_(&p);
    if (!p.syntax) {
        cd_skip(&p);
        if (p.s[p.pos] == ')')
            cd_syntax(&p, "unbalanced parentheses: unexpected ')'");
        else if (p.s[p.pos])
            cd_syntax(&p, "unexpected character");
    }
    if (p.syntax)
        score_set(out, 0, 0, "not an expression: %s", p.why);
    else if (p.wrong)
        score_set(out, 0, 1, "%s", p.why);
    else if (v.d != 1)
        score_set(out, 0, 1, "value %" PRId64 "/%" PRId64 ", target %" PRId64, v.n, v.d,
                  pb->target);
    else if (v.n != pb->target)
        score_set(out, 0, 1, "value %" PRId64 ", target %" PRId64, v.n, pb->target);
    else
        score_set(out, 1, 1, "correct: reaches %" PRId64, pb->target);
}

/* ---- Verifier entry point --------------------------------------------------------------- */

int task_verify(const task *t, const task_item *item, const char *completion, task_score *out,
                coh_err *err)
{
    if (!t || !item || !out)
        return coh_fail(err, COH_EINVAL, "task_verify: task, item and out must not be NULL");
    memset(out, 0, sizeof *out);
    char exp[2 * TASK_TEXT_MAX + 2];
    cd_problem pb;
    int rc;
    switch (t->kind) {
    case TASK_ADDITION:
        rc = addition_expected(item, exp, err);
        break;
    case TASK_COUNTDOWN:
        rc = cd_problem_parse(item, &pb, err);
        break;
    default:
        rc = string_expected(t, item, exp, err);
        break;
    }
    if (rc)
        return rc;
    if (!completion) {
        score_set(out, 0, 0, "no completion");
        return COH_OK;
    }
    size_t len = bounded_len(completion, TASK_COMPLETION_MAX + 1);
    if (len > TASK_COMPLETION_MAX) {
        score_set(out, 0, 0, "completion longer than %d characters", TASK_COMPLETION_MAX);
        return COH_OK;
    }
    switch (t->kind) {
    case TASK_ADDITION:
        verify_addition(exp, completion, len, out);
        break;
    case TASK_COUNTDOWN:
        verify_countdown(&pb, completion, out);
        break;
    default:
        verify_string(exp, completion, len, out);
        break;
    }
    return COH_OK;
}
