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
 * instead of (or besides) "prompt", "messages": a chat ([{"role", "content"}, ...]) that the
 * source renders once, at load, with the render hook (the policy's chat template, with the
 * generation prompt); "messages" wins when a hook is given, "prompt" is the text otherwise
 * (a base model without a template takes prompts as raw text). Blank lines are skipped. Each
 * prompt is tokenized once, at load: a raw "prompt" gets tok_bos_id() in front when
 * tok_add_bos() says so; a rendered chat is encoded as it is (its template writes the BOS
 * text itself, as transformers' apply_chat_template does). It must fit max_prompt_tokens.
 * Texts have no length limit of their own. Errors name the file and line.
 *
 * Not thread-safe: the learner calls it from its loop thread only.
 */
#ifndef COHORT_PROMPTS_H
#define COHORT_PROMPTS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "err.h"
#include "tasks.h"
#include "tokenizer.h"

typedef struct psrc psrc; /* opaque */

/* Renders a prompt file's "messages" (a JSON array) into *text (malloc'd). */
typedef int (*psrc_render_fn)(void *ctx, const cJSON *messages, char **text, coh_err *err);

typedef struct psrc_config {
    const char *task;          /* built-in task (tasks.h): the generator, and the task name */
    task_config task_cfg;
    const char *prompts_file;  /* NULL or "": the generator */
    const tokenizer *tok;      /* kept, not owned */
    uint64_t first_index;      /* the first index handed out */
    int max_prompt_tokens;     /* > 0: a file prompt longer than this is refused (its line) */
    psrc_render_fn render;     /* NULL: "messages" alone is refused (no chat template) */
    void *render_ctx;
} psrc_config;

int psrc_create_ex(const psrc_config *c, psrc **out, coh_err *err);
/* Prompts from the built-in task `task` (tasks.h) with config tc, or, when prompts_file is
 * non-NULL and non-empty, from that file. tok (kept, not owned) encodes prompts; the first
 * index handed out is first_index. (psrc_create_ex with no render hook and no length limit.) */
int psrc_create(const char *task, const task_config *tc, const char *prompts_file,
                const tokenizer *tok, uint64_t first_index, psrc **out, coh_err *err);
void psrc_destroy(psrc *p); /* NULL is fine */

/* The next index (advances the cursor). Never fails: both sources are endless. */
uint64_t psrc_next(psrc *p);
uint64_t psrc_cursor(const psrc *p);
void psrc_set_cursor(psrc *p, uint64_t next_index);

/* Prompt idx, by reference: task name, the text the policy sees (for a chat, the rendered
 * template), answer ("" if none) and metadata JSON ("" if none). File prompts point into the
 * source (valid for its life); generated ones into *scratch (valid while it is). */
typedef struct psrc_prompt {
    const char *task, *text, *answer, *meta;
} psrc_prompt;
void psrc_get(const psrc *p, uint64_t idx, psrc_prompt *out, task_item *scratch);

/* Prompt idx copied into *it (texts cut to the task_item sizes); returns the task name. */
const char *psrc_item(const psrc *p, uint64_t idx, task_item *it);

/* Prompt idx as token ids (see the file comment for BOS), at most cap ids. Returns the count,
 * or a negative code (COH_ERANGE when it does not fit). */
int psrc_tokens(const psrc *p, uint64_t idx, int *ids, int cap, coh_err *err);

/* "file" for a prompt file, else the built-in task's name (what settings.task records). */
const char *psrc_kind(const psrc *p);
int psrc_file_count(const psrc *p); /* lines of the prompt file; 0 for a generator */

#endif
