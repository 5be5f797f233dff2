/* main_tool.c - cohort-tool: work on policy checkpoints without any server.
 *
 * Subcommands (DESIGN.md, "The model tool"):
 *   init      a randomly initialised checkpoint from a config.json
 *   inspect   config, tensor names, shapes, dtypes and parameter count of a checkpoint
 *   sample    sample completions of a text prompt (needs the checkpoint's tokenizer)
 *   logprobs  per-token log-probabilities of id sequences, JSON Lines in and out
 *   grad      loss and gradient of one batch of completions, gradients as safetensors
 *
 * Conventions: results go to stdout, messages to stderr. Every error says what was wrong
 * and what to do, and exits nonzero (2 for a bad command line, 1 for everything else).
 * Options are parsed with getopt_long, JSON with cJSON.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat.h"
#include "checkpoint.h"
#include "cli.h"
#include "rm.h"
#include "err.h"
#include "fsutil.h"
#include "loss.h"
#include "model.h"
#include "rng.h"
#include "safetensors.h"
#include "sampler.h"
#include "softmax.h"
#include "tokenizer.h"

#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* ---- usage texts ---------------------------------------------------------------------- */

static const char USAGE_MAIN[] =
    "usage: cohort-tool COMMAND [options]\n"
    "\n"
    "Work on Cohort policy checkpoints (Hugging Face Llama folders) without any server.\n"
    "\n"
    "commands:\n"
    "  init      --config config.json --out DIR [--seed N]   random checkpoint\n"
    "  inspect   DIR [--json]                                 config, tensors, dtypes, size\n"
    "  sample    DIR --prompt TEXT [-n N ...]                 sample text completions\n"
    "  logprobs  DIR < sequences.jsonl > logprobs.jsonl       per-token log-probabilities\n"
    "  grad      DIR --batch batch.jsonl --out grads.safetensors [loss options]\n"
    "                                                         loss and gradient of a batch\n"
    "  score     RMDIR < sequences.jsonl > scores.jsonl       reward-model scores\n"
    "  encode    DIR < texts.jsonl > ids.jsonl                text to token ids\n"
    "  decode    DIR < ids.jsonl > texts.jsonl                token ids to text\n"
    "  chat      [DIR] < conversations.jsonl > texts.jsonl    render with the chat template\n"
    "\n"
    "Run 'cohort-tool COMMAND --help' for the options of one command.\n";

static const char USAGE_INIT[] =
    "usage: cohort-tool init --config config.json --out DIR [--seed N] [--force]\n"
    "\n"
    "Create a randomly initialised checkpoint in DIR (config.json, model.safetensors and,\n"
    "when the vocabulary can hold it, the built-in tokenizer.json).\n"
    "\n"
    "  --config PATH   Hugging Face style config.json (vocab_size, hidden_size, ...)\n"
    "  --out DIR       output folder (created if needed)\n"
    "  --seed N        initialisation seed (default 0)\n"
    "  --force         overwrite a checkpoint that already exists in DIR\n";

static const char USAGE_INSPECT[] =
    "usage: cohort-tool inspect DIR [--json]\n"
    "\n"
    "Print the config, every tensor of model.safetensors with its shape and dtype, the\n"
    "tokenizer and the parameter count. Mismatches between config and weights (which\n"
    "would stop the checkpoint from loading) are listed under \"problems\"; inspect still\n"
    "exits 0 for them.\n"
    "\n"
    "  --json   one machine-readable JSON object instead of text\n";

static const char USAGE_SAMPLE[] =
    "usage: cohort-tool sample DIR --prompt TEXT [options]\n"
    "\n"
    "Sample completions of <bos> + TEXT and print each one decoded, one per line.\n"
    "Needs the checkpoint's tokenizer.json.\n"
    "\n"
    "  --prompt TEXT          the prompt\n"
    "  -n, --num N            number of completions (default 1)\n"
    "  --temperature T        sampling temperature > 0 (default 1)\n"
    "  --top-p P              nucleus sampling, in (0, 1] (default 1 = off)\n"
    "  --top-k K              keep the K most likely tokens (default 0 = off)\n"
    "  --seed S               random seed (default 0); same seed, same completions\n"
    "  --max-new-tokens M     tokens to generate at most (default 16)\n"
    "  -v, --verbose          prefix each completion with its summed log-probability\n"
    "                         and a tab\n";

static const char USAGE_SCORE[] =
    "usage: cohort-tool score RMDIR < sequences.jsonl > scores.jsonl\n"
    "\n"
    "RMDIR is a reward model: a Hugging Face LlamaForSequenceClassification folder (the Llama\n"
    "body plus score.weight of shape [1, hidden_size]). For every input line\n"
    "{\"tokens\": [id, ...]} (at least 2 ids) print {\"score\": x}, the score head applied to\n"
    "the final hidden state of the last token. A bad line stops the run (exit 1).\n";

static const char USAGE_LOGPROBS[] =
    "usage: cohort-tool logprobs DIR [--temperature T] < sequences.jsonl > logprobs.jsonl\n"
    "\n"
    "For every input line {\"tokens\": [id, ...]} (at least 2 ids, at most\n"
    "max_position_embeddings) print {\"logprobs\": [...]} whose entry t is\n"
    "log p(tokens[t+1] | tokens[..t]) under softmax(logits / T). Blank lines are skipped.\n"
    "A bad line stops the run with a message naming its line number (exit 1).\n"
    "\n"
    "  --temperature T   logits are divided by T (default 1)\n";

static const char USAGE_GRAD[] =
    "usage: cohort-tool grad DIR --batch batch.jsonl --out grads.safetensors [options]\n"
    "\n"
    "Loss and gradient of one batch. Each batch line is one completion:\n"
    "  {\"group\": int, \"tokens\": [id, ...], \"prompt_len\": int,\n"
    "   \"behaviour_logprobs\": [one per completion token], \"reward\": float}\n"
    "(behaviour_logprobs, reward and group are optional with --mode sft). The gradients are\n"
    "written under the parameters' own tensor names (lm_head.weight omitted when tied); the\n"
    "loss is printed as one JSON object.\n"
    "\n"
    "  --batch PATH          batch file, JSON Lines ('-' = stdin)\n"
    "  --out PATH            where to write the gradients (safetensors, F32)\n"
    "  --ref DIR             reference policy checkpoint; required when --beta > 0\n"
    "  --mode rl|sft         loss mode (default rl)\n"
    "  --estimator NAME      grpo, drgrpo, rloo, reinforce, reinforce_pp (default grpo)\n"
    "  --eps-low E           clip range low side (default 0.2)\n"
    "  --eps-high E          clip range high side (default 0.2)\n"
    "  --beta B              KL weight (default 0)\n"
    "  --entropy-coef C      entropy bonus weight (default 0)\n"
    "  --aggregation NAME    token_mean, seq_mean_token_mean, constant (default token_mean)\n"
    "  --max-new-tokens M    denominator of the constant aggregation (default 16)\n"
    "  --temperature T       logits are divided by T (default 1)\n"
    "  --drop-zero-signal    drop groups whose rewards are all equal\n";

/* ---- small helpers -------------------------------------------------------------------- */

/* Print "cohort-tool: <context>: <err->msg>" and return EXIT_FAIL. */
static int report(const coh_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int report(const coh_err *err, const char *fmt, ...)
{
    va_list ap;
    fputs("cohort-tool: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (err && err->msg[0])
        fprintf(stderr, ": %s", err->msg);
    fputc('\n', stderr);
    return EXIT_FAIL;
}

/* A command-line mistake: message, pointer to --help, EXIT_USAGE. */
static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const char *cmd, const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        fprintf(stderr, "cohort-tool %s: ", cmd);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    fprintf(stderr, "run 'cohort-tool %s --help' for usage\n", cmd);
    return EXIT_USAGE;
}

/* Checked option values (common/cli.h): on a bad value print "cohort-tool CMD: <message
 * naming the flag and the expected range>" and return nonzero (the caller exits 2). */
static int opt_int(const char *cmd, const char *flag, const char *s, int lo, int hi, int *out)
{
    coh_err err;
    if (cli_parse_int(flag, s, lo, hi, out, &err) == COH_OK)
        return 0;
    usage_error(cmd, "%s", err.msg);
    return -1;
}

static int opt_float(const char *cmd, const char *flag, const char *s, double lo, int lo_open,
                     double hi, int hi_open, float *out)
{
    coh_err err;
    if (cli_parse_float(flag, s, lo, hi, lo_open, hi_open, out, &err) == COH_OK)
        return 0;
    usage_error(cmd, "%s", err.msg);
    return -1;
}

static int opt_seed(const char *cmd, const char *s, uint64_t *out)
{
    coh_err err;
    if (cli_parse_u64("--seed", s, 0, UINT64_MAX, out, &err) == COH_OK)
        return 0;
    usage_error(cmd, "%s", err.msg);
    return -1;
}

/* Ranges shared with the training options (learner/trainopt.c) */
#define TEMP_MAX 10.0     /* --temperature in (0, TEMP_MAX] */
#define EPS_MAX 10.0      /* --eps-low / --eps-high in [0, EPS_MAX] */
#define BETA_MAX 100.0    /* --beta in [0, BETA_MAX] */
#define ENTROPY_MAX 10.0  /* --entropy-coef in [0, ENTROPY_MAX] */
#define NEW_TOKENS_MAX 65536
#define TOP_K_MAX 1048576

/* dir + "/" + name, malloc'd; NULL when out of memory (reported). */
static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) {
        fputs("cohort-tool: out of memory\n", stderr);
        return NULL;
    }
    memcpy(p, dir, a);
    size_t n = a;
    if (n == 0 || p[n - 1] != '/')
        p[n++] = '/';
    memcpy(p + n, name, b + 1);
    return p;
}

