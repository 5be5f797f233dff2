/* trainopt.h - the one option table of a training run, shared by cohort-train and
 * cohort-learner.
 *
 * Every setting of trainer_config a user chooses is one row of a table in trainopt.c: its
 * long flag name, the kind of value it takes, the trainer_config field it sets, the range a
 * value must lie in, the binaries that take it (TOPT_TRAIN, TOPT_LEARNER) and a help line.
 * Everything else is derived from that table, so the pieces cannot disagree:
 *   - the getopt_long entries of both binaries (topt_long_options) and their --help text;
 *   - checked parsing of every value through common/cli.h (topt_apply): "--beta abc" or
 *     "--rl-lr -1" fails with a message naming the flag and the expected range;
 *   - `--config FILE`, a JSON object carrying the same settings (topt_load_file);
 *   - the settings record written at the head of metrics.jsonl and into every checkpoint's
 *     trainer_state.json (topt_to_json), which reads back through topt_from_json, so a run is
 *     reproducible from one file: `cohort-train --config settings.json`.
 *
 * JSON keys. A key is the flag name with '-' or with '_' ("rl-lr" and "rl_lr" are the same
 * key). The record (topt_to_json) writes '_' names, except for two keys that keep the names
 * earlier records used: "prompts_per_step" (--prompts) and "lr_schedule" (--schedule); both
 * spellings are accepted when reading. The record also holds three derived keys:
 * "kl_estimator" (always "k3"), "kl_placement" ("reward" for reinforce_pp, else "loss"), and,
 * when --prompts-file is set, "task": "file" with "builtin_task" naming the built-in task that
 * still provides the warm-start demonstrations and the held-out set ("prompts_file" is
 * written only when set, so a cohort-train record holds no cohort-learner key). Reading
 * accepts the derived keys only with consistent values (a "kl_placement" that contradicts
 * "estimator" is refused).
 *
 * JSON values. Numbers for int/u64/float settings (an integral value for int; "seed" may also
 * be a string of decimal digits, as the record writes seeds above 2^53), strings for
 * choice/string/path settings, true/false for flags, an array of strings for lists
 * ("stop"), and for "model_config" (--model-config)
 * either a path to a config.json or the config object itself (the record always writes the
 * object). Paths are taken relative to the working directory, as on the command line.
 * A value is refused (COH_EINVAL or COH_ERANGE) with the key, the value and the expected range;
 * so are unknown keys, keys given twice ("rl-lr" and "rl_lr" together), keys of the other
 * binary (--prompts-file is cohort-learner's) and "config" inside a config file.
 *
 * Flags (kind TOPT_FLAG) take no value on the command line and set the setting to true; in
 * JSON they may be true or false.
 *
 * Lists (kind TOPT_STRLIST: --stop TEXT, at most 8 stop strings of 1..64 bytes of valid
 * UTF-8 each, common/stops.h) are repeatable: topt_apply adds one string per use. On a
 * command line the first use replaces the list a --config file gave, and later uses add to
 * it, so the command line still overrides the file. In JSON the value is the whole list, an
 * array of strings ("stop": ["\n\n", "###"]; [] for none), and the record always writes it.
 *
 * Model size (trainer.c): when the policy is created randomly and --model-config was not
 * given (model_from_config == 0), max_position_embeddings is raised so that the task's
 * longest prompt plus --max-new-tokens fits; a given config that is too small is refused.
 *
 * Nothing here prints (except topt_print_help) or exits; errors come back in coh_err, and
 * a binary prints "<program>: <err.msg>" and exits with status 2.
 */
#ifndef COHORT_TRAINOPT_H
#define COHORT_TRAINOPT_H

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>

#include "err.h"
#include "trainer.h"

/* The binaries an option applies to (a mask). */
#define TOPT_TRAIN 1u   /* cohort-train */
#define TOPT_LEARNER 2u /* cohort-learner */
#define TOPT_ALL (TOPT_TRAIN | TOPT_LEARNER)

/* getopt_long values of table entries start here (topt_parse_args); a binary's own options
 * must use values below it. */
#define TOPT_VAL_BASE 0x10000

typedef enum topt_kind {
    TOPT_INT,    /* int field, decimal integer in [lo, hi] */
    TOPT_LONG,   /* long field, decimal integer in [lo, hi] */
    TOPT_U64,    /* uint64_t field, any decimal integer in [0, 2^64) (the seed) */
    TOPT_FLOAT,  /* float field, finite real in the range (ends open or closed) */
    TOPT_CHOICE, /* one of a list of names (task, estimator, aggregation, schedule) */
    TOPT_STRING, /* text stored in a char array */
    TOPT_PATH,   /* a file or folder name stored in a char array */
    TOPT_STRLIST,/* repeatable: each use adds one string to a stops_list (--stop TEXT) */
    TOPT_FLAG,   /* no value on the command line: sets the int field to 1 */
    TOPT_MODEL,  /* --model-config: a config.json path (or, in JSON, the object) */
    TOPT_CONFIG  /* --config FILE: a JSON object of settings (no field of its own) */
} topt_kind;

