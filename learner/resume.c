/* resume.c - the learner service's place in the RL data (see resume.h). */
#include "resume.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

/* 64-bit numbers travel as decimal strings: JSON numbers are doubles. */
static int add_u64_(cJSON *o, const char *key, uint64_t v)
{
    char num[32];
    snprintf(num, sizeof num, "%" PRIu64, v);
    return cJSON_AddStringToObject(o, key, num) != NULL;
}

static int get_u64_(const cJSON *o, const char *key, uint64_t *v, coh_err *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    char *end = NULL;
    if (!cJSON_IsString(it) || !isdigit((unsigned char)it->valuestring[0]) ||
        (errno = 0, *v = strtoull(it->valuestring, &end, 10), *end != 0 || errno == ERANGE))
        return coh_fail(err, COH_EFORMAT, "%s: \"%s\" must be a decimal string", RSM_FILE, key);
    return COH_OK;
}

int rsm_to_json(const rsm_state *s, char **text, coh_err *err)
{
    *text = NULL;
    cJSON *o = cJSON_CreateObject();
    int ok = o && add_u64_(o, "cursor", s->cursor) && add_u64_(o, "consumed_seq", s->consumed_seq) &&
             add_u64_(o, "next_seq", s->next_seq);
    cJSON *arr = ok ? cJSON_AddArrayToObject(o, "pending") : NULL;
    for (int i = 0; arr && i < s->n_pending; i++) {
        char num[32];
        snprintf(num, sizeof num, "%" PRIu64, s->pending[i]);
        cJSON *x = cJSON_CreateString(num);
        if (!x || !cJSON_AddItemToArray(arr, x)) {
            cJSON_Delete(x);
            arr = NULL;
        }
    }
    if (arr)
        *text = cJSON_Print(o);
    cJSON_Delete(o);
    return *text ? COH_OK : coh_fail(err, COH_ENOMEM, "out of memory writing %s", RSM_FILE);
}

int rsm_from_json(const char *text, rsm_state *s, coh_err *err)
{
    memset(s, 0, sizeof *s);
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return coh_fail(err, COH_EFORMAT, "%s is not a JSON object", RSM_FILE);
    }
    int rc = get_u64_(o, "cursor", &s->cursor, err);
    if (!rc)
        rc = get_u64_(o, "consumed_seq", &s->consumed_seq, err);
    if (!rc)
        rc = get_u64_(o, "next_seq", &s->next_seq, err);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pending");
    if (!rc && !cJSON_IsArray(arr))
        rc = coh_fail(err, COH_EFORMAT, "%s: \"pending\" must be an array", RSM_FILE);
    int n = rc ? 0 : cJSON_GetArraySize(arr);
    if (!rc && n > 0 && !(s->pending = malloc((size_t)n * sizeof *s->pending)))
        rc = coh_fail(err, COH_ENOMEM, "out of memory reading %s", RSM_FILE);
    for (int i = 0; !rc && i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(arr, i);
        char *end = NULL;
        if (!cJSON_IsString(x) || !isdigit((unsigned char)x->valuestring[0]) ||
            (errno = 0, s->pending[i] = strtoull(x->valuestring, &end, 10),
             *end != 0 || errno == ERANGE))
            rc = coh_fail(err, COH_EFORMAT, "%s: pending[%d] must be a decimal string",
                          RSM_FILE, i);
        else
            s->n_pending = i + 1;
    }
    if (!rc && s->next_seq <= s->consumed_seq)
        rc = coh_fail(err, COH_EFORMAT, "%s: next_seq must be above consumed_seq", RSM_FILE);
    cJSON_Delete(o);
    if (rc)
        rsm_free(s);
    return rc;
}

int rsm_load(const char *dir, rsm_state *s, coh_err *err)
{
    char path[1200], *text = NULL;
    size_t len = 0;
    memset(s, 0, sizeof *s);
    snprintf(path, sizeof path, "%s/%s", dir, RSM_FILE);
    if (fs_read_all(path, &text, &len, NULL) != COH_OK)
        return coh_fail(err, COH_ENOTFOUND, "%s has no %s", dir, RSM_FILE);
    int rc = rsm_from_json(text, s, err);
    free(text);
    if (rc)
        return coh_wrap(err, rc, "%s", path);
    return COH_OK;
}

void rsm_free(rsm_state *s)
{
    free(s->pending);
    s->pending = NULL;
    s->n_pending = 0;
}

static int cmp_u64_(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int has_(const uint64_t *sorted, int n, uint64_t v)
{
    return n > 0 && bsearch(&v, sorted, (size_t)n, sizeof v, cmp_u64_) != NULL;
}

int rsm_plan(const rsm_state *s, const uint64_t *logged, int n_logged, uint64_t **requeue,
             int *n_requeue, uint64_t *cursor, coh_err *err)
{
    *requeue = NULL;
    *n_requeue = 0;
    uint64_t cur = s->cursor;
    for (int i = 0; i < n_logged; i++)
        if (logged[i] >= cur)
            cur = logged[i] == UINT64_MAX ? UINT64_MAX : logged[i] + 1; /* no wrap to 0 */
    uint64_t gap = cur - s->cursor;
    if (gap > (1u << 24))
        return coh_fail(err, COH_EFORMAT,
                        "the accepted-group log names prompt %" PRIu64 ", %" PRIu64
                        " past the checkpoint's cursor: the log belongs to another run; move "
                        "it away to start from the checkpoint alone",
                        cur - 1, gap);
    size_t cap = (size_t)s->n_pending + (size_t)gap;
    uint64_t *sorted = n_logged ? malloc((size_t)n_logged * sizeof *sorted) : NULL;
    uint64_t *out = cap ? malloc(cap * sizeof *out) : NULL;
    uint64_t *seen = cap ? malloc(cap * sizeof *seen) : NULL;
    if ((n_logged && !sorted) || (cap && (!out || !seen))) {
        free(sorted);
        free(out);
        free(seen);
        return coh_fail(err, COH_ENOMEM, "out of memory planning the resume");
    }
    if (n_logged) {
        memcpy(sorted, logged, (size_t)n_logged * sizeof *sorted);
        qsort(sorted, (size_t)n_logged, sizeof *sorted, cmp_u64_);
    }
    /* pending prompts were handed out before the checkpoint (< s->cursor), the gap after
     * it: the two never overlap; the pending list has no duplicates unless the file was
     * edited, which the scan below tolerates */
    int n = 0, n_seen = 0;
    for (size_t i = 0; i < cap; i++) {
        int from_pending = i < (size_t)s->n_pending;
        uint64_t p = from_pending ? s->pending[i] : s->cursor + (i - (size_t)s->n_pending);
        if (has_(sorted, n_logged, p))
            continue;
        if (from_pending) {
            int dup = 0;
            for (int j = 0; j < n_seen && !dup; j++)
                dup = seen[j] == p;
            if (dup)
                continue;
            seen[n_seen++] = p;
        }
        out[n++] = p;
    }
    free(sorted);
    free(seen);
    *requeue = out;
    *n_requeue = n;
    *cursor = cur;
    return COH_OK;
}
