/* chat.h - chat templates: render a conversation as transformers' apply_chat_template does.
 *
 * A chat template is the Jinja `chat_template` of a model's tokenizer_config.json. It is
 * rendered (common/jinja.h) with the variables transformers passes: `messages` (a list of
 * {"role", "content", ...} dicts, tool-call fields and all), `add_generation_prompt`,
 * `bos_token`, `eos_token`, plus any extra context (tools, documents, date_string, ...).
 * The output is the exact prompt text, special-token strings included; nothing else is
 * added or stripped.
 */
#ifndef COHORT_CHAT_H
#define COHORT_CHAT_H

#include <time.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "jinja.h"

/* Render template_text once (compile + render). messages must be a JSON array; bos and eos
 * may be NULL (then undefined in the template, as when transformers has no such token);
 * extra (may be NULL) is a JSON object whose members become further variables (they never
 * replace messages/add_generation_prompt/bos_token/eos_token).
 * On success *out is a malloc'd NUL-terminated string for the caller to free.
 * Errors: COH_EFORMAT (template syntax or runtime error, the line named), COH_EINVAL (bad
 * arguments, or the template called raise_exception: the message is its text), COH_ENOMEM;
 * *out is then NULL. */
int chat_render(const char *template_text, const cJSON *messages, int add_generation_prompt,
                const char *bos, const char *eos, const cJSON *extra, char **out, coh_err *err);

/* The same with a template compiled once by jinja_compile (the learner renders many prompts
 * with one template). now pins strftime_now() (NULL: the current local time). */
int chat_render_tpl(const jinja_tpl *tpl, const cJSON *messages, int add_generation_prompt,
                    const char *bos, const char *eos, const cJSON *extra, const struct tm *now,
                    char **out, coh_err *err);

/* What a model folder's tokenizer_config.json says about chat formatting. Strings are
 * malloc'd (NULL when absent); release with chat_config_free. */
typedef struct chat_config {
    char *chat_template; /* the "default" one when the file holds a list of named templates */
    char *bos_token;     /* a string, or the "content" of an AddedToken object */
    char *eos_token;
} chat_config;

/* Read DIR/tokenizer_config.json. A missing file is COH_ENOTFOUND, unreadable JSON or
 * wrongly typed fields COH_EFORMAT (the field named); a file without chat_template is fine
 * (cfg->chat_template NULL: base models take raw text). On error cfg is left zeroed. */
int chat_config_load(const char *dir, chat_config *cfg, coh_err *err);

/* Free the strings of cfg and zero it; a zeroed cfg is fine. */
void chat_config_free(chat_config *cfg);

#endif