/* The one positional DIR argument after getopt; prints the problem otherwise. */
static const char *single_dir_arg(const char *cmd, int argc, char **argv)
{
    if (optind >= argc) {
        usage_error(cmd, "missing the checkpoint folder DIR");
        return NULL;
    }
    if (optind + 1 < argc) {
        usage_error(cmd, "unexpected argument '%s' (only one DIR is taken)", argv[optind + 1]);
        return NULL;
    }
    return argv[optind];
}

/* Read one line (any length) into *buf; strips the newline and a trailing CR.
 * Returns the length, -1 at end of input, -2 on a read error (errno set). */
static long read_line(FILE *in, char **buf, size_t *cap)
{
    errno = 0;
    ssize_t n = getline(buf, cap, in);
    if (n < 0)
        return ferror(in) ? -2 : -1;
    while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r'))
        (*buf)[--n] = '\0';
    return (long)n;
}

static int is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t')
            return 0;
    return 1;
}

/* Parse a whole line as one JSON object; err names the problem. */
static int parse_json_object(const char *line, cJSON **out, coh_err *err)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(line, &end, 1);
    if (!j) {
        long at = end ? (long)(end - line) : 0;
        return coh_fail(err, COH_EFORMAT, "not valid JSON (parse error near column %ld)", at + 1);
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return coh_fail(err, COH_EFORMAT, "expected a JSON object {...}");
    }
    *out = j;
    return COH_OK;
}

/* An integer-valued JSON number in [lo, hi]. */
static int json_to_int(const cJSON *item, const char *what, long lo, long hi, int *out,
                       coh_err *err)
{
    if (!cJSON_IsNumber(item))
        return coh_fail(err, COH_EFORMAT, "%s must be an integer", what);
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v))
        return coh_fail(err, COH_EFORMAT, "%s is %g; it must be an integer", what, v);
    if (v < (double)lo || v > (double)hi)
        return coh_fail(err, COH_ERANGE, "%s is %.0f; it must be in [%ld, %ld]", what, v, lo, hi);
    *out = (int)v;
    return COH_OK;
}

/* obj[key] as an array of token ids in [0, V), 2..max_len entries; *ids malloc'd. */
static int json_tokens(const cJSON *obj, int V, int max_len, int **ids, int *n, coh_err *err)
{
    *ids = NULL;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, "tokens");
    if (!arr)
        return coh_fail(err, COH_EFORMAT,
                        "\"tokens\" is missing; expected {\"tokens\": [id, ...]}");
    if (!cJSON_IsArray(arr))
        return coh_fail(err, COH_EFORMAT, "\"tokens\" must be an array of token ids");
    int len = cJSON_GetArraySize(arr);
    if (len < 2)
        return coh_fail(err, COH_ESHAPE,
                        "\"tokens\" has %d id(s); at least 2 are needed (a token and one to "
                        "predict)",
                        len);
    if (len > max_len)
        return coh_fail(err, COH_ERANGE,
                        "\"tokens\" has %d ids, more than max_position_embeddings = %d; "
                        "shorten the sequence",
                        len, max_len);
    int *p = malloc((size_t)len * sizeof *p);
    if (!p)
        return coh_fail(err, COH_ENOMEM, "out of memory for %d tokens", len);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        char what[48];
        snprintf(what, sizeof what, "tokens[%d]", i);
        int rc = json_to_int(it, what, 0, (long)V - 1, &p[i], err);
        if (rc) {
            free(p);
            if (rc == COH_ERANGE)
                return coh_fail(err, COH_ERANGE,
                                "tokens[%d] = %.0f is outside the vocabulary [0, %d)", i,
                                it->valuedouble, V);
            return rc;
        }
        i++;
    }
    *ids = p;
    *n = len;
    return COH_OK;
}

/* arr (the value of key) as exactly n finite numbers; *vals malloc'd. */
static int json_floats(const cJSON *arr, const char *key, int n, float **vals, coh_err *err)
{
    *vals = NULL;
    if (!cJSON_IsArray(arr))
        return coh_fail(err, COH_EFORMAT, "\"%s\" must be an array of numbers", key);
    int len = cJSON_GetArraySize(arr);
    if (len != n)
        return coh_fail(err, COH_ESHAPE,
                        "\"%s\" has %d entries; it needs one per completion token, "
                        "len(tokens) - prompt_len = %d",
                        key, len, n);
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    if (!p)
        return coh_fail(err, COH_ENOMEM, "out of memory for %d numbers", n);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || fabs(it->valuedouble) > 3.0e38) {
            free(p);
            return coh_fail(err, COH_ENONFINITE, "\"%s\"[%d] must be a finite number", key, i);
        }
        p[i++] = (float)it->valuedouble;
    }
    *vals = p;
    return COH_OK;
}

/* ---- init ------------------------------------------------------------------------------ */

static int cmd_init(int argc, char **argv)
{
    const char *cmd = "init";
    const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"out", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, 's'},   {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *out_dir = NULL;
    uint64_t seed = 0;
    int force = 0, ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config_path = optarg; break;
        case 'o': out_dir = optarg; break;
        case 's':
            if (opt_seed(cmd, optarg, &seed))
                return EXIT_USAGE;
            break;
        case 'f': force = 1; break;
        case 'h': fputs(USAGE_INIT, stdout); return 0;
        default: return usage_error(cmd, NULL);
        }
    }
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!config_path || !out_dir)
        return usage_error(cmd, "both --config config.json and --out DIR are required");

    coh_err err;
    coh_err_clear(&err);
    model_config cfg;
    if (model_config_load(config_path, &cfg, &err))
        return report(&err, "cannot use the config %s", config_path);

    char *weights = join_path(out_dir, CKPT_WEIGHTS);
    if (!weights)
        return EXIT_FAIL;
    int exists = fs_exists(weights);
    free(weights);
    if (exists && !force) {
        fprintf(stderr,
                "cohort-tool: %s already holds a checkpoint (%s); choose another --out or pass "
                "--force to overwrite it\n",
                out_dir, CKPT_WEIGHTS);
        return EXIT_FAIL;
    }

    model *m = NULL;
    tokenizer *tok = NULL;
    int rc = EXIT_FAIL;
    if (model_create(&cfg, &m, &err)) {
        report(&err, "cannot create a model from %s", config_path);
        goto out;
    }
    model_init_random(m, seed);
    if (tok_create_default(&tok, &err)) {
        report(&err, "cannot create the built-in tokenizer");
        goto out;
    }
    int tok_v = tok_vocab_size(tok);
    if (cfg.vocab_size < tok_v) {
        fprintf(stderr,
                "cohort-tool: note: vocab_size %d is smaller than the built-in tokenizer's %d "
                "ids, so the checkpoint is saved without tokenizer.json; 'sample' will not work "
                "on it, 'logprobs' and 'grad' (token ids) will\n",
                cfg.vocab_size, tok_v);
        tok_destroy(tok);
        tok = NULL;
    }
    if (ckpt_save(out_dir, m, tok, &err)) {
        report(&err, "cannot write the checkpoint to %s", out_dir);
        goto out;
    }
    printf("wrote %s: %zu parameters, seed %llu, tokenizer %s\n", out_dir, model_num_params(m),
           (unsigned long long)seed, tok ? "built-in (cohort-char)" : "none");
    rc = 0;
out:
    tok_destroy(tok);
    model_destroy(m);
    return rc;
}

/* ---- inspect --------------------------------------------------------------------------- */

static const char *dtype_str(st_dtype d)
{
    switch (d) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    }
    return "?";
}

/* The double whose shortest decimal form reads back as f (1e-05f -> 1e-05, not
 * 9.99999974737875e-06), so JSON shows the number the config file held. */
static double float_as_decimal(float f)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return d;
    }
    return (double)f;
}

