/* chat.c - chat templates rendered as transformers renders them (see chat.h). */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

int chat_render_tpl(const jinja_tpl *tpl, const cJSON *messages, int add_generation_prompt,
                    const char *bos, const char *eos, const cJSON *extra, const struct tm *now,
                    char **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!tpl || !out)
        return coh_fail(err, COH_EINVAL, "chat_render: NULL template or output");
    if (!cJSON_IsArray(messages))
        return coh_fail(err, COH_EINVAL, "chat_render: \"messages\" must be a JSON array of "
                                         "{\"role\", \"content\"} objects");
    if (extra && !cJSON_IsObject(extra))
        return coh_fail(err, COH_EINVAL, "chat_render: the extra context must be a JSON object");
    cJSON *vars = cJSON_CreateObject();
    if (!vars)
        return coh_fail(err, COH_ENOMEM, "chat_render: out of memory");
    int ok = 1;
    /* extra first, so that the fixed names below win (cJSON_AddItem keeps the first match) */
    if (extra)
        for (const cJSON *e = extra->child; e && ok; e = e->next) {
            if (!e->string || !strcmp(e->string, "messages") ||
                !strcmp(e->string, "add_generation_prompt") || !strcmp(e->string, "bos_token") ||
                !strcmp(e->string, "eos_token"))
                continue;
            ok = cJSON_AddItemToObject(vars, e->string, cJSON_Duplicate(e, 1));
        }
    ok = ok && cJSON_AddItemToObject(vars, "messages", cJSON_Duplicate(messages, 1));
    ok = ok && cJSON_AddBoolToObject(vars, "add_generation_prompt", add_generation_prompt != 0);
    if (bos)
        ok = ok && cJSON_AddStringToObject(vars, "bos_token", bos);
    if (eos)
        ok = ok && cJSON_AddStringToObject(vars, "eos_token", eos);
    if (!ok) {
        cJSON_Delete(vars);
        return coh_fail(err, COH_ENOMEM, "chat_render: out of memory building the variables");
    }
    jinja_opts opts = {.now = now};
    int rc = jinja_render(tpl, vars, &opts, out, err);
    cJSON_Delete(vars);
    return rc;
}

int chat_render(const char *template_text, const cJSON *messages, int add_generation_prompt,
                const char *bos, const char *eos, const cJSON *extra, char **out, coh_err *err)
{
    if (out)
        *out = NULL;
    jinja_tpl *tpl = NULL;
    int rc = jinja_compile(template_text, &tpl, err);
    if (rc != COH_OK)
        return rc;
    rc = chat_render_tpl(tpl, messages, add_generation_prompt, bos, eos, extra, NULL, out, err);
    jinja_free(tpl);
    return rc;
}

/* a special token field: "text" or {"content": "text", ...} (an AddedToken); NULL if absent */
static int token_field(const cJSON *root, const char *key, const char *path, char **out,
                       coh_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return COH_OK;
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return coh_fail(err, COH_EFORMAT, "%s: \"%s\" must be a string or an object with a "
                                          "string \"content\"", path, key);
    *out = strdup(v->valuestring);
    return *out ? COH_OK : coh_fail(err, COH_ENOMEM, "%s: out of memory", path);
}

int chat_config_load(const char *dir, chat_config *cfg, coh_err *err)
{
    if (!cfg)
        return coh_fail(err, COH_EINVAL, "chat_config_load: NULL config");
    memset(cfg, 0, sizeof *cfg);
    if (!dir)
        return coh_fail(err, COH_EINVAL, "chat_config_load: NULL folder");
    size_t n = strlen(dir) + sizeof "/tokenizer_config.json";
    char *path = malloc(n);
    if (!path)
        return coh_fail(err, COH_ENOMEM, "chat_config_load: out of memory");
    snprintf(path, n, "%s/tokenizer_config.json", dir);
    if (!fs_exists(path)) {
        coh_fail(err, COH_ENOTFOUND, "%s: no such file (the folder has no tokenizer_config.json, "
                                     "so no chat template)", path);
        free(path);
        return COH_ENOTFOUND;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc != COH_OK) {
        free(path);
        return rc;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        rc = coh_fail(err, COH_EFORMAT, "%s: not a JSON object", path);
        free(path);
        return rc;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    const char *tmpl = NULL;
    rc = COH_OK;
    if (cJSON_IsString(t)) {
        tmpl = t->valuestring;
    } else if (cJSON_IsArray(t)) { /* [{"name": ..., "template": ...}, ...]: take "default" */
        for (const cJSON *e = t->child; e; e = e->next) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(nm) && cJSON_IsString(tx) && !strcmp(nm->valuestring, "default"))
                tmpl = tx->valuestring;
        }
        if (!tmpl)
            rc = coh_fail(err, COH_EFORMAT, "%s: \"chat_template\" is a list without a template "
                                            "named \"default\"", path);
    } else if (t && !cJSON_IsNull(t)) {
        rc = coh_fail(err, COH_EFORMAT, "%s: \"chat_template\" must be a string or a list of "
                                        "{\"name\", \"template\"}", path);
    }
    if (rc == COH_OK && tmpl && !(cfg->chat_template = strdup(tmpl)))
        rc = coh_fail(err, COH_ENOMEM, "%s: out of memory", path);
    if (rc == COH_OK)
        rc = token_field(root, "bos_token", path, &cfg->bos_token, err);
    if (rc == COH_OK)
        rc = token_field(root, "eos_token", path, &cfg->eos_token, err);
    cJSON_Delete(root);
    free(path);
    if (rc != COH_OK)
        chat_config_free(cfg);
    return rc;
}

void chat_config_free(chat_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->chat_template);
    free(cfg->bos_token);
    free(cfg->eos_token);
    memset(cfg, 0, sizeof *cfg);
}
