/* model_config.c - the model configuration and its Hugging Face config.json (see model.h).
 *
 * Only the configuration half of model.h lives here (model_config_*); the parameter table
 * and the forward/backward pass are in model.c. Loading accepts config.json files written by
 * other tools: unknown keys are ignored, but keys that would change the architecture in a way
 * Cohort does not implement (biases, an activation other than SiLU, RoPE scaling, a head_dim
 * that is not hidden_size / num_attention_heads) are refused rather than silently ignored.
 */
#include "model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

/* Upper bounds: generous for a CPU trainer, small enough that sizes never overflow. */
#define CFG_MAX_VOCAB (1 << 20)
#define CFG_MAX_DIM 65536
#define CFG_MAX_HIDDEN (1 << 20)
#define CFG_MAX_LAYERS 1024
#define CFG_MAX_HEADS 65536
#define CFG_MAX_SEQ (1 << 20)

model_config model_config_default(int vocab_size)
{
    model_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = vocab_size;
    c.dim = 64;
    c.hidden_dim = 176;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 4;
    c.max_seq = 64;
    c.tie_embeddings = 0;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    return c;
}

/* ---- validation --------------------------------------------------------------------- */

static int check_range(coh_err *err, const char *key, int v, int max)
{
    if (v < 1 || v > max)
        return coh_fail(err, COH_ERANGE, "config %s = %d is out of range (allowed 1..%d)", key,
                        v, max);
    return COH_OK;
}

int model_config_validate(const model_config *c, coh_err *err)
{
    if (!c)
        return coh_fail(err, COH_EINVAL, "model_config_validate: NULL config");
    int rc;
    if ((rc = check_range(err, "vocab_size", c->vocab_size, CFG_MAX_VOCAB)) ||
        (rc = check_range(err, "hidden_size", c->dim, CFG_MAX_DIM)) ||
        (rc = check_range(err, "intermediate_size", c->hidden_dim, CFG_MAX_HIDDEN)) ||
        (rc = check_range(err, "num_hidden_layers", c->n_layers, CFG_MAX_LAYERS)) ||
        (rc = check_range(err, "num_attention_heads", c->n_heads, CFG_MAX_HEADS)) ||
        (rc = check_range(err, "num_key_value_heads", c->n_kv_heads, CFG_MAX_HEADS)) ||
        (rc = check_range(err, "max_position_embeddings", c->max_seq, CFG_MAX_SEQ)))
        return rc;
    if (c->dim % c->n_heads != 0)
        return coh_fail(err, COH_EINVAL,
                        "config hidden_size = %d is not divisible by num_attention_heads = %d",
                        c->dim, c->n_heads);
    int head_dim = c->dim / c->n_heads;
    if (head_dim % 2 != 0)
        return coh_fail(err, COH_EINVAL,
                        "config head dimension hidden_size / num_attention_heads = %d is odd; "
                        "rotary embeddings need an even head dimension",
                        head_dim);
    if (c->n_heads % c->n_kv_heads != 0)
        return coh_fail(err, COH_EINVAL,
                        "config num_attention_heads = %d is not a multiple of "
                        "num_key_value_heads = %d",
                        c->n_heads, c->n_kv_heads);
    if (c->tie_embeddings != 0 && c->tie_embeddings != 1)
        return coh_fail(err, COH_EINVAL, "config tie_word_embeddings must be 0 or 1, not %d",
                        c->tie_embeddings);
    if (!isfinite(c->rms_eps) || !(c->rms_eps > 0.0f) || c->rms_eps >= 1.0f)
        return coh_fail(err, COH_ERANGE,
                        "config rms_norm_eps = %g is out of range (must be > 0 and < 1)",
                        (double)c->rms_eps);
    if (!isfinite(c->rope_theta) || !(c->rope_theta > 0.0f))
        return coh_fail(err, COH_ERANGE,
                        "config rope_theta = %g is out of range (must be a positive number)",
                        (double)c->rope_theta);
    return COH_OK;
}

/* ---- loading ------------------------------------------------------------------------ */