/* "[a, b]" into buf. */
static void shape_str(const long long *shape, int ndim, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", shape[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

/* Append a printf-formatted problem to a cJSON array of strings. */
static void add_problem(cJSON *problems, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add_problem(cJSON *problems, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON_AddItemToArray(problems, cJSON_CreateString(msg));
}

static int cmd_inspect(int argc, char **argv)
{
    const char *cmd = "inspect";
    const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int as_json = 0, ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': as_json = 1; break;
        case 'h': fputs(USAGE_INSPECT, stdout); return 0;
        default: return usage_error(cmd, NULL);
        }
    }
    const char *dir = single_dir_arg(cmd, argc, argv);
    if (!dir)
        return EXIT_USAGE;

    coh_err err;
    coh_err_clear(&err);
    int rc = EXIT_FAIL;
    char *cfg_path = join_path(dir, CKPT_CONFIG), *w_path = join_path(dir, CKPT_WEIGHTS),
         *tok_path = join_path(dir, TOK_FILE);
    st_file *f = NULL;
    model *m = NULL;
    tokenizer *tok = NULL;
    cJSON *problems = cJSON_CreateArray(), *root = NULL;
    model_config cfg;
    if (!cfg_path || !w_path || !tok_path || !problems)
        goto out;
    if (model_config_load(cfg_path, &cfg, &err)) {
        report(&err, "cannot read %s", cfg_path);
        goto out;
    }
    if (st_open(w_path, &f, &err)) {
        report(&err, "cannot read %s", w_path);
        goto out;
    }
    char *gen_path = join_path(dir, CKPT_GENERATION);
    if (gen_path && fs_exists(gen_path) && model_config_load_generation(gen_path, &cfg, &err))
        add_problem(problems, "%s", err.msg);
    free(gen_path);
    if (model_create(&cfg, &m, &err)) {
        report(&err, "the config %s does not describe a valid model", cfg_path);
        goto out;
    }
    int has_tok = fs_exists(tok_path);
    if (has_tok && tok_load_dir(dir, &tok, &err))
        add_problem(problems, "tokenizer.json cannot be loaded: %s", err.msg);
    if (tok && tok_vocab_size(tok) > cfg.vocab_size)
        add_problem(problems, "the tokenizer has %d ids but vocab_size is %d",
                    tok_vocab_size(tok), cfg.vocab_size);

    /* weights against the config */
    size_t file_params = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor_info *ti = st_info(f, i);
        file_params += ti->numel;
        if (!model_find_tensor(m, ti->name))
            add_problem(problems, "tensor %s is not part of a model with this config",
                        ti->name);
    }
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor *mt = model_tensor_at(m, i);
        const st_tensor_info *ti = st_find(f, mt->name);
        if (!ti) {
            add_problem(problems, "tensor %s is missing from %s", mt->name, CKPT_WEIGHTS);
            continue;
        }
        int same = ti->ndim == mt->ndim;
        for (int d = 0; same && d < mt->ndim; d++)
            same = ti->shape[d] == (long long)mt->shape[d];
        if (!same) {
            char want[64], got[64];
            long long ws[2] = {mt->shape[0], mt->shape[1]};
            shape_str(ws, mt->ndim, want, sizeof want);
            shape_str(ti->shape, ti->ndim, got, sizeof got);
            add_problem(problems, "tensor %s has shape %s but the config implies %s", mt->name,
                        got, want);
        }
    }
    const char *crc = st_metadata(f, "cohort_crc32");
    int hd = model_config_head_dim(&cfg);

    if (as_json) {
        root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "dir", dir);
        cJSON *c = cJSON_AddObjectToObject(root, "config");
        cJSON *tensors = cJSON_CreateArray();
        if (!root || !c || !tensors) {
            cJSON_Delete(tensors);
            fputs("cohort-tool: out of memory\n", stderr);
            goto out;
        }
        cJSON_AddStringToObject(c, "architectures", model_family_arch(cfg.family));
        cJSON_AddStringToObject(c, "model_type", model_family_type(cfg.family));
        cJSON_AddBoolToObject(c, "qkv_bias", cfg.qkv_bias);
        cJSON_AddBoolToObject(c, "o_bias", cfg.o_bias);
        cJSON_AddStringToObject(c, "rope_type",
                                cfg.rope_type == MODEL_ROPE_LLAMA3 ? "llama3" : "default");
        cJSON_AddItemToObject(c, "eos_token_id", cJSON_CreateIntArray(cfg.eos_ids, cfg.n_eos));
        cJSON_AddNumberToObject(c, "vocab_size", cfg.vocab_size);
        cJSON_AddNumberToObject(c, "hidden_size", cfg.dim);
        cJSON_AddNumberToObject(c, "intermediate_size", cfg.hidden_dim);
        cJSON_AddNumberToObject(c, "num_hidden_layers", cfg.n_layers);
        cJSON_AddNumberToObject(c, "num_attention_heads", cfg.n_heads);
        cJSON_AddNumberToObject(c, "num_key_value_heads", cfg.n_kv_heads);
        cJSON_AddNumberToObject(c, "head_dim", hd);
        cJSON_AddNumberToObject(c, "rms_norm_eps", float_as_decimal(cfg.rms_eps));
        cJSON_AddNumberToObject(c, "rope_theta", float_as_decimal(cfg.rope_theta));
        cJSON_AddNumberToObject(c, "max_position_embeddings", cfg.max_seq);
        cJSON_AddBoolToObject(c, "tie_word_embeddings", cfg.tie_embeddings);
        cJSON *t = cJSON_AddObjectToObject(root, "tokenizer");
        cJSON_AddBoolToObject(t, "present", tok != NULL);
        if (tok) {
            cJSON_AddStringToObject(t, "kind", tok_kind(tok));
            cJSON_AddNumberToObject(t, "vocab_size", tok_vocab_size(tok));
            cJSON_AddNumberToObject(t, "bos_token_id", tok_bos_id(tok));
            cJSON_AddNumberToObject(t, "eos_token_id", tok_eos_id(tok));
            cJSON_AddBoolToObject(t, "add_bos_token", tok_add_bos(tok));
        }
        cJSON_AddItemToObject(root, "tensors", tensors);
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor_info *ti = st_info(f, i);
            cJSON *e = cJSON_CreateObject();
            cJSON *sh = cJSON_CreateArray();
            cJSON_AddItemToArray(tensors, e);
            cJSON_AddStringToObject(e, "name", ti->name);
            for (int d = 0; d < ti->ndim; d++)
                cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)ti->shape[d]));
            cJSON_AddItemToObject(e, "shape", sh);
            cJSON_AddStringToObject(e, "dtype", dtype_str(ti->dtype));
            cJSON_AddNumberToObject(e, "numel", (double)ti->numel);
        }
        cJSON_AddNumberToObject(root, "parameters", (double)file_params);
        cJSON_AddNumberToObject(root, "config_parameters", (double)model_num_params(m));
        cJSON_AddBoolToObject(root, "checksum", crc != NULL);
        cJSON_AddItemToObject(root, "problems", problems);
        problems = NULL; /* owned by root now */
        char *text = cJSON_PrintUnformatted(root);
        if (!text) {
            fputs("cohort-tool: out of memory\n", stderr);
            goto out;
        }
        puts(text);
        cJSON_free(text);
    } else {
        printf("checkpoint %s\n", dir);
        printf("config (%s)\n", cfg_path);
        printf("  architectures            %s (attention biases: %s)\n",
               model_family_arch(cfg.family),
               cfg.o_bias ? "q/k/v/o" : cfg.qkv_bias ? "q/k/v" : "none");
        printf("  vocab_size               %d\n", cfg.vocab_size);
        printf("  hidden_size              %d\n", cfg.dim);
        printf("  intermediate_size        %d\n", cfg.hidden_dim);
        printf("  num_hidden_layers        %d\n", cfg.n_layers);
        printf("  num_attention_heads      %d (head_dim %d)\n", cfg.n_heads, hd);
        printf("  num_key_value_heads      %d\n", cfg.n_kv_heads);
        printf("  rms_norm_eps             %g\n", (double)cfg.rms_eps);
        printf("  rope_theta               %g\n", (double)cfg.rope_theta);
        if (cfg.rope_type == MODEL_ROPE_LLAMA3)
            printf("  rope_scaling             llama3 (factor %g, low_freq_factor %g, "
                   "high_freq_factor %g, original_max_position_embeddings %d)\n",
                   (double)cfg.rope_factor, (double)cfg.rope_low_freq_factor,
                   (double)cfg.rope_high_freq_factor, cfg.rope_orig_max_pos);
        if (cfg.n_eos > 0) {
            printf("  eos_token_id            ");
            for (int i = 0; i < cfg.n_eos; i++)
                printf(" %d", cfg.eos_ids[i]);
            printf("\n");
        }
        printf("  max_position_embeddings  %d\n", cfg.max_seq);
        printf("  tie_word_embeddings      %s\n", cfg.tie_embeddings ? "true" : "false");
        if (tok)
            printf("tokenizer: %s, %d ids, bos %d, eos %d%s\n", tok_kind(tok),
                   tok_vocab_size(tok), tok_bos_id(tok), tok_eos_id(tok),
                   tok_add_bos(tok) ? " (prompts start with bos)" : "");
        else if (!has_tok)
            printf("tokenizer: none (no %s: 'sample' needs one; 'logprobs' and 'grad' work on "
                   "token ids)\n",
                   TOK_FILE);
        else
            printf("tokenizer: present but unreadable (see problems)\n");
        printf("tensors (%d in %s%s)\n", st_count(f), CKPT_WEIGHTS,
               crc ? ", checksum verified" : ", no checksum");
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor_info *ti = st_info(f, i);
            char sh[96];
            shape_str(ti->shape, ti->ndim, sh, sizeof sh);
            printf("  %-48s %-14s %s\n", ti->name, sh, dtype_str(ti->dtype));
        }
        printf("parameters: %zu (%.2f MB as F32)\n", file_params, (double)file_params * 4.0 / 1e6);
        int np = cJSON_GetArraySize(problems);
        if (np > 0) {
            printf("problems (%d): this checkpoint will not load as it is\n", np);
            const cJSON *it;
            cJSON_ArrayForEach(it, problems) printf("  - %s\n", it->valuestring);
        }
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cohort-tool: cannot write the output: %s\n", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    cJSON_Delete(problems);
    tok_destroy(tok);
    model_destroy(m);
    st_close(f);
    free(cfg_path);
    free(w_path);
    free(tok_path);
    return rc;
}

