/* tasks.h - built-in procedurally generated tasks with exact verifiers.
 *
 * Tasks: "addition" (n-digit a+b), "countdown" (reach a target with the given numbers and
 * + - * / and parentheses, each number at most once; any expression that evaluates exactly
 * to the target is correct), "reverse" and "sort" (string tasks).
 * Every task has a seeded training stream addressed by index (item i is a pure function of
 * (seed, i), so a data cursor is one integer), a fixed held-out evaluation set that the
 * training stream never yields, and a demonstration (a correct completion) per item for SFT.
 * All text is printable ASCII (the built-in tokenizer's alphabet).
 *
 * Verifiers take arbitrary completion text - garbage, enormous numbers, division by zero,
 * unbalanced parentheses, 100 KB of text - and always return promptly with a score.
 * A completion is compared as is: no trimming of spaces or newlines, and anything longer than
 * TASK_COMPLETION_MAX characters scores format 0 without being read further.
 *
 * Prompt formats (prompt -> demonstration; meta):
 *   addition   "123+456="      -> "579"     {"a":123,"b":456}
 *              Operands uniform in [0, 10^digits), written without leading zeros. The answer
 *              must be the canonical decimal sum: digits only (else format 0); a leading zero
 *              ("0579") is well formed but wrong. Compared as strings, so any length is safe.
 *   countdown  "3,5,7>22:"     -> "3*5+7"   {"numbers":[3,5,7],"target":22}
 *              Numbers sorted ascending, then '>' and the target, then ':'. The target is the
 *              value of a random expression over 2..n_numbers of the numbers (all of them
 *              half the time) whose intermediate values are all positive integers; the
 *              demonstration is that expression with minimal parentheses. The verifier accepts any expression of
 *              non-negative integer literals, + - * /, parentheses and spaces (no unary minus;
 *              nesting up to TASK_COUNTDOWN_DEPTH_MAX) - that is format 1 - and it is correct
 *              when every literal is one of the numbers (as a multiset: each at most once), no
 *              literal has a leading zero, and exact rational evaluation (64-bit numerator and
 *              denominator; overflow or division by zero make it wrong) gives the target.
 *              Fractional intermediates are fine: 4,6,3 -> 8 by "4/3*6".
 *   reverse    "rev:abc="      -> "cba"     {"text":"abc"}
 *   sort       "sort:cab="     -> "abc"     {"text":"cab"}
 *              Lowercase strings of min_len..max_len letters. Correct on exact match; format 1
 *              when the completion has the expected length and only printable non-space chars.
 * The verifier-only task "math" (GSM8K/MATH final answers) is not one of these: it has no
 * generator, so task_create refuses it (COH_EUNSUPPORTED, saying so); see mathverify.h.
 * The verifier takes the expected answer from item->answer (addition, reverse, sort; when that
 * is empty it recomputes it from a prompt in the format above) or item->meta (countdown).
 */
#ifndef COHORT_TASKS_H
#define COHORT_TASKS_H

#include <stdint.h>

#include "err.h"

#define TASK_TEXT_MAX 128
#define TASK_META_MAX 256
#define TASK_COMPLETION_MAX 256      /* longer completions score format 0 at once */
#define TASK_COUNTDOWN_DEPTH_MAX 64  /* parenthesis nesting accepted by the verifier */
#define TASK_EVAL_MAX 10000          /* largest eval_size */

typedef struct task_item {
    char prompt[TASK_TEXT_MAX]; /* what the policy sees after <bos>, e.g. "123+456=" */
    char answer[TASK_TEXT_MAX]; /* a demonstration completion (without <eos>), e.g. "579" */
    char meta[TASK_META_MAX];   /* JSON object the verifier needs, e.g. {"target":22,...} */
} task_item;

typedef struct task_config {
    uint64_t seed;     /* training stream seed; the evaluation set has its own fixed seed */
    int eval_size;     /* held-out prompts (default 200) */
    int digits;        /* addition: operand digits (default 3) */
    int n_numbers;     /* countdown: numbers given (default 3) */
    int max_number;    /* countdown: numbers drawn from 1..max_number (default 9) */
    int max_target;    /* countdown: targets 1..max_target (default 50) */
    int min_len, max_len; /* reverse/sort: string length range (default 3..6) */
} task_config;

task_config task_config_default(void);

typedef struct task task; /* opaque */

/* name: "addition", "countdown", "reverse" or "sort"; an unknown name is COH_ENOTFOUND with
 * the list of known names. c may be NULL for the defaults. Config ranges (COH_EINVAL
 * otherwise): eval_size 0..TASK_EVAL_MAX, digits 1..9, n_numbers 2..8, max_number 1..1000,
 * max_target 1..100000, 1 <= min_len <= max_len <= 32. Builds the held-out set now, and fails
 * with COH_EINVAL when the task has too few distinct prompts for eval_size (or the held-out
 * set would cover nearly all of what the training stream draws). *out is NULL on failure. */
int task_create(const char *name, const task_config *c, task **out, coh_err *err);
void task_destroy(task *t);
const char *task_name(const task *t);

/* Training item number index (deterministic; never one of the held-out prompts). Returns 0,
 * or COH_EINVAL for bad arguments (never expected for a task that task_create accepted). */
int task_train_item(const task *t, uint64_t index, task_item *out);
int task_eval_size(const task *t);
/* The longest prompt text (characters, <bos> not counted) the task's generator can produce
 * with its config: every training and held-out prompt is at most this long. */
int task_max_prompt_len(const task *t);
/* Held-out item i, 0 <= i < task_eval_size. */
int task_eval_item(const task *t, int i, task_item *out);

typedef struct task_score {
    double correct;  /* 1 exactly right, 0 otherwise */
    double format;   /* 1 when the completion has the expected shape, 0 otherwise */
    char detail[128];/* why, for people: "expected 579, got 578", "division by zero", ... */
} task_score;

/* Score a completion of an item of this task. item->answer and item->meta carry what the
 * verifier needs (a prompt file may supply them). Never fails on any completion text; fails
 * (COH_EINVAL) only when the item itself is unusable (e.g. countdown meta without numbers). */
int task_verify(const task *t, const task_item *item, const char *completion, task_score *out,
                coh_err *err);

#endif
