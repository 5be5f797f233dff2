/* prompts.h - where the learner's RL prompts come from: a built-in task's generator or a
 * user's JSON Lines prompt file, addressed by a data-cursor index.
 *
 * Prompt number idx is fixed for a run: the generator's item idx, or line idx % n of the file
 * (a file is cycled). psrc_next hands out indices in order from the cursor; the cursor is
 * what a checkpoint saves (psrc_cursor / psrc_set_cursor) so that a restarted learner goes on
 * where it was instead of drawing fresh prompts.
 *
 * Prompt files: one JSON object per line, {"prompt": string, "task": string, "answer":
 * string (optional), "metadata": any JSON (optional, passed on untouched as JSON text)};
 * blank lines are skipped; every prompt must be encodable by the run's tokenizer. Errors name
 * the file and line.
 *
 * Not thread-safe: the learner calls it from its loop thread only.
 */
#ifndef COHORT_PROMPTS_H
#define COHORT_PROMPTS_H

#include <stdint.h>

#include "err.h"
#include "tasks.h"
#include "tokenizer.h"

typedef struct psrc psrc; /* opaque */

/* Prompts from the built-in task `task` (tasks.h) with config tc, or, when prompts_file is
 * non-NULL and non-empty, from that file. tok (kept, not owned) encodes prompts; the first
 * index handed out is first_index. */
int psrc_create(const char *task, const task_config *tc, const char *prompts_file,
                const tokenizer *tok, uint64_t first_index, psrc **out, coh_err *err);
void psrc_destroy(psrc *p); /* NULL is fine */

/* The next index (advances the cursor). Never fails: both sources are endless. */
uint64_t psrc_next(psrc *p);
uint64_t psrc_cursor(const psrc *p);
void psrc_set_cursor(psrc *p, uint64_t next_index);

/* Prompt idx: text, answer and metadata into *it; returns the task name (the file's "task"
 * of that line, or the built-in task's name). */
const char *psrc_item(const psrc *p, uint64_t idx, task_item *it);

/* Prompt idx as token ids: <bos> then the encoded text, at most cap ids. Returns the count,
 * or a negative code (COH_ERANGE when it does not fit). */
int psrc_tokens(const psrc *p, uint64_t idx, int *ids, int cap, coh_err *err);

/* "file" for a prompt file, else the built-in task's name (what settings.task records). */
const char *psrc_kind(const psrc *p);
int psrc_file_count(const psrc *p); /* lines of the prompt file; 0 for a generator */

#endif