/* ---- sample ---------------------------------------------------------------------------- */

static int cmd_sample(int argc, char **argv)
{
    const char *cmd = "sample";
    const struct option opts[] = {
        {"prompt", required_argument, NULL, 'p'},
        {"num", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'},
        {"top-p", required_argument, NULL, 'P'},
        {"top-k", required_argument, NULL, 'k'},
        {"seed", required_argument, NULL, 's'},
        {"max-new-tokens", required_argument, NULL, 'm'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *prompt = NULL;
    int n = 1, verbose = 0, ch;
    uint64_t seed = 0;
    sample_params sp = sample_params_default();
    while ((ch = getopt_long(argc, argv, "hn:v", opts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case 'p': prompt = optarg; break;
        case 'n': bad = opt_int(cmd, "-n/--num", optarg, 1, 4096, &n); break;
        case 't':
            bad = opt_float(cmd, "--temperature", optarg, 0, 1, TEMP_MAX, 0, &sp.temperature);
            break;
        case 'P': bad = opt_float(cmd, "--top-p", optarg, 0, 1, 1, 0, &sp.top_p); break;
        case 'k': bad = opt_int(cmd, "--top-k", optarg, 0, TOP_K_MAX, &sp.top_k); break;
        case 's': bad = opt_seed(cmd, optarg, &seed); break;
        case 'm':
            bad = opt_int(cmd, "--max-new-tokens", optarg, 1, NEW_TOKENS_MAX,
                          &sp.max_new_tokens);
            break;
        case 'v': verbose = 1; break;
        case 'h': fputs(USAGE_SAMPLE, stdout); return 0;
        default: return usage_error(cmd, NULL);
        }
        if (bad)
            return EXIT_USAGE;
    }
    const char *dir = single_dir_arg(cmd, argc, argv);
    if (!dir)
        return EXIT_USAGE;
    if (!prompt)
        return usage_error(cmd, "--prompt TEXT is required");
    if (!(sp.temperature > 0.0f))
        return usage_error(cmd, "--temperature must be > 0, got %g", (double)sp.temperature);
    if (!(sp.top_p > 0.0f && sp.top_p <= 1.0f))
        return usage_error(cmd, "--top-p must be in (0, 1], got %g", (double)sp.top_p);

    coh_err err;
    coh_err_clear(&err);
    model *m = NULL;
    tokenizer *tok = NULL;
    sampler *s = NULL;
    int *ids = NULL, *out_tok = NULL, *lens = NULL;
    float *out_lp = NULL;
    char *text = NULL;
    int rc = EXIT_FAIL;
    if (ckpt_load(dir, &m, &tok, &err)) {
        report(&err, "cannot load the checkpoint %s", dir);
        goto out;
    }
    if (!tok) {
        fprintf(stderr,
                "cohort-tool: the checkpoint %s has no %s, so text commands like 'sample' "
                "cannot encode the prompt or decode completions; 'cohort-tool logprobs' and "
                "'cohort-tool grad' work on token ids and do not need it\n",
                dir, TOK_FILE);
        goto out;
    }
    const model_config *c = model_get_config(m);
    ids = malloc((size_t)c->max_seq * sizeof *ids);
    if (!ids) {
        fputs("cohort-tool: out of memory\n", stderr);
        goto out;
    }
    /* the tokenizer's BOS when it adds one (always for the built-in tokenizer); its EOS and
     * the model's eos_token_id list end a completion */
    int bos = tok_add_bos(tok) && tok_bos_id(tok) >= 0;
    ids[0] = tok_bos_id(tok);
    sp.eos_id = tok_eos_id(tok);
    int np = 0;
    if (tok_encode(tok, prompt, ids + bos, c->max_seq - bos, &np, &err)) {
        if (err.code == COH_ERANGE)
            report(&err, "the prompt does not fit in max_position_embeddings = %d", c->max_seq);
        else
            report(&err, "cannot encode the prompt");
        goto out;
    }
    int plen = np + bos;
    if ((long)plen + sp.max_new_tokens > c->max_seq) {
        fprintf(stderr,
                "cohort-tool: <bos> + prompt (%d tokens) + --max-new-tokens %d exceeds "
                "max_position_embeddings = %d; use --max-new-tokens %d or a shorter prompt\n",
                plen, sp.max_new_tokens, c->max_seq, c->max_seq - plen);
        goto out;
    }
    size_t cells = (size_t)n * (size_t)sp.max_new_tokens;
    out_tok = malloc(cells * sizeof *out_tok);
    out_lp = malloc(cells * sizeof *out_lp);
    lens = malloc((size_t)n * sizeof *lens);
    size_t text_cap = (size_t)sp.max_new_tokens * 64 + 1; /* a BPE token may be long */
    text = malloc(text_cap);
    if (!out_tok || !out_lp || !lens || !text) {
        fputs("cohort-tool: out of memory\n", stderr);
        goto out;
    }
    if (sampler_create(m, n, plen + sp.max_new_tokens, &s, &err)) {
        report(&err, "cannot create the sampler");
        goto out;
    }
    /* stop at any of the model's EOS ids too; never sample ids the tokenizer cannot decode */
    if (sample_params_use_eos(&sp, c, &err)) {
        report(&err, "cannot use the eos_token_id list of %s", dir);
        goto out;
    }
    if (tok_vocab_size(tok) < c->vocab_size)
        sp.vocab_limit = tok_vocab_size(tok);
    rng r;
    rng_init(&r, seed);
    if (sampler_generate(s, ids, plen, n, &sp, &r, out_tok, out_lp, NULL, lens, &err)) {
        report(&err, "sampling failed");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const int *row = out_tok + (size_t)i * sp.max_new_tokens;
        int L = lens[i];
        int stop = L > 0 && row[L - 1] == sp.eos_id;
        for (int k = 0; L > 0 && k < sp.n_stop; k++)
            stop |= row[L - 1] == sp.stop_ids[k];
        tok_decode(tok, row, stop ? L - 1 : L, text, text_cap); /* the stop token not shown */
        if (verbose) {
            double sum = 0.0;
            for (int k = 0; k < lens[i]; k++)
                sum += out_lp[(size_t)i * sp.max_new_tokens + k];
            printf("%.6f\t%s\n", sum, text);
        } else {
            printf("%s\n", text);
        }
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cohort-tool: cannot write the output: %s\n", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    sampler_destroy(s);
    tok_destroy(tok);
    model_destroy(m);
    free(ids);
    free(out_tok);
    free(out_lp);
    free(lens);
    free(text);
    return rc;
}

/* After a read_line loop over stdin: report a read error (len == -2) or a failed flush of
 * stdout. Returns 0 when both went well. */
static int finish_stdin_stdout(long len, long lineno)
{
    if (len == -2) {
        fprintf(stderr, "cohort-tool: cannot read stdin after line %ld: %s\n", lineno,
                strerror(errno));
        return -1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cohort-tool: cannot write the output: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- score ------------------------------------------------------------------------------ */

static int cmd_score(int argc, char **argv)
{
    const char *cmd = "score";
    const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(USAGE_SCORE, stdout); return 0;
        default: return usage_error(cmd, NULL);
        }
    }
    const char *dir = single_dir_arg(cmd, argc, argv);
    if (!dir)
        return EXIT_USAGE;
    coh_err err;
    coh_err_clear(&err);
    rm_model *r = NULL;
    model_config c;
    char *line = NULL, cpath[4096];
    size_t line_cap = 0;
    int rc = EXIT_FAIL;
    if (rm_load(dir, &r, &err)) {
        report(&err, "cannot load the reward model %s", dir);
        goto out;
    }
    snprintf(cpath, sizeof cpath, "%s/config.json", dir);
    if (model_config_load(cpath, &c, &err)) {
        report(&err, "cannot read %s/config.json", dir);
        goto out;
    }
    long lineno = 0, len;
    while ((len = read_line(stdin, &line, &line_cap)) >= 0) {
        lineno++;
        if (is_blank(line))
            continue;
        cJSON *j = NULL;
        int *ids = NULL, n = 0;
        double score = 0.0;
        int bad = parse_json_object(line, &j, &err);
        if (!bad)
            bad = json_tokens(j, c.vocab_size, c.max_seq, &ids, &n, &err);
        if (!bad)
            bad = rm_score_tokens(r, ids, n, &score, &err);
        cJSON_Delete(j);
        free(ids);
        if (bad) {
            fflush(stdout);
            report(&err, "stdin line %ld", lineno);
            goto out;
        }
        printf("{\"score\": %.9g}\n", score);
    }
    if (finish_stdin_stdout(len, lineno))
        goto out;
    rc = 0;
out:
    rm_destroy(r);
    free(line);
    return rc;
}

/* ---- logprobs -------------------------------------------------------------------------- */

/* Log-probabilities of one parsed line into lp[0..n-1). */
static int line_logprobs(const model *m, model_ws *ws, const int *ids, int n, float temperature,
                         float *lp, coh_err *err)
{
    int rc = model_forward(m, ws, ids, 1, n, err);
    if (rc)
        return rc;
    int V = model_get_config(m)->vocab_size;
    const float *logits = model_ws_logits(ws);
    for (int t = 0; t + 1 < n; t++) {
        sm_logp_entropy(logits + (size_t)t * V, V, temperature, ids[t + 1], &lp[t], NULL);
        if (!isfinite(lp[t]))
            return coh_fail(err, COH_ENONFINITE,
                            "log p(tokens[%d]) is %g; the model's logits are not finite (a "
                            "corrupt checkpoint?) or the temperature is too small",
                            t + 1, (double)lp[t]);
    }
    return COH_OK;
}

static int cmd_logprobs(int argc, char **argv)
{
    const char *cmd = "logprobs";
    const struct option opts[] = {{"temperature", required_argument, NULL, 't'},
                                  {"help", no_argument, NULL, 'h'},
                                  {NULL, 0, NULL, 0}};
    float temperature = 1.0f;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            if (opt_float(cmd, "--temperature", optarg, 0, 1, TEMP_MAX, 0, &temperature))
                return EXIT_USAGE;
            break;
        case 'h': fputs(USAGE_LOGPROBS, stdout); return 0;
        default: return usage_error(cmd, NULL);
        }
    }
    const char *dir = single_dir_arg(cmd, argc, argv);
    if (!dir)
        return EXIT_USAGE;
    if (!(temperature > 0.0f))
        return usage_error(cmd, "--temperature must be > 0, got %g", (double)temperature);

    coh_err err;
    coh_err_clear(&err);
    model *m = NULL;
    model_ws *ws = NULL;
    float *lp = NULL;
    char *line = NULL, *out = NULL;
    size_t line_cap = 0;
    int rc = EXIT_FAIL;
    if (ckpt_load(dir, &m, NULL, &err)) {
        report(&err, "cannot load the checkpoint %s", dir);
        goto out;
    }
    const model_config *c = model_get_config(m);
    if (model_ws_create(m, 1, c->max_seq, &ws, &err)) {
        report(&err, "cannot allocate the forward workspace");
        goto out;
    }
    lp = malloc((size_t)c->max_seq * sizeof *lp);
    /* "{\"logprobs\": [" + up to 16 chars and ", " per number + "]}\n" */
    size_t out_cap = (size_t)c->max_seq * 20 + 32;
    out = malloc(out_cap);
    if (!lp || !out) {
        fputs("cohort-tool: out of memory\n", stderr);
        goto out;
    }
    long lineno = 0, len;
    while ((len = read_line(stdin, &line, &line_cap)) >= 0) {
        lineno++;
        if (is_blank(line))
            continue;
        cJSON *j = NULL;
        int *ids = NULL, n = 0;
        int bad = parse_json_object(line, &j, &err);
        if (!bad)
            bad = json_tokens(j, c->vocab_size, c->max_seq, &ids, &n, &err);
        if (!bad)
            bad = line_logprobs(m, ws, ids, n, temperature, lp, &err);
        cJSON_Delete(j);
        free(ids);
        if (bad) {
            fflush(stdout);
            report(&err, "stdin line %ld", lineno);
            goto out;
        }
        size_t k = (size_t)snprintf(out, out_cap, "{\"logprobs\": [");
        for (int t = 0; t + 1 < n; t++)
            k += (size_t)snprintf(out + k, out_cap - k, "%s%.9g", t ? ", " : "", (double)lp[t]);
        k += (size_t)snprintf(out + k, out_cap - k, "]}\n");
        if (fwrite(out, 1, k, stdout) != k) {
            fprintf(stderr, "cohort-tool: cannot write the output: %s\n", strerror(errno));
            goto out;
        }
    }
    if (finish_stdin_stdout(len, lineno))
        goto out;
    rc = 0;
out:
    free(line);
    free(out);
    free(lp);
    model_ws_destroy(ws);
    model_destroy(m);
    return rc;
}

/* ---- grad ------------------------------------------------------------------------------ */

/* One completion of the batch file. */
typedef struct batch_line {
    int group, prompt_len, len;
    double reward;
    int *tokens;   /* [len] */
    float *blp;    /* [len - prompt_len] behaviour log-probs; NULL when absent (sft) */
} batch_line;

typedef struct batch {
    batch_line *lines;
    int n, cap;
    int max_len;
} batch;

static void batch_free(batch *b)
{
    for (int i = 0; i < b->n; i++) {
        free(b->lines[i].tokens);
        free(b->lines[i].blp);
    }
    free(b->lines);
    memset(b, 0, sizeof *b);
}

/* Parse and validate one batch line. */
static int parse_batch_line(const char *text, const model_config *c, loss_mode mode,
                            batch_line *bl, coh_err *err)
{
    memset(bl, 0, sizeof *bl);
    cJSON *j = NULL;
    int rc = parse_json_object(text, &j, err);
    if (rc)
        return rc;
    int rl = mode == LOSS_RL;
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "group");
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(j, "prompt_len");
    const cJSON *rw = cJSON_GetObjectItemCaseSensitive(j, "reward");
    const cJSON *bh = cJSON_GetObjectItemCaseSensitive(j, "behaviour_logprobs");
    if (g)
        rc = json_to_int(g, "\"group\"", INT_MIN, INT_MAX, &bl->group, err);
    else if (rl)
        rc = coh_fail(err, COH_EFORMAT, "\"group\" is missing (an integer naming the prompt)");
    if (!rc)
        rc = json_tokens(j, c->vocab_size, c->max_seq, &bl->tokens, &bl->len, err);
    if (!rc) {
        if (!pl)
            rc = coh_fail(err, COH_EFORMAT,
                          "\"prompt_len\" is missing (how many leading tokens are prompt)");
        else if ((rc = json_to_int(pl, "\"prompt_len\"", INT_MIN, INT_MAX, &bl->prompt_len,
                                   err)) == COH_OK &&
                 (bl->prompt_len < 1 || bl->prompt_len >= bl->len))
            rc = coh_fail(err, COH_ERANGE,
                          "\"prompt_len\" is %d but the line has %d tokens; it must be in "
                          "[1, %d] so that at least one completion token follows the prompt",
                          bl->prompt_len, bl->len, bl->len - 1);
    }
    if (!rc) {
        if (rw) {
            if (!cJSON_IsNumber(rw) || !isfinite(rw->valuedouble))
                rc = coh_fail(err, COH_ENONFINITE, "\"reward\" must be a finite number");
            else
                bl->reward = rw->valuedouble;
        } else if (rl) {
            rc = coh_fail(err, COH_EFORMAT, "\"reward\" is missing (a finite number)");
        }
    }
    if (!rc) {
        if (bh)
            rc = json_floats(bh, "behaviour_logprobs", bl->len - bl->prompt_len, &bl->blp, err);
        else if (rl)
            rc = coh_fail(err, COH_EFORMAT,
                          "\"behaviour_logprobs\" is missing; RL mode needs the sampler's "
                          "log-probability of each of the %d completion tokens (or use "
                          "--mode sft)",
                          bl->len - bl->prompt_len);
    }
    cJSON_Delete(j);
    if (rc) {
        free(bl->tokens);
        free(bl->blp);
        memset(bl, 0, sizeof *bl);
    }
    return rc;
}

/* Read the whole batch file; every line validated, problems named by line number. */
static int read_batch(const char *path, const model_config *c, loss_mode mode, batch *b)
{
    memset(b, 0, sizeof *b);
    int from_stdin = strcmp(path, "-") == 0;
    FILE *in = from_stdin ? stdin : fopen(path, "r");
    if (!in) {
        fprintf(stderr, "cohort-tool: cannot open the batch file %s: %s\n", path,
                strerror(errno));
        return EXIT_FAIL;
    }
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0, len;
    int rc = EXIT_FAIL;
    coh_err err;
    coh_err_clear(&err);
    while ((len = read_line(in, &line, &cap)) >= 0) {
        lineno++;
        if (is_blank(line))
            continue;
        if (b->n == b->cap) {
            int ncap = b->cap ? 2 * b->cap : 16;
            batch_line *p = realloc(b->lines, (size_t)ncap * sizeof *p);
            if (!p) {
                fputs("cohort-tool: out of memory reading the batch\n", stderr);
                goto out;
            }
            b->lines = p;
            b->cap = ncap;
        }
        if (parse_batch_line(line, c, mode, &b->lines[b->n], &err)) {
            report(&err, "%s line %ld", path, lineno);
            goto out;
        }
        if (b->lines[b->n].len > b->max_len)
            b->max_len = b->lines[b->n].len;
        b->n++;
    }
    if (len == -2) {
        fprintf(stderr, "cohort-tool: cannot read %s after line %ld: %s\n", path, lineno,
                strerror(errno));
        goto out;
    }
    if (b->n == 0) {
        fprintf(stderr, "cohort-tool: the batch file %s holds no completions\n", path);
        goto out;
    }
    rc = 0;
out:
    free(line);
    if (!from_stdin)
        fclose(in);
    if (rc)
        batch_free(b);
    return rc;
}

/* Reference log-probabilities of every completion token: ref[b*T + k]. */
static int reference_logprobs(const char *ref_dir, const model_config *pc, const batch *bt,
                              const int *tokens, int T, float temperature, float *ref)
{
    coh_err err;
    coh_err_clear(&err);
    model *rm = NULL;
    model_ws *ws = NULL;
    int rc = EXIT_FAIL;
    if (ckpt_load(ref_dir, &rm, NULL, &err)) {
        report(&err, "cannot load the reference checkpoint %s", ref_dir);
        goto out;
    }
    const model_config *rc_cfg = model_get_config(rm);
    if (rc_cfg->vocab_size != pc->vocab_size) {
        fprintf(stderr,
                "cohort-tool: the reference %s has vocab_size %d but the policy has %d; the KL "
                "needs both over the same vocabulary (use the policy's initial checkpoint)\n",
                ref_dir, rc_cfg->vocab_size, pc->vocab_size);
        goto out;
    }
    if (rc_cfg->max_seq < T) {
        fprintf(stderr,
                "cohort-tool: the reference %s allows %d positions but the batch has sequences "
                "of %d tokens\n",
                ref_dir, rc_cfg->max_seq, T);
        goto out;
    }
    if (model_ws_create(rm, bt->n, T, &ws, &err) || model_forward(rm, ws, tokens, bt->n, T, &err)) {
        report(&err, "reference forward pass failed");
        goto out;
    }
    int V = pc->vocab_size;
    const float *logits = model_ws_logits(ws);
    for (int b = 0; b < bt->n; b++) {
        const batch_line *bl = &bt->lines[b];
        for (int k = 0; k < bl->len - bl->prompt_len; k++) {
            int row = bl->prompt_len + k - 1;
            float *dst = &ref[(size_t)b * T + k];
            sm_logp_entropy(logits + ((size_t)b * T + row) * V, V, temperature,
                            bl->tokens[row + 1], dst, NULL);
        }
    }
    rc = 0;
out:
    model_ws_destroy(ws);
    model_destroy(rm);
    return rc;
}

/* Gradients under the parameters' own names (the model's table omits lm_head when tied). */
static int write_grads(const char *path, const model *m, const float *grads)
{
    int n = model_num_tensors(m);
    st_entry *e = calloc((size_t)n, sizeof *e);
    if (!e) {
        fputs("cohort-tool: out of memory\n", stderr);
        return EXIT_FAIL;
    }
    for (int i = 0; i < n; i++) {
        const model_tensor *t = model_tensor_at(m, i);
        e[i].name = t->name;
        e[i].ndim = t->ndim;
        e[i].shape[0] = t->shape[0];
        e[i].shape[1] = t->shape[1];
        e[i].data = grads + t->offset;
    }
    const char *const meta[] = {"cohort_content", "gradient", NULL};
    coh_err err;
    coh_err_clear(&err);
    int rc = st_write(path, e, n, meta, &err);
    free(e);
    if (rc)
        return report(&err, "cannot write the gradients to %s", path);
    return 0;
}

/* Print the loss statistics as one JSON object. */
static int print_loss_json(const loss_stats *ls, const loss_adv_stats *as)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return EXIT_FAIL;
    cJSON_AddNumberToObject(o, "loss", ls->loss);
    cJSON_AddNumberToObject(o, "kl", ls->kl);
    cJSON_AddNumberToObject(o, "clip_frac", ls->clip_frac);
    cJSON_AddNumberToObject(o, "entropy", ls->entropy);
    cJSON_AddNumberToObject(o, "tokens", (double)ls->tokens);
    cJSON_AddNumberToObject(o, "groups", as->groups);
    cJSON_AddNumberToObject(o, "zero_signal_groups", as->zero_signal_groups);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) {
        fputs("cohort-tool: out of memory\n", stderr);
        return EXIT_FAIL;
    }
    puts(text);
    cJSON_free(text);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "cohort-tool: cannot write the output: %s\n", strerror(errno));
        return EXIT_FAIL;
    }
    return 0;
}