/* Read an integer key. Missing: COH_ENOTFOUND (no message) so callers choose a default. */
static int get_int(const cJSON *root, const char *key, int *out, coh_err *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it))
        return COH_ENOTFOUND;
    if (!cJSON_IsNumber(it))
        return coh_fail(err, COH_EFORMAT, "config key \"%s\" is not a number", key);
    double d = it->valuedouble;
    if (d != floor(d) || d < -2147483648.0 || d > 2147483647.0)
        return coh_fail(err, COH_EFORMAT, "config key \"%s\" = %g is not an integer", key, d);
    *out = (int)d;
    return COH_OK;
}

static int get_required_int(const cJSON *root, const char *key, int *out, coh_err *err)
{
    int rc = get_int(root, key, out, err);
    if (rc == COH_ENOTFOUND)
        return coh_fail(err, COH_EFORMAT, "required key \"%s\" is missing", key);
    return rc;
}

static int get_float(const cJSON *root, const char *key, float dflt, float *out, coh_err *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = dflt;
        return COH_OK;
    }
    if (!cJSON_IsNumber(it))
        return coh_fail(err, COH_EFORMAT, "config key \"%s\" is not a number", key);
    *out = (float)it->valuedouble;
    return COH_OK;
}

/* Refuse keys that describe an architecture variant Cohort does not implement. */
static int check_unsupported(const cJSON *root, coh_err *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (it && !cJSON_IsNull(it) && !(cJSON_IsString(it) && strcmp(it->valuestring, "silu") == 0))
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config hidden_act is \"%.32s\"; Cohort implements only \"silu\"",
                        cJSON_IsString(it) ? it->valuestring : "(not a string)");
    const char *bias_keys[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < sizeof bias_keys / sizeof bias_keys[0]; i++) {
        it = cJSON_GetObjectItemCaseSensitive(root, bias_keys[i]);
        if (cJSON_IsTrue(it))
            return coh_fail(err, COH_EUNSUPPORTED,
                            "config %s is true; Cohort's Llama has no biases", bias_keys[i]);
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (it && !cJSON_IsNull(it))
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config sets rope_scaling; Cohort implements plain RoPE only (remove "
                        "it or set it to null)");
    return COH_OK;
}

static int config_from_json(const cJSON *root, model_config *c, coh_err *err)
{
    if (!cJSON_IsObject(root))
        return coh_fail(err, COH_EFORMAT, "config is not a JSON object");
    int rc;
    memset(c, 0, sizeof *c);
    if ((rc = get_required_int(root, "vocab_size", &c->vocab_size, err)) ||
        (rc = get_required_int(root, "hidden_size", &c->dim, err)) ||
        (rc = get_required_int(root, "intermediate_size", &c->hidden_dim, err)) ||
        (rc = get_required_int(root, "num_hidden_layers", &c->n_layers, err)) ||
        (rc = get_required_int(root, "num_attention_heads", &c->n_heads, err)) ||
        (rc = get_required_int(root, "max_position_embeddings", &c->max_seq, err)))
        return rc;
    rc = get_int(root, "num_key_value_heads", &c->n_kv_heads, err);
    if (rc == COH_ENOTFOUND)
        c->n_kv_heads = c->n_heads;
    else if (rc)
        return rc;
    if ((rc = get_float(root, "rms_norm_eps", 1e-6f, &c->rms_eps, err)) ||
        (rc = get_float(root, "rope_theta", 10000.0f, &c->rope_theta, err)))
        return rc;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (!tie || cJSON_IsNull(tie))
        c->tie_embeddings = 0;
    else if (cJSON_IsBool(tie))
        c->tie_embeddings = cJSON_IsTrue(tie) ? 1 : 0;
    else
        return coh_fail(err, COH_EFORMAT, "config key \"tie_word_embeddings\" is not true/false");
    if ((rc = check_unsupported(root, err)))
        return rc;
    int head_dim;
    rc = get_int(root, "head_dim", &head_dim, err);
    if (rc == COH_OK && c->n_heads > 0 && head_dim * c->n_heads != c->dim)
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config head_dim = %d differs from hidden_size / num_attention_heads "
                        "= %d / %d; Cohort requires them to match",
                        head_dim, c->dim, c->n_heads);
    if (rc != COH_OK && rc != COH_ENOTFOUND)
        return rc;
    return model_config_validate(c, err);
}

