/* model_config.c - the model configuration and its Hugging Face config.json (see model.h).
 *
 * Only the configuration half of model.h lives here (model_config_*); the parameter table
 * and the forward/backward pass are in model.c. Loading accepts config.json files written by
 * other tools: unknown keys are ignored, but keys that would change the architecture in a way
 * Cohort does not implement (another architecture, an activation other than SiLU, MLP biases,
 * a RoPE scaling other than llama3, partial rotary embeddings, a sliding window that can
 * exclude a position) are refused by name rather than silently ignored.
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

int model_config_head_dim(const model_config *c)
{
    if (c->head_dim > 0)
        return c->head_dim;
    return c->n_heads > 0 ? c->dim / c->n_heads : 0;
}

static const char *const FAMILY_ARCH[] = {"LlamaForCausalLM", "Qwen2ForCausalLM",
                                          "MistralForCausalLM"};
static const char *const FAMILY_TYPE[] = {"llama", "qwen2", "mistral"};
#define N_FAMILIES ((int)(sizeof FAMILY_ARCH / sizeof FAMILY_ARCH[0]))

const char *model_family_arch(int family)
{
    return family >= 0 && family < N_FAMILIES ? FAMILY_ARCH[family] : "?";
}

const char *model_family_type(int family)
{
    return family >= 0 && family < N_FAMILIES ? FAMILY_TYPE[family] : "?";
}

static int positive_finite(float v) { return isfinite(v) && v > 0.0f; }

/* The family-specific fields: biases each family can express, the llama3 RoPE numbers. */
static int validate_family(const model_config *c, coh_err *err)
{
    if (c->family < 0 || c->family >= N_FAMILIES)
        return coh_fail(err, COH_EINVAL, "config family = %d is not a known model family",
                        c->family);
    if ((c->qkv_bias != 0 && c->qkv_bias != 1) || (c->o_bias != 0 && c->o_bias != 1))
        return coh_fail(err, COH_EINVAL,
                        "config attention biases must be 0 or 1 (qkv_bias %d, o_bias %d)",
                        c->qkv_bias, c->o_bias);
    switch (c->family) {
    case MODEL_FAMILY_LLAMA:
        if (c->qkv_bias != c->o_bias)
            return coh_fail(err, COH_EINVAL,
                            "config attention_bias: LlamaForCausalLM puts biases on all of "
                            "q/k/v/o_proj or none (qkv_bias %d, o_bias %d)",
                            c->qkv_bias, c->o_bias);
        break;
    case MODEL_FAMILY_QWEN2:
        if (c->qkv_bias != 1 || c->o_bias != 0)
            return coh_fail(err, COH_EINVAL,
                            "config architectures: Qwen2ForCausalLM always has q/k/v_proj biases "
                            "and no o_proj bias (qkv_bias %d, o_bias %d)",
                            c->qkv_bias, c->o_bias);
        break;
    case MODEL_FAMILY_MISTRAL:
        if (c->qkv_bias || c->o_bias)
            return coh_fail(err, COH_EINVAL,
                            "config architectures: MistralForCausalLM has no attention biases "
                            "(qkv_bias %d, o_bias %d)",
                            c->qkv_bias, c->o_bias);
        break;
    }
    if (c->rope_type == MODEL_ROPE_LLAMA3) {
        if (!positive_finite(c->rope_factor))
            return coh_fail(err, COH_ERANGE,
                            "config rope_scaling.factor = %g is out of range (must be > 0)",
                            (double)c->rope_factor);
        if (!positive_finite(c->rope_low_freq_factor))
            return coh_fail(err, COH_ERANGE,
                            "config rope_scaling.low_freq_factor = %g is out of range (must be "
                            "> 0)",
                            (double)c->rope_low_freq_factor);
        if (!isfinite(c->rope_high_freq_factor) ||
            !(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return coh_fail(err, COH_ERANGE,
                            "config rope_scaling.high_freq_factor = %g must be larger than "
                            "low_freq_factor = %g",
                            (double)c->rope_high_freq_factor, (double)c->rope_low_freq_factor);
        if (c->rope_orig_max_pos < 1 || c->rope_orig_max_pos > CFG_MAX_SEQ)
            return coh_fail(err, COH_ERANGE,
                            "config rope_scaling.original_max_position_embeddings = %d is out "
                            "of range (allowed 1..%d)",
                            c->rope_orig_max_pos, CFG_MAX_SEQ);
    } else if (c->rope_type != MODEL_ROPE_DEFAULT) {
        return coh_fail(err, COH_EINVAL, "config rope_type = %d is not a known RoPE type",
                        c->rope_type);
    }
    if (c->n_eos < 0 || c->n_eos > MODEL_MAX_EOS)
        return coh_fail(err, COH_ERANGE, "config eos_token_id lists %d ids (at most %d)",
                        c->n_eos, MODEL_MAX_EOS);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            return coh_fail(err, COH_ERANGE,
                            "config eos_token_id %d is outside the vocabulary [0, %d)",
                            c->eos_ids[i], c->vocab_size);
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
    int head_dim;
    if (c->head_dim == 0) {
        if (c->dim % c->n_heads != 0)
            return coh_fail(err, COH_EINVAL,
                            "config hidden_size = %d is not divisible by num_attention_heads = "
                            "%d (and no head_dim is given)",
                            c->dim, c->n_heads);
        head_dim = c->dim / c->n_heads;
        if (head_dim % 2 != 0)
            return coh_fail(err, COH_EINVAL,
                            "config head dimension hidden_size / num_attention_heads = %d is "
                            "odd; rotary embeddings need an even head dimension",
                            head_dim);
    } else {
        if ((rc = check_range(err, "head_dim", c->head_dim, CFG_MAX_DIM)))
            return rc;
        head_dim = c->head_dim;
        if (head_dim % 2 != 0)
            return coh_fail(err, COH_EINVAL,
                            "config head_dim = %d is odd; rotary embeddings need an even head "
                            "dimension",
                            head_dim);
        if ((long long)head_dim * c->n_heads > CFG_MAX_DIM * 4LL)
            return coh_fail(err, COH_ERANGE,
                            "config num_attention_heads x head_dim = %d x %d is out of range "
                            "(at most %d)",
                            c->n_heads, head_dim, CFG_MAX_DIM * 4);
    }
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
    return validate_family(c, err);
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

static const cJSON *get_item(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

/* A required number of the rope_scaling object, named "rope_scaling.KEY" in messages. */
static int get_rope_number(const cJSON *rs, const char *label, const char *key, double *out,
                           coh_err *err)
{
    const cJSON *it = get_item(rs, key);
    if (!it)
        return coh_fail(err, COH_EFORMAT,
                        "config %s.%s is missing; rope_type \"llama3\" needs factor, "
                        "low_freq_factor, high_freq_factor and original_max_position_embeddings",
                        label, key);
    if (!cJSON_IsNumber(it))
        return coh_fail(err, COH_EFORMAT, "config %s.%s is not a number", label, key);
    *out = it->valuedouble;
    return COH_OK;
}

/* architectures[0] and model_type -> c->family. Neither given: Llama (older Cohort files). */
static int parse_family(const cJSON *root, model_config *c, coh_err *err)
{
    static const char *const suffixes[] = {"ForCausalLM", "ForSequenceClassification"};
    int from_arch = -1, from_type = -1;
    const char *arch_name = NULL;
    const cJSON *arch = get_item(root, "architectures");
    if (arch) {
        if (!cJSON_IsArray(arch) || !arch->child || !cJSON_IsString(arch->child))
            return coh_fail(err, COH_EFORMAT,
                            "config architectures must be a list of strings such as "
                            "[\"LlamaForCausalLM\"]");
        arch_name = arch->child->valuestring;
        for (int f = 0; f < N_FAMILIES && from_arch < 0; f++) {
            size_t base = strlen(FAMILY_ARCH[f]) - strlen("ForCausalLM");
            if (strncmp(arch_name, FAMILY_ARCH[f], base) != 0)
                continue;
            for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++)
                if (strcmp(arch_name + base, suffixes[k]) == 0)
                    from_arch = f;
        }
        if (from_arch < 0)
            return coh_fail(err, COH_EUNSUPPORTED,
                            "config architectures[0] is \"%.64s\"; Cohort implements "
                            "LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM (and "
                            "their ForSequenceClassification reward models)",
                            arch_name);
    }
    const cJSON *type = get_item(root, "model_type");
    if (type) {
        if (!cJSON_IsString(type))
            return coh_fail(err, COH_EFORMAT, "config model_type is not a string");
        for (int f = 0; f < N_FAMILIES; f++)
            if (strcmp(type->valuestring, FAMILY_TYPE[f]) == 0)
                from_type = f;
        if (from_type < 0)
            return coh_fail(err, COH_EUNSUPPORTED,
                            "config model_type is \"%.64s\"; Cohort implements \"llama\", "
                            "\"qwen2\" and \"mistral\"",
                            type->valuestring);
        if (from_arch >= 0 && from_arch != from_type)
            return coh_fail(err, COH_EUNSUPPORTED,
                            "config model_type \"%.32s\" does not match architectures[0] "
                            "\"%.64s\"",
                            type->valuestring, arch_name);
    }
    c->family = from_arch >= 0 ? from_arch : from_type >= 0 ? from_type : MODEL_FAMILY_LLAMA;
    return COH_OK;
}

/* rope_scaling (or transformers 5's rope_parameters): "default" or "llama3"; else refused. */
static int parse_rope(const cJSON *root, model_config *c, coh_err *err)
{
    const char *label = "rope_scaling";
    const cJSON *rs = get_item(root, label);
    if (!rs) {
        label = "rope_parameters";
        rs = get_item(root, label);
        const cJSON *theta = rs ? get_item(rs, "rope_theta") : NULL;
        if (theta && !get_item(root, "rope_theta")) {
            if (!cJSON_IsNumber(theta))
                return coh_fail(err, COH_EFORMAT, "config rope_parameters.rope_theta is not a "
                                                  "number");
            c->rope_theta = (float)theta->valuedouble;
        }
    }
    if (!rs)
        return COH_OK;
    if (!cJSON_IsObject(rs))
        return coh_fail(err, COH_EFORMAT, "config %s is not an object", label);
    const cJSON *t = get_item(rs, "rope_type");
    const char *tkey = "rope_type";
    if (!t && (t = get_item(rs, "type")) != NULL) /* the older spelling */
        tkey = "type";
    if (!t || !cJSON_IsString(t))
        return coh_fail(err, COH_EFORMAT, "config %s.%s is %s; it must name the RoPE type", label,
                        tkey, t ? "not a string" : "missing");
    const char *name = t->valuestring;
    if (strcmp(name, "default") == 0)
        return COH_OK;
    if (strcmp(name, "llama3") != 0)
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config %s.%s is \"%.32s\"; Cohort implements \"default\" and \"llama3\" "
                        "RoPE only",
                        label, tkey, name);
    double factor, lo, hi, orig;
    int rc;
    if ((rc = get_rope_number(rs, label, "factor", &factor, err)) ||
        (rc = get_rope_number(rs, label, "low_freq_factor", &lo, err)) ||
        (rc = get_rope_number(rs, label, "high_freq_factor", &hi, err)) ||
        (rc = get_rope_number(rs, label, "original_max_position_embeddings", &orig, err)))
        return rc;
    if (orig != floor(orig) || orig < 1.0 || orig > (double)CFG_MAX_SEQ)
        return coh_fail(err, COH_ERANGE,
                        "config %s.original_max_position_embeddings = %g is not an integer in "
                        "1..%d",
                        label, orig, CFG_MAX_SEQ);
    c->rope_type = MODEL_ROPE_LLAMA3;
    c->rope_factor = (float)factor;
    c->rope_low_freq_factor = (float)lo;
    c->rope_high_freq_factor = (float)hi;
    c->rope_orig_max_pos = (int)orig;
    return COH_OK;
}

/* eos_token_id as an int, a list of ints, or null / absent (then *found = 0). */
static int parse_eos(const cJSON *root, const char *where, model_config *c, int *found,
                     coh_err *err)
{
    *found = 0;
    const cJSON *it = get_item(root, "eos_token_id");
    if (!it)
        return COH_OK;
    int ids[MODEL_MAX_EOS], n = 0;
    const cJSON *one = it;
    if (cJSON_IsArray(it)) {
        if (cJSON_GetArraySize(it) > MODEL_MAX_EOS)
            return coh_fail(err, COH_ERANGE, "%s eos_token_id lists %d ids; Cohort keeps at most %d",
                            where, cJSON_GetArraySize(it), MODEL_MAX_EOS);
        one = it->child;
    }
    for (; one; one = cJSON_IsArray(it) ? one->next : NULL) {
        double d = cJSON_IsNumber(one) ? one->valuedouble : -1.0;
        if (!cJSON_IsNumber(one) || d != floor(d) || d < 0.0 || d > (double)CFG_MAX_VOCAB)
            return coh_fail(err, COH_EFORMAT,
                            "%s eos_token_id must be a token id or a list of token ids", where);
        ids[n++] = (int)d;
    }
    c->n_eos = n;
    memcpy(c->eos_ids, ids, (size_t)n * sizeof(int));
    *found = 1;
    return COH_OK;
}

/* Keys that describe an architecture variant Cohort does not implement, and the attention
 * biases / sliding window each family implies. */
static int parse_variants(const cJSON *root, model_config *c, coh_err *err)
{
    const cJSON *it = get_item(root, "hidden_act");
    if (it && !(cJSON_IsString(it) && strcmp(it->valuestring, "silu") == 0))
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config hidden_act is \"%.32s\"; Cohort implements only \"silu\"",
                        cJSON_IsString(it) ? it->valuestring : "(not a string)");
    if (cJSON_IsTrue(get_item(root, "mlp_bias")))
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config mlp_bias is true; Cohort's MLP has no biases");
    it = get_item(root, "partial_rotary_factor");
    if (it && !(cJSON_IsNumber(it) && it->valuedouble == 1.0))
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config partial_rotary_factor is %g; Cohort rotates the whole head "
                        "(1.0) only",
                        cJSON_IsNumber(it) ? it->valuedouble : -1.0);
    it = get_item(root, "attention_bias");
    if (it && !cJSON_IsBool(it))
        return coh_fail(err, COH_EFORMAT, "config key \"attention_bias\" is not true/false");
    switch (c->family) {
    case MODEL_FAMILY_LLAMA: /* LlamaAttention: bias=config.attention_bias on q, k, v and o */
        c->qkv_bias = c->o_bias = cJSON_IsTrue(it) ? 1 : 0;
        break;
    case MODEL_FAMILY_QWEN2: /* Qwen2Attention: q/k/v always biased, o never */
        c->qkv_bias = 1;
        c->o_bias = 0;
        break;
    default: /* MistralAttention: no biases */
        c->qkv_bias = c->o_bias = 0;
        break;
    }
    /* a sliding window narrower than the longest sequence changes attention */
    int window = 0, rc = get_int(root, "sliding_window", &window, err);
    if (rc != COH_OK && rc != COH_ENOTFOUND)
        return rc;
    int has_window = rc == COH_OK;
    if (c->family == MODEL_FAMILY_QWEN2 && !cJSON_IsTrue(get_item(root, "use_sliding_window")))
        has_window = 0; /* Qwen2 reads sliding_window only with use_sliding_window */
    if (c->family == MODEL_FAMILY_LLAMA)
        has_window = 0; /* LlamaConfig has no sliding window */
    if (has_window && window < c->max_seq)
        return coh_fail(err, COH_EUNSUPPORTED,
                        "config sliding_window = %d is smaller than max_position_embeddings = "
                        "%d; Cohort does not implement sliding-window attention (set "
                        "sliding_window to null%s)",
                        window, c->max_seq,
                        c->family == MODEL_FAMILY_QWEN2 ? " or use_sliding_window to false" : "");
    int head_dim;
    rc = get_int(root, "head_dim", &head_dim, err);
    if (rc == COH_OK) {
        if (head_dim < 1)
            return coh_fail(err, COH_ERANGE, "config head_dim = %d is out of range (must be >= 1)",
                            head_dim);
        c->head_dim = head_dim;
    } else if (rc != COH_ENOTFOUND) {
        return rc;
    }
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
    int found;
    if ((rc = parse_family(root, c, err)) || (rc = parse_variants(root, c, err)) ||
        (rc = parse_rope(root, c, err)) || (rc = parse_eos(root, "config", c, &found, err)))
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

    const char *arch[] = {model_family_arch(c->family)};
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok) {
        cJSON *a = cJSON_CreateStringArray(arch, 1);
        if (!a || !cJSON_AddItemToObject(root, "architectures", a)) {
            cJSON_Delete(a);
            ok = 0;
        }
    }
    ok = ok && cJSON_AddStringToObject(root, "model_type", model_family_type(c->family)) &&
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
    /* family extras, written only when they say something (older files stay byte-identical) */
    if (ok && c->head_dim > 0)
        ok = cJSON_AddNumberToObject(root, "head_dim", c->head_dim) != NULL;
    if (ok && c->family == MODEL_FAMILY_LLAMA && c->qkv_bias)
        ok = cJSON_AddBoolToObject(root, "attention_bias", 1) != NULL;
    if (ok && c->family == MODEL_FAMILY_QWEN2)
        ok = cJSON_AddBoolToObject(root, "use_sliding_window", 0) != NULL;
    if (ok && c->family == MODEL_FAMILY_MISTRAL)
        ok = cJSON_AddNullToObject(root, "sliding_window") != NULL;
    if (ok && c->rope_type == MODEL_ROPE_LLAMA3) {
        cJSON *rs = cJSON_AddObjectToObject(root, "rope_scaling");
        ok = rs && cJSON_AddStringToObject(rs, "rope_type", "llama3") &&
             add_raw_float(rs, "factor", c->rope_factor) &&
             add_raw_float(rs, "low_freq_factor", c->rope_low_freq_factor) &&
             add_raw_float(rs, "high_freq_factor", c->rope_high_freq_factor) &&
             cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                     c->rope_orig_max_pos);
    }
    if (ok && c->n_eos == 1)
        ok = cJSON_AddNumberToObject(root, "eos_token_id", c->eos_ids[0]) != NULL;
    if (ok && c->n_eos > 1) {
        cJSON *e = cJSON_CreateIntArray(c->eos_ids, c->n_eos);
        ok = e && cJSON_AddItemToObject(root, "eos_token_id", e);
        if (!ok)
            cJSON_Delete(e);
    }
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

int model_config_load_generation(const char *path, model_config *c, coh_err *err)
{
    if (!path || !c)
        return coh_fail(err, COH_EINVAL, "model_config_load_generation: NULL argument");
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc != COH_OK)
        return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return coh_fail(err, COH_EFORMAT, "'%s' is not a JSON object", path);
    }
    model_config next = *c;
    int found = 0;
    rc = parse_eos(root, "generation_config.json", &next, &found, err);
    cJSON_Delete(root);
    if (rc == COH_OK && found)
        rc = model_config_validate(&next, err);
    if (rc != COH_OK)
        return coh_wrap(err, rc, "'%s'", path);
    *c = next;
    return COH_OK;
}