static int cmd_grad(int argc, char **argv)
{
    const char *cmd = "grad";
    enum {
        O_BATCH = 256, O_OUT, O_REF, O_MODE, O_EST, O_EPS_LOW, O_EPS_HIGH, O_BETA, O_ENT,
        O_AGG, O_MAXNEW, O_TEMP, O_DROP
    };
    const struct option opts[] = {
        {"batch", required_argument, NULL, O_BATCH},
        {"out", required_argument, NULL, O_OUT},
        {"ref", required_argument, NULL, O_REF},
        {"mode", required_argument, NULL, O_MODE},
        {"estimator", required_argument, NULL, O_EST},
        {"eps-low", required_argument, NULL, O_EPS_LOW},
        {"eps-high", required_argument, NULL, O_EPS_HIGH},
        {"beta", required_argument, NULL, O_BETA},
        {"entropy-coef", required_argument, NULL, O_ENT},
        {"aggregation", required_argument, NULL, O_AGG},
        {"max-new-tokens", required_argument, NULL, O_MAXNEW},
        {"temperature", required_argument, NULL, O_TEMP},
        {"drop-zero-signal", no_argument, NULL, O_DROP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *batch_path = NULL, *out_path = NULL, *ref_dir = NULL;
    loss_config lc = loss_config_default();
    coh_err err;
    coh_err_clear(&err);
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case O_BATCH: batch_path = optarg; break;
        case O_OUT: out_path = optarg; break;
        case O_REF: ref_dir = optarg; break;
        case O_MODE:
            if (loss_parse_mode(optarg, &lc.mode, &err))
                return usage_error(cmd, "--mode: %s", err.msg);
            break;
        case O_EST:
            if (loss_parse_estimator(optarg, &lc.estimator, &err))
                return usage_error(cmd, "--estimator: %s", err.msg);
            break;
        case O_AGG:
            if (loss_parse_aggregation(optarg, &lc.aggregation, &err))
                return usage_error(cmd, "--aggregation: %s", err.msg);
            break;
        case O_EPS_LOW:
            bad = opt_float(cmd, "--eps-low", optarg, 0, 0, EPS_MAX, 0, &lc.eps_low);
            break;
        case O_EPS_HIGH:
            bad = opt_float(cmd, "--eps-high", optarg, 0, 0, EPS_MAX, 0, &lc.eps_high);
            break;
        case O_BETA: bad = opt_float(cmd, "--beta", optarg, 0, 0, BETA_MAX, 0, &lc.beta); break;
        case O_ENT:
            bad = opt_float(cmd, "--entropy-coef", optarg, 0, 0, ENTROPY_MAX, 0,
                            &lc.entropy_coef);
            break;
        case O_TEMP:
            bad = opt_float(cmd, "--temperature", optarg, 0, 1, TEMP_MAX, 0, &lc.temperature);
            break;
        case O_MAXNEW:
            bad = opt_int(cmd, "--max-new-tokens", optarg, 1, NEW_TOKENS_MAX,
                          &lc.max_new_tokens);
            break;
        case O_DROP: lc.drop_zero_signal = 1; break;
        case 'h': fputs(USAGE_GRAD, stdout); return 0;
        default: return usage_error(cmd, NULL);
        }
        if (bad)
            return EXIT_USAGE;
    }
    const char *dir = single_dir_arg(cmd, argc, argv);
    if (!dir)
        return EXIT_USAGE;
    if (!batch_path || !out_path)
        return usage_error(cmd, "both --batch batch.jsonl and --out grads.safetensors are "
                                "required");
    if (!(lc.temperature > 0.0f))
        return usage_error(cmd, "--temperature must be > 0, got %g", (double)lc.temperature);
    if (!(lc.beta >= 0.0f))
        return usage_error(cmd, "--beta must be >= 0, got %g", (double)lc.beta);
    int need_ref = loss_needs_ref(&lc);
    if (need_ref && !ref_dir)
        return usage_error(cmd,
                           "--beta %g puts a KL term to the reference policy into the %s loss, "
                           "so it needs --ref REFDIR (e.g. the checkpoint training started "
                           "from); or use --beta 0",
                           (double)lc.beta, loss_estimator_name(lc.estimator));
    if (ref_dir && !need_ref)
        fprintf(stderr, "cohort-tool: note: --ref %s is not used (%s)\n", ref_dir,
                lc.mode == LOSS_SFT ? "--mode sft has no KL term" : "--beta is 0");

    model *m = NULL;
    model_ws *ws = NULL;
    batch bt;
    memset(&bt, 0, sizeof bt);
    int *tokens = NULL, *use = NULL;
    float *adv = NULL, *ref = NULL, *grads = NULL;
    loss_seq *seqs = NULL;
    int rc = EXIT_FAIL;
    if (ckpt_load(dir, &m, NULL, &err)) {
        report(&err, "cannot load the checkpoint %s", dir);
        goto out;
    }
    const model_config *c = model_get_config(m);
    if (read_batch(batch_path, c, lc.mode, &bt))
        goto out;
    int B = bt.n, T = bt.max_len;
    if (T < 2)
        T = 2;
    size_t BT = (size_t)B * (size_t)T;
    tokens = calloc(BT, sizeof *tokens); /* padded with TOK_PAD = 0 */
    adv = calloc(BT, sizeof *adv);
    ref = need_ref ? calloc(BT, sizeof *ref) : NULL;
    use = calloc((size_t)B, sizeof *use);
    seqs = calloc((size_t)B, sizeof *seqs);
    grads = calloc(model_num_params(m), sizeof *grads);
    if (!tokens || !adv || (need_ref && !ref) || !use || !seqs || !grads) {
        fprintf(stderr, "cohort-tool: out of memory for a batch of %d x %d tokens\n", B, T);
        goto out;
    }
    for (int b = 0; b < B; b++) {
        const batch_line *bl = &bt.lines[b];
        memcpy(tokens + (size_t)b * T, bl->tokens, (size_t)bl->len * sizeof *tokens);
        seqs[b].tokens = bl->tokens;
        seqs[b].group = bl->group;
        seqs[b].prompt_len = bl->prompt_len;
        seqs[b].len = bl->len;
        seqs[b].reward = bl->reward;
        seqs[b].behaviour_logp = bl->blp;
        seqs[b].ref_logp = need_ref ? ref + (size_t)b * T : NULL;
    }
    if (need_ref && reference_logprobs(ref_dir, c, &bt, tokens, T, lc.temperature, ref))
        goto out;

    if (model_ws_create(m, B, T, &ws, &err)) {
        report(&err, "cannot allocate the workspace for %d sequences of %d tokens", B, T);
        goto out;
    }
    if (model_forward(m, ws, tokens, B, T, &err)) {
        report(&err, "forward pass failed");
        goto out;
    }
    loss_adv_stats as;
    loss_stats ls;
    if (loss_advantages(&lc, seqs, B, T, adv, use, &as, &err)) {
        report(&err, "cannot compute the advantages (sequence numbers count batch lines from 0)");
        goto out;
    }
    float *dlogits = model_ws_dlogits(ws);
    if (loss_compute(&lc, seqs, B, T, adv, use, model_ws_logits(ws), c->vocab_size, dlogits, &ls,
                     &err)) {
        report(&err, "cannot compute the loss (sequence numbers count batch lines from 0)");
        goto out;
    }
    if (!isfinite(ls.loss)) {
        fprintf(stderr, "cohort-tool: the loss is %g; the checkpoint or the batch holds values "
                        "that overflow\n", ls.loss);
        goto out;
    }
    if (model_backward(m, ws, dlogits, grads, &err)) {
        report(&err, "backward pass failed");
        goto out;
    }
    if (as.used_seqs == 0)
        fprintf(stderr, "cohort-tool: note: every group was dropped (--drop-zero-signal and all "
                        "rewards equal within each group); the gradient is zero\n");
    if (write_grads(out_path, m, grads))
        goto out;
    rc = print_loss_json(&ls, &as);
out:
    free(tokens);
    free(adv);
    free(ref);
    free(use);
    free(seqs);
    free(grads);
    batch_free(&bt);
    model_ws_destroy(ws);
    model_destroy(m);
    return rc;
}

