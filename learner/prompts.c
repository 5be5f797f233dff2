/* prompts.c - the learner's RL prompt source (see prompts.h). */
#include "prompts.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One line of a prompt file: its own copies of the texts, and the tokens made at load. */
typedef struct fitem {
    char *text, *answer, *meta;
    char task[64];
    int *ids;
    int n_ids;
} fitem;

struct psrc {
    task *task;
    char task_name[64];
    const tokenizer *tok;
    int n_file;
    fitem *items;
    uint64_t cursor;
};

/* Tokens of a prompt text: a raw prompt gets the BOS id when the tokenizer says so, a
 * rendered chat is taken as it is. Returns the count or a negative code. */
static int encode_(const tokenizer *tok, const char *text, int chat, int *ids, int cap,
                   coh_err *err)
{
    int n = 0, bos = !chat && tok_add_bos(tok) && tok_bos_id(tok) >= 0;
    if (cap < 1 + bos)
        return coh_fail(err, COH_ERANGE, "no room for the prompt's tokens");
    if (bos)
        ids[0] = tok_bos_id(tok);
    int rc = tok_encode(tok, text, ids + bos, cap - bos, &n, err);
    return rc ? rc : n + bos;
}

static int add_line_(psrc *p, const psrc_config *c, int lineno, const char *line, coh_err *err)
{
    const char *path = c->prompts_file;
    int rc = COH_OK;
    cJSON *o = cJSON_Parse(line);
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(o, "messages");
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(o, "task");
    const cJSON *an = cJSON_GetObjectItemCaseSensitive(o, "answer");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    char *meta = md ? cJSON_PrintUnformatted(md) : NULL, *text = NULL;
    int chat = 0;
    if (!cJSON_IsObject(o) || !(cJSON_IsString(pr) || cJSON_IsArray(ms)) || (pr && !cJSON_IsString(pr)) ||
        (ms && !cJSON_IsArray(ms)) || !cJSON_IsString(tk) || (an && !cJSON_IsString(an)))
        rc = coh_fail(err, COH_EFORMAT,
                      "%s line %d: need {\"prompt\": string or \"messages\": [{\"role\", "
                      "\"content\"}, ...], \"task\": string} with optional \"answer\" "
                      "(string) and \"metadata\" (any JSON)",
                      path, lineno);
    else if (strlen(tk->valuestring) >= 64 || !tk->valuestring[0])
        rc = coh_fail(err, COH_ERANGE, "%s line %d: task must be 1..63 characters", path,
                      lineno);
    else if (ms && c->render) {
        coh_err e2;
        chat = 1;
        if ((rc = c->render(c->render_ctx, ms, &text, &e2)))
            coh_fail(err, rc, "%s line %d: rendering \"messages\" with the chat template: %s",
                     path, lineno, e2.msg);
    } else if (!pr)
        rc = coh_fail(err, COH_EINVAL,
                      "%s line %d: \"messages\" needs a chat template, and the policy has none "
                      "(give --chat-template FILE, or a \"prompt\" text)",
                      path, lineno);
    else if (!(text = strdup(pr->valuestring)))
        rc = coh_fail(err, COH_ENOMEM, "out of memory reading %s", path);
    int cap = c->max_prompt_tokens > 0 ? c->max_prompt_tokens : 1 << 20, n = 0;
    int *ids = rc ? NULL : malloc((size_t)cap * sizeof *ids);
    if (!rc && !ids)
        rc = coh_fail(err, COH_ENOMEM, "out of memory reading %s", path);
    if (!rc) {
        coh_err e2;
        n = encode_(p->tok, text, chat, ids, cap, &e2);
        if (n == COH_ERANGE)
            rc = coh_fail(err, COH_ERANGE,
                          "%s line %d: the prompt is more than %d tokens, all the policy's "
                          "context leaves beside --max-new-tokens",
                          path, lineno, cap);
        else if (n < 0)
            rc = coh_fail(err, n, "%s line %d: the tokenizer cannot encode the prompt: %s", path,
                          lineno, e2.msg);
    }
    if (!rc) {
        fitem *ni = realloc(p->items, (size_t)(p->n_file + 1) * sizeof *ni);
        int *fit = realloc(ids, (size_t)(n > 0 ? n : 1) * sizeof *fit);
        char *ans = strdup(an ? an->valuestring : ""), *mt = strdup(meta ? meta : "");
        if (ni)
            p->items = ni;
        if (fit)
            ids = fit;
        if (!ni || !fit || !ans || !mt) {
            free(ans);
            free(mt);
            rc = coh_fail(err, COH_ENOMEM, "out of memory reading %s", path);
        } else {
            fitem *it = &p->items[p->n_file++];
            memset(it, 0, sizeof *it);
            it->text = text;
            it->answer = ans;
            it->meta = mt;
            it->ids = ids;
            it->n_ids = n;
            snprintf(it->task, sizeof it->task, "%s", tk->valuestring);
            text = NULL;
            ids = NULL;
        }
    }
    free(ids);
    free(text);
    free(meta);
    cJSON_Delete(o);
    return rc;
}

