/* prompts.c - the learner's RL prompt source (see prompts.h). */
#include "prompts.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct psrc {
    task *task;
    char task_name[64];
    const tokenizer *tok;
    int n_file;
    task_item *items;
    char (*tasks)[64];
    uint64_t cursor;
};

static int add_line_(psrc *p, const char *path, int lineno, const char *line, coh_err *err)
{
    int rc = COH_OK, idbuf[TASK_TEXT_MAX], nid = 0;
    cJSON *o = cJSON_Parse(line);
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(o, "task");
    const cJSON *an = cJSON_GetObjectItemCaseSensitive(o, "answer");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    char *meta = md ? cJSON_PrintUnformatted(md) : NULL;
    if (!cJSON_IsObject(o) || !cJSON_IsString(pr) || !cJSON_IsString(tk) ||
        (an && !cJSON_IsString(an)))
        rc = coh_fail(err, COH_EFORMAT,
                      "%s line %d: need {\"prompt\": string, \"task\": string} with optional "
                      "\"answer\" (string) and \"metadata\" (any JSON)",
                      path, lineno);
    else if (strlen(pr->valuestring) >= TASK_TEXT_MAX ||
             (an && strlen(an->valuestring) >= TASK_TEXT_MAX) ||
             (meta && strlen(meta) >= TASK_META_MAX) || strlen(tk->valuestring) >= 64 ||
             !tk->valuestring[0])
        rc = coh_fail(err, COH_ERANGE,
                      "%s line %d: prompt and answer must be under %d characters, metadata "
                      "under %d, task 1..63 characters",
                      path, lineno, TASK_TEXT_MAX, TASK_META_MAX);
    else if (tok_encode(p->tok, pr->valuestring, idbuf, TASK_TEXT_MAX, &nid, NULL) != COH_OK)
        rc = coh_fail(err, COH_EINVAL,
                      "%s line %d: the prompt has a character the tokenizer does not know",
                      path, lineno);
    if (rc == COH_OK) {
        task_item *ni = realloc(p->items, (size_t)(p->n_file + 1) * sizeof *ni);
        if (ni)
            p->items = ni;
        char(*nt)[64] = ni ? realloc(p->tasks, (size_t)(p->n_file + 1) * sizeof *nt) : NULL;
        if (nt)
            p->tasks = nt;
        if (!ni || !nt) {
            rc = coh_fail(err, COH_ENOMEM, "out of memory reading %s", path);
        } else {
            task_item *it = &p->items[p->n_file];
            memset(it, 0, sizeof *it);
            snprintf(it->prompt, sizeof it->prompt, "%s", pr->valuestring);
            snprintf(it->answer, sizeof it->answer, "%s", an ? an->valuestring : "");
            snprintf(it->meta, sizeof it->meta, "%s", meta ? meta : "");
            snprintf(p->tasks[p->n_file], 64, "%s", tk->valuestring);
            p->n_file++;
        }
    }
    free(meta);
    cJSON_Delete(o);
    return rc;
}

static int load_file_(psrc *p, const char *path, coh_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return coh_fail(err, COH_ENOTFOUND, "cannot open prompt file %s", path);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = COH_OK;
    while (rc == COH_OK && getline(&line, &cap, f) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") != strlen(line))
            rc = add_line_(p, path, lineno, line, err);
    }
    free(line);
    fclose(f);
    if (rc == COH_OK && p->n_file == 0)
        rc = coh_fail(err, COH_EFORMAT, "prompt file %s has no prompts", path);
    return rc;
}

int psrc_create(const char *task_name, const task_config *tc, const char *prompts_file,
                const tokenizer *tok, uint64_t first_index, psrc **out, coh_err *err)
{
    *out = NULL;
    psrc *p = calloc(1, sizeof *p);
    if (!p)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    p->tok = tok;
    p->cursor = first_index;
    snprintf(p->task_name, sizeof p->task_name, "%s", task_name);
    task_config c = *tc;
    int rc = task_create(task_name, &c, &p->task, err);
    if (rc == COH_OK && prompts_file && prompts_file[0])
        rc = load_file_(p, prompts_file, err);
    if (rc) {
        psrc_destroy(p);
        return rc;
    }
    *out = p;
    return COH_OK;
}

void psrc_destroy(psrc *p)
{
    if (!p)
        return;
    task_destroy(p->task);
    free(p->items);
    free(p->tasks);
    free(p);
}

uint64_t psrc_next(psrc *p) { return p->cursor++; }
uint64_t psrc_cursor(const psrc *p) { return p->cursor; }
void psrc_set_cursor(psrc *p, uint64_t next_index) { p->cursor = next_index; }
const char *psrc_kind(const psrc *p) { return p->n_file > 0 ? "file" : p->task_name; }
int psrc_file_count(const psrc *p) { return p->n_file; }

const char *psrc_item(const psrc *p, uint64_t idx, task_item *it)
{
    if (p->n_file > 0) {
        *it = p->items[idx % (uint64_t)p->n_file];
        return p->tasks[idx % (uint64_t)p->n_file];
    }
    task_train_item(p->task, idx, it);
    return p->task_name;
}

int psrc_tokens(const psrc *p, uint64_t idx, int *ids, int cap, coh_err *err)
{
    if (cap < 2)
        return coh_fail(err, COH_ERANGE, "psrc_tokens: room for %d ids; need at least 2", cap);
    task_item it;
    psrc_item(p, idx, &it);
    int n = 0;
    ids[0] = TOK_BOS;
    int rc = tok_encode(p->tok, it.prompt, ids + 1, cap - 1, &n, err);
    return rc ? rc : n + 1;
}