/* ---- the table ------------------------------------------------------------------------ */

/* Number of entries. Indices 0..topt_count()-1 are stable within one build. */
int topt_count(void);
/* Index of the entry for a flag or JSON key ("rl-lr", "rl_lr", "--rl-lr",
 * "prompts_per_step"), or -1. */
int topt_find(const char *name);
/* The entry's flag name without dashes ("rl-lr"); NULL for a bad index. */
const char *topt_name(int index);
topt_kind topt_kind_of(int index);
unsigned topt_binaries(int index);
/* The range of a numeric entry (int, long, u64, float): 0, or COH_EINVAL for other kinds. */
int topt_range(int index, double *lo, double *hi, int *lo_open, int *hi_open);
/* NULL-terminated names of a choice entry, else NULL. */
const char *const *topt_choices(int index);

/* getopt_long entries for the options of binary `mask`: name, has_arg, flag NULL and
 * val = base + table index. Writes at most max entries (no terminating entry) and returns
 * how many were written; the total needed is topt_count() at most. */
int topt_long_options(unsigned mask, struct option *opts, int max, int base);

/* ---- applying values ------------------------------------------------------------------- */

/* Set entry `index` of c from a command-line value (arg is ignored for flags; for
 * TOPT_CONFIG it is the file to load, with the keys of both binaries allowed, whereas
 * topt_parse_args loads it with the binary's mask; for a list, arg is added to it). Values
 * are checked with cli_* (stop strings with stops_check); on
 * failure c is unchanged and err names the flag ("--group-size: 0 is out of range
 * (expected ...)"). */
int topt_apply(trainer_config *c, int index, const char *arg, coh_err *err);
/* The same by name ("rl-lr" or "rl_lr"); COH_EINVAL for a name that is not an option of
 * binary `mask`. */
int topt_apply_name(trainer_config *c, unsigned mask, const char *name, const char *arg,
                    coh_err *err);
/* Apply every key of a JSON object (see the header comment for keys and values). All or
 * nothing: on failure c is unchanged and err names the key. */
int topt_from_json(trainer_config *c, unsigned mask, const cJSON *obj, coh_err *err);
/* --config FILE: read the file and topt_from_json it; errors start with "--config FILE: "
 * and give the line of a JSON syntax error. */
int topt_load_file(trainer_config *c, unsigned mask, const char *path, coh_err *err);

/* Every setting of c as a new JSON object (the caller cJSON_Deletes it), derived keys
 * included; topt_from_json of it gives back a config whose topt_to_json is equal. NULL only
 * when out of memory. */
cJSON *topt_to_json(const trainer_config *c);

/* --resume: c holds this process's settings (defaults, then the command line); `recorded`
 * is the settings object of a checkpoint. Every recorded setting replaces c's, except the
 * settings of how and where this process runs, which keep c's values: --out, --init,
 * --model-config (the checkpoint holds the policy), --sft-steps, --raft-steps and --rl-steps
 * (the caller decides how far to train), --eval-every, --eval-size, --ckpt-every,
 * --log-every, --quiet and --prompts-file. All or nothing, like topt_from_json. */
int topt_merge_resume(trainer_config *c, const cJSON *recorded, coh_err *err);

/* ---- the command line ------------------------------------------------------------------- */

/* A binary's own option (one of `extra` below): val is its getopt_long value, arg its
 * optarg (NULL when it takes none). Return 0, or an error code with err set to stop the
 * pass (topt_parse_args returns that code). */
typedef int (*topt_other_fn)(void *ctx, int val, const char *arg, coh_err *err);

/* The whole argv pass of a binary, in two sweeps over argv with getopt_long:
 *   1. every option is recognised (unknown options and missing values are refused, naming
 *      the option) and `--config FILE` is loaded into c; it may appear anywhere, once;
 *   2. every other option is applied in command-line order, overriding the file: training
 *      options of binary `mask` through topt_apply, the binary's own options (`extra`, a
 *      {0}-terminated getopt_long array whose vals are below TOPT_VAL_BASE, with short
 *      options in `shortopts`, which may be NULL) through other(ctx, val, optarg, err).
 * Nothing is applied before the whole command line is known to parse. *next_arg receives
 * the index in argv of the first non-option argument (getopt_long moves them to the end).
 * Resets getopt's state (optind) before each sweep; not thread-safe, like getopt. Returns 0
 * or the first error, with err naming the option and what was wrong. */
int topt_parse_args(trainer_config *c, unsigned mask, int argc, char **argv,
                    const char *shortopts, const struct option *extra, topt_other_fn other,
                    void *ctx, int *next_arg, coh_err *err);

/* Help text: one line per option of binary `mask`, with its value, range and default (the
 * defaults of `defaults`, or trainer_config_default() for topt_print_help). */
void topt_print_help(unsigned mask, FILE *f);
void topt_print_help_with(unsigned mask, const trainer_config *defaults, FILE *f);

#endif