static int load_file_(psrc *p, const psrc_config *c, coh_err *err)
{
    const char *path = c->prompts_file;
    FILE *f = fopen(path, "r");
    if (!f)
        return coh_fail(err, COH_ENOTFOUND, "cannot open prompt file %s", path);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = COH_OK;
    while (rc == COH_OK && getline(&line, &cap, f) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") != strlen(line))
            rc = add_line_(p, c, lineno, line, err);
    }
    free(line);
    fclose(f);
    if (rc == COH_OK && p->n_file == 0)
        rc = coh_fail(err, COH_EFORMAT, "prompt file %s has no prompts", path);
    return rc;
}

int psrc_create_ex(const psrc_config *c, psrc **out, coh_err *err)
{
    *out = NULL;
    psrc *p = calloc(1, sizeof *p);
    if (!p)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    p->tok = c->tok;
    p->cursor = c->first_index;
    snprintf(p->task_name, sizeof p->task_name, "%s", c->task);
    task_config tc = c->task_cfg;
    int rc = task_create(c->task, &tc, &p->task, err);
    if (rc == COH_OK && c->prompts_file && c->prompts_file[0])
        rc = load_file_(p, c, err);
    if (rc) {
        psrc_destroy(p);
        return rc;
    }
    *out = p;
    return COH_OK;
}

int psrc_create(const char *task_name, const task_config *tc, const char *prompts_file,
                const tokenizer *tok, uint64_t first_index, psrc **out, coh_err *err)
{
    psrc_config c = {.task = task_name, .task_cfg = *tc, .prompts_file = prompts_file,
                     .tok = tok, .first_index = first_index};
    return psrc_create_ex(&c, out, err);
}

void psrc_destroy(psrc *p)
{
    if (!p)
        return;
    task_destroy(p->task);
    for (int i = 0; i < p->n_file; i++) {
        free(p->items[i].text);
        free(p->items[i].answer);
        free(p->items[i].meta);
        free(p->items[i].ids);
    }
    free(p->items);
    free(p);
}

uint64_t psrc_next(psrc *p) { return p->cursor++; }
uint64_t psrc_cursor(const psrc *p) { return p->cursor; }
void psrc_set_cursor(psrc *p, uint64_t next_index) { p->cursor = next_index; }
const char *psrc_kind(const psrc *p) { return p->n_file > 0 ? "file" : p->task_name; }
int psrc_file_count(const psrc *p) { return p->n_file; }

void psrc_get(const psrc *p, uint64_t idx, psrc_prompt *out, task_item *scratch)
{
    if (p->n_file > 0) {
        const fitem *it = &p->items[idx % (uint64_t)p->n_file];
        *out = (psrc_prompt){it->task, it->text, it->answer, it->meta};
        return;
    }
    task_train_item(p->task, idx, scratch);
    *out = (psrc_prompt){p->task_name, scratch->prompt, scratch->answer, scratch->meta};
}

const char *psrc_item(const psrc *p, uint64_t idx, task_item *it)
{
    psrc_prompt pp;
    psrc_get(p, idx, &pp, it);
    if (p->n_file > 0) {
        memset(it, 0, sizeof *it);
        snprintf(it->prompt, sizeof it->prompt, "%s", pp.text);
        snprintf(it->answer, sizeof it->answer, "%s", pp.answer);
        snprintf(it->meta, sizeof it->meta, "%s", pp.meta);
    }
    return pp.task;
}

int psrc_tokens(const psrc *p, uint64_t idx, int *ids, int cap, coh_err *err)
{
    if (p->n_file > 0) {
        const fitem *it = &p->items[idx % (uint64_t)p->n_file];
        if (it->n_ids > cap)
            return coh_fail(err, COH_ERANGE, "psrc_tokens: prompt %llu has %d tokens, room for %d",
                            (unsigned long long)idx, it->n_ids, cap);
        memcpy(ids, it->ids, (size_t)it->n_ids * sizeof *ids);
        return it->n_ids;
    }
    if (cap < 2)
        return coh_fail(err, COH_ERANGE, "psrc_tokens: room for %d ids; need at least 2", cap);
    task_item it;
    task_train_item(p->task, idx, &it);
    return encode_(p->tok, it.prompt, 0, ids, cap, err);
}
