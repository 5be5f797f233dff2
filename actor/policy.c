/* policy.c - a verified policy version (see policy.h). */
#include "policy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct policy {
    int64_t version;
    uint32_t checksum;
    model *m;
    tokenizer *tok;
};

int policy_create(int64_t version, uint32_t checksum, model *m, tokenizer *tok, policy **out,
                  coh_err *err)
{
    *out = NULL;
    if (!m || !tok || version < 0) {
        model_destroy(m);
        tok_destroy(tok);
        return coh_fail(err, COH_EINVAL,
                        "policy_create: needs a model, a tokenizer and a version >= 0 (got "
                        "version %lld)",
                        (long long)version);
    }
    policy *p = calloc(1, sizeof *p);
    if (!p) {
        model_destroy(m);
        tok_destroy(tok);
        return coh_fail(err, COH_ENOMEM, "out of memory for policy version %lld",
                        (long long)version);
    }
    p->version = version;
    p->checksum = checksum;
    p->m = m;
    p->tok = tok;
    *out = p;
    return COH_OK;
}

void policy_destroy(policy *p)
{
    if (!p)
        return;
    model_destroy(p->m);
    tok_destroy(p->tok);
    free(p);
}

int64_t policy_version(const policy *p) { return p->version; }
uint32_t policy_checksum(const policy *p) { return p->checksum; }
model *policy_model(const policy *p) { return p->m; }
tokenizer *policy_tokenizer(const policy *p) { return p->tok; }

int policy_load_tokenizer(const char *json, tokenizer **out, coh_err *err)
{
    if (!json || !*json)
        return tok_create_default(out, err);
    /* tok_load reads a file: write the text to a private temporary one */
    char path[] = "/tmp/cohort-actor-tok-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return coh_fail(err, COH_EIO,
                        "cannot create a temporary tokenizer file in /tmp: %s (check that /tmp "
                        "is writable)",
                        strerror(errno));
    size_t n = strlen(json), off = 0;
    while (off < n) {
        ssize_t w = write(fd, json + off, n - off);
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return coh_fail(err, COH_EIO, "cannot write %s: %s", path, strerror(e));
        }
        off += (size_t)w;
    }
    close(fd);
    int rc = tok_load(path, out, err);
    unlink(path);
    return rc;
}