int model_config_load(const char *path, model_config *out, coh_err *err)
{
    if (!path || !out)
        return coh_fail(err, COH_EINVAL, "model_config_load: NULL argument");
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc != COH_OK)
        return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root)
        return coh_fail(err, COH_EFORMAT, "config '%s' is not valid JSON", path);
    model_config c;
    rc = config_from_json(root, &c, err);
    cJSON_Delete(root);
    if (rc != COH_OK)
        return coh_wrap(err, rc, "config '%s'", path);
    *out = c;
    return COH_OK;
}

/* ---- saving ------------------------------------------------------------------------- */

/* Shortest decimal that reads back as exactly the same float, as Python's json writes it:
 * "1e-05" (not 9.99999975e-06), and whole numbers as "500000.0" (not 5e+05). */
static void format_float(float v, char *out, size_t cap)
{
    if (v == floorf(v) && fabsf(v) < 1e15f) {
        snprintf(out, cap, "%.1f", (double)v);
        return;
    }
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(out, cap, "%.*g", prec, (double)v);
        if (strtof(out, NULL) == v)
            return;
    }
    snprintf(out, cap, "%.9g", (double)v);
}

static cJSON *add_raw_float(cJSON *root, const char *key, float v)
{
    char buf[48];
    format_float(v, buf, sizeof buf);
    return cJSON_AddRawToObject(root, key, buf);
}

int model_config_to_json(const model_config *c, char **out, coh_err *err)
{
    if (!c || !out)
        return coh_fail(err, COH_EINVAL, "model_config_to_json: NULL argument");
    *out = NULL;
    int rc = model_config_validate(c, err);
    if (rc != COH_OK)
        return rc;

    const char *arch[] = {"LlamaForCausalLM"};
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok) {
        cJSON *a = cJSON_CreateStringArray(arch, 1);
        if (!a || !cJSON_AddItemToObject(root, "architectures", a)) {
            cJSON_Delete(a);
            ok = 0;
        }
    }
    ok = ok && cJSON_AddStringToObject(root, "model_type", "llama") &&
         cJSON_AddStringToObject(root, "torch_dtype", "float32") &&
         cJSON_AddStringToObject(root, "hidden_act", "silu") &&
         cJSON_AddNumberToObject(root, "vocab_size", c->vocab_size) &&
         cJSON_AddNumberToObject(root, "hidden_size", c->dim) &&
         cJSON_AddNumberToObject(root, "intermediate_size", c->hidden_dim) &&
         cJSON_AddNumberToObject(root, "num_hidden_layers", c->n_layers) &&
         cJSON_AddNumberToObject(root, "num_attention_heads", c->n_heads) &&
         cJSON_AddNumberToObject(root, "num_key_value_heads", c->n_kv_heads) &&
         cJSON_AddNumberToObject(root, "max_position_embeddings", c->max_seq) &&
         add_raw_float(root, "rms_norm_eps", c->rms_eps) &&
         add_raw_float(root, "rope_theta", c->rope_theta) &&
         cJSON_AddBoolToObject(root, "tie_word_embeddings", c->tie_embeddings != 0);
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return coh_fail(err, COH_ENOMEM, "out of memory formatting config.json");
    /* hand back plain malloc'd memory (cJSON may use its own allocator hooks) */
    *out = strdup(text);
    cJSON_free(text);
    if (!*out)
        return coh_fail(err, COH_ENOMEM, "out of memory formatting config.json");
    return COH_OK;
}

int model_config_parse(const char *text, size_t len, model_config *out, coh_err *err)
{
    if (!text || !out)
        return coh_fail(err, COH_EINVAL, "model_config_parse: NULL argument");
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root)
        return coh_fail(err, COH_EFORMAT, "config.json text is not valid JSON");
    model_config c;
    int rc = config_from_json(root, &c, err);
    cJSON_Delete(root);
    if (rc == COH_OK)
        *out = c;
    return rc;
}

int model_config_save(const char *path, const model_config *c, coh_err *err)
{
    if (!path || !c)
        return coh_fail(err, COH_EINVAL, "model_config_save: NULL argument");
    char *text = NULL;
    int rc = model_config_to_json(c, &text, err);
    if (rc != COH_OK)
        return coh_wrap(err, rc, "not writing config '%s'", path);
    const void *parts[2] = {text, "\n"};
    size_t lens[2] = {strlen(text), 1};
    rc = fs_write_atomic_iov(path, parts, lens, 2, err);
    free(text);
    return rc;
}