/* ---- encode / decode ---------------------------------------------------------------------- */

static const char USAGE_ENCODE[] =
    "usage: cohort-tool encode DIR [--add-special-tokens] < texts.jsonl > ids.jsonl\n"
    "\n"
    "Tokenize text with the tokenizer of DIR (tokenizer.json, plus tokenizer_config.json for a\n"
    "Hugging Face one; no model files are needed). One JSON object per line in,\n"
    "{\"text\": \"...\"}; one per line out, {\"ids\": [int, ...]}. No special tokens are added\n"
    "unless --add-special-tokens (then BOS / EOS as add_bos_token / add_eos_token say).\n"
    "A bad line is answered with {\"error\": \"...\"} and the next line is read.\n";

static const char USAGE_DECODE[] =
    "usage: cohort-tool decode DIR < ids.jsonl > texts.jsonl\n"
    "\n"
    "Turn token ids back into text with the tokenizer of DIR. One JSON object per line in,\n"
    "{\"ids\": [int, ...]}; one per line out, {\"text\": \"...\"}, decoded as the Hugging Face\n"
    "tokenizers library decodes (special tokens kept, no clean-up of spaces).\n"
    "A bad line is answered with {\"error\": \"...\"} and the next line is read.\n";

/* Print {"key": value} as one line; value is taken over. Returns 0, or -1 out of memory. */
static int print_json_line(const char *key, cJSON *value)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !value || !cJSON_AddItemToObject(o, key, value)) {
        cJSON_Delete(o);
        cJSON_Delete(value);
        fputs("cohort-tool: out of memory\n", stderr);
        return -1;
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) {
        fputs("cohort-tool: out of memory\n", stderr);
        return -1;
    }
    puts(s);
    cJSON_free(s);
    return 0;
}

/* Parse the options and load the tokenizer of DIR for encode / decode. Returns 0 with *tok
 * set, -1 after printing --help (*tok NULL), or the exit status of a failure. */
static int tokenize_setup(const char *cmd, const char *usage, int argc, char **argv,
                          int *add_special, tokenizer **tok)
{
    const struct option opts[] = {{"add-special-tokens", no_argument, NULL, 's'},
                                  {"help", no_argument, NULL, 'h'},
                                  {NULL, 0, NULL, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (!add_special)
                return usage_error(cmd, "--add-special-tokens is an option of encode");
            *add_special = 1;
            break;
        case 'h': fputs(usage, stdout); return -1;
        default: return usage_error(cmd, NULL);
        }
    }
    const char *dir = single_dir_arg(cmd, argc, argv);
    if (!dir)
        return EXIT_USAGE;
    coh_err err;
    coh_err_clear(&err);
    if (tok_load_dir(dir, tok, &err))
        return report(&err, "cannot load the tokenizer of %s", dir);
    return 0;
}

static int cmd_encode(int argc, char **argv)
{
    int add_special = 0;
    tokenizer *tok = NULL;
    int rc = tokenize_setup("encode", USAGE_ENCODE, argc, argv, &add_special, &tok);
    if (rc)
        return rc < 0 ? 0 : rc;
    char *line = NULL;
    size_t line_cap = 0;
    int *ids = NULL;
    long lineno = 0, len;
    rc = EXIT_FAIL;
    int bos = add_special && tok_add_bos(tok) ? tok_bos_id(tok) : -1;
    int eos = add_special && tok_add_eos(tok) ? tok_eos_id(tok) : -1;
    while ((len = read_line(stdin, &line, &line_cap)) >= 0) {
        lineno++;
        if (is_blank(line))
            continue;
        coh_err err;
        coh_err_clear(&err);
        cJSON *j = NULL;
        int n = 0, bad = parse_json_object(line, &j, &err);
        if (bad)
            coh_wrap(&err, bad, "line %ld", lineno);
        const cJSON *text = bad ? NULL : cJSON_GetObjectItemCaseSensitive(j, "text");
        if (!bad && !cJSON_IsString(text))
            bad = coh_fail(&err, COH_EFORMAT, "line %ld needs a \"text\" string", lineno);
        if (!bad) {
            /* every token covers at least one byte, SentencePiece's prefix aside */
            size_t cap = 2 * strlen(text->valuestring) + 16;
            if (cap > INT_MAX / 2) {
                bad = coh_fail(&err, COH_ERANGE, "line %ld: the text is too long", lineno);
            } else if (!(ids = malloc((cap + 2) * sizeof *ids))) {
                bad = coh_fail(&err, COH_ENOMEM, "out of memory");
            } else {
                int off = bos >= 0;
                bad = tok_encode(tok, text->valuestring, ids + off, (int)cap, &n, &err);
                if (!bad) {
                    if (off)
                        ids[0] = bos;
                    n += off;
                    if (eos >= 0)
                        ids[n++] = eos;
                }
            }
        }
        cJSON_Delete(j);
        cJSON *out;
        if (bad) {
            out = cJSON_CreateString(err.msg);
        } else {
            out = cJSON_CreateIntArray(ids, n);
        }
        free(ids);
        ids = NULL;
        if (print_json_line(bad ? "error" : "ids", out))
            goto out;
    }
    if (finish_stdin_stdout(len, lineno))
        goto out;
    rc = 0;
out:
    free(line);
    tok_destroy(tok);
    return rc;
}

static int cmd_decode(int argc, char **argv)
{
    tokenizer *tok = NULL;
    int rc = tokenize_setup("decode", USAGE_DECODE, argc, argv, NULL, &tok);
    if (rc)
        return rc < 0 ? 0 : rc;
    char *line = NULL, *text = NULL;
    size_t line_cap = 0;
    int *ids = NULL;
    long lineno = 0, len;
    int V = tok_vocab_size(tok);
    rc = EXIT_FAIL;
    while ((len = read_line(stdin, &line, &line_cap)) >= 0) {
        lineno++;
        if (is_blank(line))
            continue;
        coh_err err;
        coh_err_clear(&err);
        cJSON *j = NULL;
        int bad = parse_json_object(line, &j, &err), n = 0;
        if (bad)
            coh_wrap(&err, bad, "line %ld", lineno);
        const cJSON *arr = bad ? NULL : cJSON_GetObjectItemCaseSensitive(j, "ids");
        if (!bad && !cJSON_IsArray(arr))
            bad = coh_fail(&err, COH_EFORMAT, "line %ld needs an \"ids\" array of integers",
                           lineno);
        if (!bad && !(ids = malloc(((size_t)cJSON_GetArraySize(arr) + 1) * sizeof *ids)))
            bad = coh_fail(&err, COH_ENOMEM, "out of memory");
        for (const cJSON *x = bad ? NULL : arr->child; x && !bad; x = x->next) {
            char what[64];
            snprintf(what, sizeof what, "line %ld: ids[%d]", lineno, n);
            bad = json_to_int(x, what, 0, V - 1, &ids[n], &err);
            n++;
        }
        cJSON_Delete(j);
        size_t cap = 64 + 16 * (size_t)n, w = 0;
        while (!bad) {
            char *p = realloc(text, cap);
            if (!p) {
                bad = coh_fail(&err, COH_ENOMEM, "out of memory");
                break;
            }
            text = p;
            w = tok_decode(tok, ids, n, text, cap);
            if (w + 8 < cap) /* room was left: nothing was cut */
                break;
            cap *= 2;
        }
        free(ids);
        ids = NULL;
        if (print_json_line(bad ? "error" : "text", cJSON_CreateString(bad ? err.msg : text)))
            goto out;
    }
    if (finish_stdin_stdout(len, lineno))
        goto out;
    rc = 0;
out:
    free(line);
    free(text);
    tok_destroy(tok);
    return rc;
}

/* ---- chat ------------------------------------------------------------------------------ */

static const char USAGE_CHAT[] =
    "usage: cohort-tool chat [DIR] [--date YYYY-MM-DD] < conversations.jsonl > texts.jsonl\n"
    "\n"
    "Render conversations with a chat template, as transformers' apply_chat_template does\n"
    "(Jinja with trim_blocks and lstrip_blocks). Each input line is\n"
    "  {\"messages\": [{\"role\": ..., \"content\": ...}, ...], \"add_generation_prompt\": bool}\n"
    "optionally with \"template\", \"bos_token\", \"eos_token\" (override DIR's\n"
    "tokenizer_config.json) and \"extra_context\" (an object of further template variables,\n"
    "e.g. tools). Each output line is {\"text\": ...}, or {\"error\": ...} for a line that\n"
    "cannot be rendered; the next line is read either way.\n"
    "\n"
    "  DIR          a model folder with tokenizer_config.json (optional when every line\n"
    "               carries its own \"template\")\n"
    "  --date D     the date strftime_now() formats (default: now), for reproducible output\n";

/* a string field of a chat line: absent -> *out untouched; null -> NULL; else a string */
static int chat_line_str(const cJSON *j, const char *key, long lineno, const char **out,
                         coh_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v)
        return COH_OK;
    if (cJSON_IsNull(v)) {
        *out = NULL;
        return COH_OK;
    }
    if (!cJSON_IsString(v))
        return coh_fail(err, COH_EFORMAT, "line %ld: \"%s\" must be a string", lineno, key);
    *out = v->valuestring;
    return COH_OK;
}

/* Render one input line; *text is malloc'd on success. */
static int chat_line(const char *line, long lineno, const jinja_tpl *dir_tpl,
                     const char *dir_tpl_err, const chat_config *cfg, const struct tm *now,
                     char **text, coh_err *err)
{
    cJSON *j = cJSON_Parse(line);
    int rc = COH_OK;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return coh_fail(err, COH_EFORMAT, "line %ld is not a JSON object", lineno);
    }
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *agp = cJSON_GetObjectItemCaseSensitive(j, "add_generation_prompt");
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(j, "extra_context");
    const char *tmpl = NULL, *bos = cfg->bos_token, *eos = cfg->eos_token;
    if (!cJSON_IsArray(msgs))
        rc = coh_fail(err, COH_EFORMAT, "line %ld needs \"messages\": an array of "
                                        "{\"role\", \"content\"} objects", lineno);
    else if (agp && !cJSON_IsBool(agp))
        rc = coh_fail(err, COH_EFORMAT, "line %ld: \"add_generation_prompt\" must be true or "
                                        "false", lineno);
    else if (extra && !cJSON_IsObject(extra))
        rc = coh_fail(err, COH_EFORMAT, "line %ld: \"extra_context\" must be an object", lineno);
    if (!rc)
        rc = chat_line_str(j, "template", lineno, &tmpl, err);
    if (!rc)
        rc = chat_line_str(j, "bos_token", lineno, &bos, err);
    if (!rc)
        rc = chat_line_str(j, "eos_token", lineno, &eos, err);
    jinja_tpl *own = NULL;
    const jinja_tpl *tpl = dir_tpl;
    if (!rc && tmpl) {
        if ((rc = jinja_compile(tmpl, &own, err)))
            coh_wrap(err, rc, "line %ld: \"template\"", lineno);
        tpl = own;
    } else if (!rc && !tpl) {
        rc = coh_fail(err, COH_EINVAL, "line %ld has no \"template\" and %s", lineno,
                      dir_tpl_err);
    }
    if (!rc && (rc = chat_render_tpl(tpl, msgs, cJSON_IsTrue(agp), bos, eos, extra, now, text,
                                     err)))
        coh_wrap(err, rc, "line %ld", lineno);
    jinja_free(own);
    cJSON_Delete(j);
    return rc;
}

static int cmd_chat(int argc, char **argv)
{
    const char *cmd = "chat";
    const struct option opts[] = {{"date", required_argument, NULL, 'd'},
                                  {"help", no_argument, NULL, 'h'},
                                  {NULL, 0, NULL, 0}};
    struct tm date_tm, *now = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': {
            memset(&date_tm, 0, sizeof date_tm);
            char tail = 0;
            if (sscanf(optarg, "%d-%d-%d%c", &date_tm.tm_year, &date_tm.tm_mon, &date_tm.tm_mday,
                       &tail) != 3 || date_tm.tm_mon < 1 || date_tm.tm_mon > 12 ||
                date_tm.tm_mday < 1 || date_tm.tm_mday > 31)
                return usage_error(cmd, "--date wants YYYY-MM-DD, got '%s'", optarg);
            date_tm.tm_year -= 1900;
            date_tm.tm_mon -= 1;
            time_t t = timegm(&date_tm);
            gmtime_r(&t, &date_tm); /* fills the weekday and day of the year */
            now = &date_tm;
            break;
        }
        case 'h': fputs(USAGE_CHAT, stdout); return 0;
        default: return usage_error(cmd, NULL);
        }
    }
    if (argc - optind > 1)
        return usage_error(cmd, "unexpected argument '%s' (at most one DIR is taken)",
                           argv[optind + 1]);
    const char *dir = optind < argc ? argv[optind] : NULL;

    coh_err err;
    coh_err_clear(&err);
    chat_config cfg = {0};
    jinja_tpl *dir_tpl = NULL;
    char dir_tpl_err[COH_ERR_MSG_LEN + 64] = "no DIR was given to take a chat template from";
    if (dir) {
        if (chat_config_load(dir, &cfg, &err))
            return report(&err, "cannot read the chat settings of %s", dir);
        if (!cfg.chat_template)
            snprintf(dir_tpl_err, sizeof dir_tpl_err,
                     "%s/tokenizer_config.json has no chat_template (a base model: give it raw "
                     "text, or put a \"template\" in the line)", dir);
        else if (jinja_compile(cfg.chat_template, &dir_tpl, &err))
            snprintf(dir_tpl_err, sizeof dir_tpl_err,
                     "the chat_template of %s/tokenizer_config.json cannot be used: %s", dir,
                     err.msg);
    }
    char *line = NULL;
    size_t line_cap = 0;
    long lineno = 0, len;
    int rc = EXIT_FAIL;
    while ((len = read_line(stdin, &line, &line_cap)) >= 0) {
        lineno++;
        if (is_blank(line))
            continue;
        char *text = NULL;
        coh_err_clear(&err);
        int bad = chat_line(line, lineno, dir_tpl, dir_tpl_err, &cfg, now, &text, &err);
        cJSON *o = cJSON_CreateObject();
        char *js = NULL;
        if (o && cJSON_AddStringToObject(o, bad ? "error" : "text", bad ? err.msg : text))
            js = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        free(text);
        if (!js) {
            fprintf(stderr, "cohort-tool: out of memory writing the answer to line %ld\n", lineno);
            goto out;
        }
        puts(js);
        free(js);
    }
    if (finish_stdin_stdout(len, lineno))
        goto out;
    rc = 0;
out:
    free(line);
    jinja_free(dir_tpl);
    chat_config_free(&cfg);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------ */

typedef struct tool_command {
    const char *name;
    int (*run)(int argc, char **argv);
} tool_command;

static const tool_command COMMANDS[] = {
    {"init", cmd_init},         {"inspect", cmd_inspect}, {"sample", cmd_sample},
    {"logprobs", cmd_logprobs}, {"grad", cmd_grad}, {"score", cmd_score},
    {"encode", cmd_encode},     {"decode", cmd_decode},   {"chat", cmd_chat},
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(USAGE_MAIN, stderr);
        return EXIT_USAGE;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(USAGE_MAIN, stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(sub, COMMANDS[i].name) != 0)
            continue;
        /* the command sees argv[0] = "cohort-tool NAME", which getopt's messages show */
        char prog[64];
        snprintf(prog, sizeof prog, "cohort-tool %s", COMMANDS[i].name);
        argv[1] = prog;
        return COMMANDS[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "cohort-tool: unknown command '%s'\n\n%s", sub, USAGE_MAIN);
    return EXIT_USAGE;
}
