/* acklog.c - append-only, checksummed log of accepted groups (see acklog.h for the format,
 * the recovery rules and the crash-safety argument).
 *
 * The handle keeps the file open (locked with flock), the offset of its end, and an index of
 * (offset, payload length, seq) per record. Appends are one pwrite at the end followed by
 * fdatasync; the index grows before the write, so a durable record is never missing from it.
 */
#include "acklog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

static const char HEADER_MAGIC[8] = {'C', 'O', 'H', 'A', 'L', 'O', 'G', '1'};
#define GROUP_HEAD_BYTES 32u /* actor, prompt, lease, n_prompt, n_completions */
#define COMP_HEAD_BYTES 20u  /* n_tokens, version, reward */

typedef struct alog_rec {
    uint64_t off; /* byte offset of the record's magic */
    uint64_t seq;
    uint32_t len; /* payload length */
} alog_rec;

struct alog {
    char *path;
    char *tmp_path; /* path ".compact" */
    int fd;
    uint64_t base_seq;
    uint64_t size; /* end of the last valid record == file size */
    alog_rec *idx;
    int count, cap;
    uint8_t *wbuf; /* append scratch */
    size_t wcap;
    int broken; /* a failed append could not be rolled back */
};

/* Counts of one checked payload. */
typedef struct payload_info {
    uint64_t actor, prompt, lease;
    uint32_t n_prompt, n_comp;
    uint64_t total_tokens; /* sum of n_tokens over completions */
} payload_info;

/* ---- little-endian encoding ------------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint32_t crc_of(const uint8_t *p, size_t n)
{
    /* n <= 12 + ALOG_MAX_PAYLOAD, which fits zlib's uInt */
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* ---- plain I/O helpers ------------------------------------------------------------------- */

static int pwrite_full(int fd, const void *data, size_t len, uint64_t off)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* 0, or -1 with errno (EIO with a short file standing for "unexpected end of file"). */
static int pread_full(int fd, void *data, size_t len, uint64_t off)
{
    uint8_t *p = data;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* fsync the folder holding path, so a create or rename in it is durable. */
static int sync_parent_dir(const char *path, coh_err *err)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir)
        return coh_fail(err, COH_ENOMEM, "out of memory syncing the folder of '%s'", path);
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        int rc = coh_fail(err, COH_EIO, "cannot open folder '%s' to sync it: %s", dir,
                          strerror(e));
        free(dir);
        return rc;
    }
    int rc = COH_OK;
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot sync folder '%s': %s; check the disk", dir,
                      strerror(e));
    }
    close(fd);
    free(dir);
    return rc;
}

static void header_encode(uint8_t h[ALOG_HEADER_BYTES], uint64_t base_seq)
{
    memcpy(h, HEADER_MAGIC, 8);
    put_u32(h + 8, ALOG_FORMAT_VERSION);
    put_u64(h + 12, base_seq);
    put_u32(h + 20, crc_of(h, 20));
}

/* ---- record checks (pure, on bytes in memory) -------------------------------------------- */

/* Check the frame of the record at buf[off..size): magic, length bound, completeness, CRC.
 * 0 with *len and *seq set, or -1 with the reason in why. */
static int frame_check(const uint8_t *buf, uint64_t size, uint64_t off, uint32_t *len,
                       uint64_t *seq, char *why, size_t why_len)
{
    uint64_t rem = size - off;
    if (rem >= 4 && get_u32(buf + off) != ALOG_RECORD_MAGIC) {
        snprintf(why, why_len, "bad record magic 0x%08" PRIx32, get_u32(buf + off));
        return -1;
    }
    if (rem < 16) {
        snprintf(why, why_len, "incomplete record header: %" PRIu64 " of 16 bytes", rem);
        return -1;
    }
    uint32_t l = get_u32(buf + off + 4);
    if (l > ALOG_MAX_PAYLOAD) {
        snprintf(why, why_len, "payload length %" PRIu32 " exceeds the limit of %u bytes", l,
                 ALOG_MAX_PAYLOAD);
        return -1;
    }
    uint64_t need = (uint64_t)ALOG_RECORD_OVERHEAD + l;
    if (need > rem) {
        snprintf(why, why_len,
                 "incomplete record: %" PRIu64 " bytes needed, %" PRIu64 " in the file", need,
                 rem);
        return -1;
    }
    uint32_t want = get_u32(buf + off + 16 + l);
    uint32_t got = crc_of(buf + off + 4, 12 + (size_t)l);
    if (want != got) {
        snprintf(why, why_len, "CRC mismatch (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32 ")",
                 want, got);
        return -1;
    }
    *len = l;
    *seq = get_u64(buf + off + 8);
    return 0;
}

/* Check that a payload's counts are consistent with its length (before anything is
 * allocated from them) and that it is consumed exactly. 0, or -1 with the reason. */
static int payload_check(const uint8_t *p, uint32_t len, payload_info *pi, char *why,
                         size_t why_len)
{
    memset(pi, 0, sizeof *pi);
    if (len < GROUP_HEAD_BYTES) {
        snprintf(why, why_len, "payload of %" PRIu32 " bytes is shorter than the %u-byte group header",
                 len, GROUP_HEAD_BYTES);
        return -1;
    }
    pi->actor = get_u64(p);
    pi->prompt = get_u64(p + 8);
    pi->lease = get_u64(p + 16);
    pi->n_prompt = get_u32(p + 24);
    pi->n_comp = get_u32(p + 28);
    uint64_t pos = GROUP_HEAD_BYTES, rem = len - GROUP_HEAD_BYTES;
    if (pi->n_prompt > rem / 4) {
        snprintf(why, why_len, "prompt of %" PRIu32 " tokens needs more than the %" PRIu64
                 " payload bytes left", pi->n_prompt, rem);
        return -1;
    }
    pos += (uint64_t)pi->n_prompt * 4;
    rem -= (uint64_t)pi->n_prompt * 4;
    if (pi->n_comp > rem / COMP_HEAD_BYTES) {
        snprintf(why, why_len, "%" PRIu32 " completions need more than the %" PRIu64
                 " payload bytes left", pi->n_comp, rem);
        return -1;
    }
    for (uint32_t c = 0; c < pi->n_comp; c++) {
        if (rem < COMP_HEAD_BYTES) {
            snprintf(why, why_len, "completion %" PRIu32 " starts past the payload's end", c);
            return -1;
        }
        uint32_t n = get_u32(p + pos);
        pos += COMP_HEAD_BYTES;
        rem -= COMP_HEAD_BYTES;
        if (n > rem / 8) {
            snprintf(why, why_len, "completion %" PRIu32 " of %" PRIu32 " tokens needs more than the %"
                     PRIu64 " payload bytes left", c, n, rem);
            return -1;
        }
        pos += (uint64_t)n * 8;
        rem -= (uint64_t)n * 8;
        pi->total_tokens += n;
    }
    if (rem != 0) {
        snprintf(why, why_len, "%" PRIu64 " payload bytes left over after the last completion",
                 rem);
        return -1;
    }
    return 0;
}

/* Bytes of the scratch block payload_decode fills for pi. */
static size_t decode_block_size(const payload_info *pi)
{
    return (size_t)pi->n_comp * sizeof(gbuf_completion) +
           ((size_t)pi->n_prompt + (size_t)pi->total_tokens) * sizeof(int) +
           (size_t)pi->total_tokens * sizeof(float);
}

/* Decode a payload that passed payload_check into g, whose arrays point into block (of
 * decode_block_size(pi) bytes, laid out completions | ints | floats). */
static void payload_decode(const uint8_t *p, const payload_info *pi, void *block, gbuf_group *g)
{
    gbuf_completion *comp = block;
    int *ints = (int *)(comp + pi->n_comp);
    float *floats = (float *)(ints + pi->n_prompt + pi->total_tokens);
    const uint8_t *q = p + GROUP_HEAD_BYTES;

    int *prompt = ints;
    for (uint32_t k = 0; k < pi->n_prompt; k++, q += 4)
        prompt[k] = (int)(int32_t)get_u32(q);
    ints += pi->n_prompt;
    for (uint32_t c = 0; c < pi->n_comp; c++) {
        uint32_t n = get_u32(q);
        uint64_t version = get_u64(q + 4);
        uint64_t rbits = get_u64(q + 12);
        double reward;
        memcpy(&reward, &rbits, sizeof reward);
        q += COMP_HEAD_BYTES;
        for (uint32_t k = 0; k < n; k++, q += 4)
            ints[k] = (int)(int32_t)get_u32(q);
        for (uint32_t k = 0; k < n; k++, q += 4) {
            uint32_t fbits = get_u32(q);
            memcpy(&floats[k], &fbits, sizeof fbits);
        }
        comp[c] = (gbuf_completion){.tokens = ints, .n_tokens = (int)n, .logp = floats,
                                    .n_logp = (int)n, .version = version, .reward = reward};
        ints += n;
        floats += n;
    }
    *g = (gbuf_group){.prompt = pi->prompt, .lease_id = pi->lease, .prompt_tokens = prompt,
                      .n_prompt = (int)pi->n_prompt, .completions = comp,
                      .n_completions = (int)pi->n_comp};
}

/* First offset p in [from, size) where a frame-valid record starts, or -1. */
static int64_t find_valid_record(const uint8_t *buf, uint64_t size, uint64_t from)
{
    char why[8];
    for (uint64_t p = from; p + ALOG_RECORD_OVERHEAD <= size; p++) {
        if (get_u32(buf + p) != ALOG_RECORD_MAGIC)
            continue;
        uint32_t len;
        uint64_t seq;
        if (frame_check(buf, size, p, &len, &seq, why, sizeof why) == 0)
            return (int64_t)p;
    }
    return -1;
}

/* ---- the handle ----------------------------------------------------------------------------- */

static int index_reserve(alog *l, int n, coh_err *err)
{
    if (n <= l->cap)
        return COH_OK;
    int cap = l->cap ? l->cap : 64;
    while (cap < n) {
        if (cap > INT_MAX / 2)
            return coh_fail(err, COH_ERANGE, "acklog '%s' holds too many records (%d); compact it",
                            l->path, l->count);
        cap *= 2;
    }
    alog_rec *p = realloc(l->idx, (size_t)cap * sizeof *p);
    if (!p)
        return coh_fail(err, COH_ENOMEM, "out of memory indexing acklog '%s' (%d records)",
                        l->path, n);
    l->idx = p;
    l->cap = cap;
    return COH_OK;
}

/* Create path holding only a header (base_seq 0), without ever showing a partial file under
 * that name: write "<path>.new.<pid>", fsync, link it to path (fails harmlessly if someone
 * created path meanwhile), remove the temporary name, fsync the folder. */
static int create_fresh(const char *path, coh_err *err)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return coh_fail(err, COH_ENOMEM, "out of memory creating acklog '%s'", path);
    snprintf(tmp, n, "%s.new.%ld", path, (long)getpid());
    uint8_t h[ALOG_HEADER_BYTES];
    header_encode(h, 0);
    int rc = COH_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot create acklog '%s' (via '%s'): %s; check that the "
                      "folder exists and is writable", path, tmp, strerror(e));
        free(tmp);
        return rc;
    }
    if (pwrite_full(fd, h, sizeof h, 0) != 0 || fsync(fd) != 0) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot write acklog header to '%s': %s; check the disk",
                      tmp, strerror(e));
    }
    close(fd);
    if (rc == COH_OK && link(tmp, path) != 0 && errno != EEXIST) {
        /* file systems without hard links: a rename is atomic too */
        if (rename(tmp, path) != 0) {
            int e = errno;
            rc = coh_fail(err, COH_EIO, "cannot create acklog '%s': %s", path, strerror(e));
        }
    }
    unlink(tmp);
    free(tmp);
    if (rc == COH_OK)
        rc = sync_parent_dir(path, err);
    return rc;
}

/* Read the whole open file. *buf is NULL for an empty file. */
static int read_whole(alog *l, uint8_t **buf, uint64_t *size, coh_err *err)
{
    *buf = NULL;
    *size = 0;
    struct stat st;
    if (fstat(l->fd, &st) != 0) {
        int e = errno;
        return coh_fail(err, COH_EIO, "cannot stat acklog '%s': %s", l->path, strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return coh_fail(err, COH_EFORMAT, "acklog '%s' is not a regular file; give the path of "
                        "a file (it is created if missing)", l->path);
    if (st.st_size == 0)
        return COH_OK;
    uint8_t *p = malloc((size_t)st.st_size);
    if (!p)
        return coh_fail(err, COH_ENOMEM, "out of memory reading acklog '%s' (%lld bytes)",
                        l->path, (long long)st.st_size);
    if (pread_full(l->fd, p, (size_t)st.st_size, 0) != 0) {
        int e = errno;
        free(p);
        return coh_fail(err, COH_EIO, "cannot read acklog '%s': %s", l->path, strerror(e));
    }
    *buf = p;
    *size = (uint64_t)st.st_size;
    return COH_OK;
}

/* Check the header of a non-empty file image. */
static int header_check(const alog *l, const uint8_t *buf, uint64_t size, coh_err *err)
{
    size_t m = size < 8 ? (size_t)size : 8;
    if (memcmp(buf, HEADER_MAGIC, m) != 0)
        return coh_fail(err, COH_EFORMAT, "'%s' is not an acklog (its first bytes are not "
                        "\"COHALOG1\"); give the path of an acklog, or move this file away",
                        l->path);
    if (size < ALOG_HEADER_BYTES)
        return coh_fail(err, COH_EFORMAT, "acklog '%s' is %" PRIu64 " bytes, shorter than its "
                        "%u-byte header: the file was damaged; restore it, or move it away to "
                        "start an empty log (its groups are then lost)", l->path, size,
                        ALOG_HEADER_BYTES);
    if (get_u32(buf + 20) != crc_of(buf, 20))
        return coh_fail(err, COH_EFORMAT, "acklog '%s': header CRC mismatch (bytes 0-23 are "
                        "damaged); restore the file, or move it away to start an empty log "
                        "(its groups are then lost)", l->path);
    uint32_t v = get_u32(buf + 8);
    if (v != ALOG_FORMAT_VERSION)
        return coh_fail(err, COH_EUNSUPPORTED, "acklog '%s' has format version %" PRIu32
                        "; this build reads version %u: use a matching cohort-learner",
                        l->path, v, ALOG_FORMAT_VERSION);
    return COH_OK;
}

/* Scan a file image (header checked): fill the index, find where valid records end. A bad
 * record with a valid one after it, or a CRC-valid record with bad content, is refused. */
static int scan_records(alog *l, const uint8_t *buf, uint64_t size, uint64_t *end,
                        char *cut_why, size_t cut_why_len, coh_err *err)
{
    uint64_t off = ALOG_HEADER_BYTES, prev = l->base_seq;
    char why[160];
    while (off < size) {
        uint32_t len;
        uint64_t seq;
        if (frame_check(buf, size, off, &len, &seq, why, sizeof why) != 0) {
            int64_t next = find_valid_record(buf, size, off + 1);
            if (next >= 0)
                return coh_fail(err, COH_EFORMAT,
                                "acklog '%s': the record at byte offset %" PRIu64 " is corrupt "
                                "(%s) but a valid record follows at byte offset %" PRId64
                                ": this is damage to acknowledged groups, not a torn append, "
                                "so nothing was cut; restore the file from a copy, or move it "
                                "away to start an empty log (its groups are then lost)",
                                l->path, off, why, next);
            snprintf(cut_why, cut_why_len, "record at byte offset %" PRIu64 ": %.110s", off, why);
            break;
        }
        payload_info pi;
        if (payload_check(buf + off + 16, len, &pi, why, sizeof why) != 0)
            return coh_fail(err, COH_EFORMAT,
                            "acklog '%s': the record at byte offset %" PRIu64 " (seq %" PRIu64
                            ") has a valid CRC but inconsistent content (%s): it was written "
                            "by another program or a buggy writer; move the file away to start "
                            "an empty log", l->path, off, seq, why);
        if (seq <= prev)
            return coh_fail(err, COH_EFORMAT,
                            "acklog '%s': the record at byte offset %" PRIu64 " has seq %" PRIu64
                            ", not greater than the previous seq %" PRIu64 " (records must be "
                            "in increasing seq order); move the file away to start an empty "
                            "log", l->path, off, seq, prev);
        int rc = index_reserve(l, l->count + 1, err);
        if (rc)
            return rc;
        l->idx[l->count++] = (alog_rec){.off = off, .seq = seq, .len = len};
        prev = seq;
        off += ALOG_RECORD_OVERHEAD + (uint64_t)len;
    }
    *end = off < size ? off : size;
    return COH_OK;
}

void alog_close(alog *l)
{
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    free(l->path);
    free(l->tmp_path);
    free(l->idx);
    free(l->wbuf);
    free(l);
}

int alog_open(const char *path, alog **out, alog_open_report *rep, coh_err *err)
{
    alog_open_report local;
    if (!rep)
        rep = &local;
    memset(rep, 0, sizeof *rep);
    if (out)
        *out = NULL;
    if (!path || !out || !*path)
        return coh_fail(err, COH_EINVAL, "alog_open: NULL or empty path or out");

    alog *l = calloc(1, sizeof *l);
    if (!l)
        return coh_fail(err, COH_ENOMEM, "out of memory opening acklog '%s'", path);
    l->fd = -1;
    size_t n = strlen(path);
    l->path = strdup(path);
    l->tmp_path = malloc(n + sizeof ".compact");
    if (!l->path || !l->tmp_path) {
        alog_close(l);
        return coh_fail(err, COH_ENOMEM, "out of memory opening acklog '%s'", path);
    }
    memcpy(l->tmp_path, path, n);
    memcpy(l->tmp_path + n, ".compact", sizeof ".compact");

    int rc;
    uint8_t *buf = NULL;
    l->fd = open(path, O_RDWR | O_CLOEXEC);
    if (l->fd < 0 && errno == ENOENT) {
        rc = create_fresh(path, err);
        if (rc)
            goto fail;
        rep->created = 1;
        l->fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (l->fd < 0) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot open acklog '%s': %s", path, strerror(e));
        goto fail;
    }
    if (flock(l->fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK)
            rc = coh_fail(err, COH_ESTATE, "acklog '%s' is in use by another learner (or another "
                          "handle in this process): one log has one owner; stop the other "
                          "learner or give this one its own run folder", path);
        else
            rc = coh_fail(err, COH_EIO, "cannot lock acklog '%s': %s", path, strerror(e));
        goto fail;
    }
    /* a compaction interrupted before its rename: the log itself is intact */
    if (unlink(l->tmp_path) != 0 && errno != ENOENT) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot remove the stale '%s': %s", l->tmp_path, strerror(e));
        goto fail;
    }

    uint64_t size;
    rc = read_whole(l, &buf, &size, err);
    if (rc)
        goto fail;
    if (size == 0) {
        /* an empty file holds no acknowledged group: make it a fresh log */
        uint8_t h[ALOG_HEADER_BYTES];
        header_encode(h, 0);
        if (pwrite_full(l->fd, h, sizeof h, 0) != 0 || fdatasync(l->fd) != 0) {
            int e = errno;
            rc = coh_fail(err, COH_EIO, "cannot write the header of acklog '%s': %s; check the "
                          "disk", path, strerror(e));
            goto fail;
        }
        rep->created = 1;
        l->size = ALOG_HEADER_BYTES;
    } else {
        rc = header_check(l, buf, size, err);
        if (rc)
            goto fail;
        l->base_seq = get_u64(buf + 12);
        uint64_t end = size;
        rc = scan_records(l, buf, size, &end, rep->cut_reason, sizeof rep->cut_reason, err);
        if (rc)
            goto fail;
        if (end < size) {
            if (ftruncate(l->fd, (off_t)end) != 0 || fsync(l->fd) != 0) {
                int e = errno;
                rc = coh_fail(err, COH_EIO, "cannot cut the torn tail of acklog '%s' at byte "
                              "offset %" PRIu64 ": %s; check the disk and retry", path, end,
                              strerror(e));
                goto fail;
            }
            rep->cut_bytes = size - end;
            rep->cut_offset = end;
        }
        l->size = end;
    }
    free(buf);
    rep->records = l->count;
    rep->last_seq = alog_last_seq(l);
    rep->bytes = l->size;
    *out = l;
    return COH_OK;

fail:
    free(buf);
    rep->records = 0;
    alog_close(l);
    return rc;
}

/* ---- append ----------------------------------------------------------------------------- */

/* Check g's shape and compute its payload length. */
static int group_size_of(const alog *l, const gbuf_group *g, uint64_t *len, coh_err *err)
{
    if (!g)
        return coh_fail(err, COH_EINVAL, "alog_append: group is NULL");
    if (g->n_prompt < 0 || (g->n_prompt > 0 && !g->prompt_tokens))
        return coh_fail(err, COH_EINVAL, "alog_append: prompt of %d tokens %s", g->n_prompt,
                        g->n_prompt < 0 ? "(negative count)" : "has no token array");
    if (g->n_completions < 0 || (g->n_completions > 0 && !g->completions))
        return coh_fail(err, COH_EINVAL, "alog_append: %d completions %s", g->n_completions,
                        g->n_completions < 0 ? "(negative count)" : "but no array");
    uint64_t total = GROUP_HEAD_BYTES + (uint64_t)g->n_prompt * 4;
    for (int i = 0; i < g->n_completions; i++) {
        const gbuf_completion *c = &g->completions[i];
        if (c->n_tokens < 0 || c->n_logp != c->n_tokens)
            return coh_fail(err, COH_EINVAL, "alog_append: completion %d has %d tokens and %d "
                            "log-probs; they must be equal and >= 0", i, c->n_tokens, c->n_logp);
        if (c->n_tokens > 0 && (!c->tokens || !c->logp))
            return coh_fail(err, COH_EINVAL, "alog_append: completion %d lacks its token or "
                            "log-prob array", i);
        total += COMP_HEAD_BYTES + (uint64_t)c->n_tokens * 8;
    }
    if (total > ALOG_MAX_PAYLOAD)
        return coh_fail(err, COH_ERANGE, "acklog '%s': a group of %" PRIu64 " bytes exceeds the "
                        "record limit of %u bytes; lower the group size or the token limits",
                        l->path, total, ALOG_MAX_PAYLOAD);
    *len = total;
    return COH_OK;
}

static void record_encode(uint8_t *r, uint64_t seq, uint64_t actor, const gbuf_group *g,
                          uint32_t len)
{
    put_u32(r, ALOG_RECORD_MAGIC);
    put_u32(r + 4, len);
    put_u64(r + 8, seq);
    uint8_t *q = r + 16;
    put_u64(q, actor);
    put_u64(q + 8, g->prompt);
    put_u64(q + 16, g->lease_id);
    put_u32(q + 24, (uint32_t)g->n_prompt);
    put_u32(q + 28, (uint32_t)g->n_completions);
    q += GROUP_HEAD_BYTES;
    for (int k = 0; k < g->n_prompt; k++, q += 4)
        put_u32(q, (uint32_t)g->prompt_tokens[k]);
    for (int i = 0; i < g->n_completions; i++) {
        const gbuf_completion *c = &g->completions[i];
        uint64_t rbits;
        memcpy(&rbits, &c->reward, sizeof rbits);
        put_u32(q, (uint32_t)c->n_tokens);
        put_u64(q + 4, c->version);
        put_u64(q + 12, rbits);
        q += COMP_HEAD_BYTES;
        for (int k = 0; k < c->n_tokens; k++, q += 4)
            put_u32(q, (uint32_t)c->tokens[k]);
        for (int k = 0; k < c->n_tokens; k++, q += 4) {
            uint32_t fbits;
            memcpy(&fbits, &c->logp[k], sizeof fbits);
            put_u32(q, fbits);
        }
    }
    put_u32(q, crc_of(r + 4, 12 + (size_t)len));
}

int alog_append(alog *l, uint64_t seq, uint64_t actor, const gbuf_group *g, coh_err *err)
{
    if (!l)
        return coh_fail(err, COH_EINVAL, "alog_append: log is NULL");
    if (l->broken)
        return coh_fail(err, COH_ESTATE, "acklog '%s': an earlier failed append could not be "
                        "rolled back, so the file's end is unknown; close and reopen the log "
                        "(the open cuts the partial record)", l->path);
    uint64_t last = alog_last_seq(l);
    if (seq <= last)
        return coh_fail(err, COH_EINVAL, "acklog '%s': seq %" PRIu64 " is not greater than the "
                        "log's last seq %" PRIu64 "; sequence numbers must increase (continue "
                        "from alog_last_seq() + 1)", l->path, seq, last);
    uint64_t len = 0;
    int rc = group_size_of(l, g, &len, err);
    if (rc)
        return rc;
    rc = index_reserve(l, l->count + 1, err);
    if (rc)
        return rc;
    size_t rec = (size_t)len + ALOG_RECORD_OVERHEAD;
    if (rec > l->wcap) {
        uint8_t *p = realloc(l->wbuf, rec);
        if (!p)
            return coh_fail(err, COH_ENOMEM, "out of memory encoding a %zu-byte acklog record",
                            rec);
        l->wbuf = p;
        l->wcap = rec;
    }
    record_encode(l->wbuf, seq, actor, g, (uint32_t)len);

    const char *step = "write";
    int ok = pwrite_full(l->fd, l->wbuf, rec, l->size) == 0;
    if (ok) {
        step = "fdatasync";
        ok = fdatasync(l->fd) == 0;
    }
    if (!ok) {
        int e = errno;
        int back = ftruncate(l->fd, (off_t)l->size) == 0 && fdatasync(l->fd) == 0;
        if (!back)
            l->broken = 1;
        return coh_fail(err, COH_EIO, "acklog '%s': cannot %s the record of seq %" PRIu64
                        " (%zu bytes): %s; %s; the group is NOT logged and must not be "
                        "acknowledged; check the disk (space, errors)", l->path, step, seq, rec,
                        strerror(e),
                        back ? "the file was cut back to its previous end"
                             : "cutting the file back failed too, close and reopen the log");
    }
    l->idx[l->count++] = (alog_rec){.off = l->size, .seq = seq, .len = (uint32_t)len};
    l->size += rec;
    return COH_OK;
}

/* ---- reading records back --------------------------------------------------------------- */

/* Read record r into *buf (grown as needed) and check it against the index and its CRC. */
static int record_load(const alog *l, const alog_rec *r, uint8_t **buf, size_t *cap,
                       coh_err *err)
{
    size_t n = (size_t)r->len + ALOG_RECORD_OVERHEAD;
    if (n > *cap) {
        uint8_t *p = realloc(*buf, n);
        if (!p)
            return coh_fail(err, COH_ENOMEM, "out of memory reading a %zu-byte acklog record", n);
        *buf = p;
        *cap = n;
    }
    if (pread_full(l->fd, *buf, n, r->off) != 0) {
        int e = errno;
        return coh_fail(err, COH_EIO, "acklog '%s': cannot read the record at byte offset %"
                        PRIu64 ": %s", l->path, r->off, strerror(e));
    }
    uint32_t len = 0;
    uint64_t seq = 0;
    char why[160];
    int bad = frame_check(*buf, n, 0, &len, &seq, why, sizeof why) != 0;
    if (!bad && (len != r->len || seq != r->seq)) {
        bad = 1;
        snprintf(why, sizeof why, "length %" PRIu32 " and seq %" PRIu64 " where the index has %"
                 PRIu32 " and %" PRIu64, len, seq, r->len, r->seq);
    }
    if (bad) {
        return coh_fail(err, COH_EFORMAT, "acklog '%s': the record at byte offset %" PRIu64
                        " (seq %" PRIu64 ") changed since the log was opened (%s); another "
                        "program wrote to the file; reopen it", l->path, r->off, r->seq, why);
    }
    return COH_OK;
}

int alog_replay(const alog *l, uint64_t after_seq,
                int (*fn)(void *ctx, uint64_t seq, uint64_t actor, const gbuf_group *g),
                void *ctx, coh_err *err)
{
    if (!l || !fn)
        return coh_fail(err, COH_EINVAL, "alog_replay: NULL log or callback");
    uint8_t *buf = NULL, *block = NULL;
    size_t cap = 0, block_cap = 0;
    int rc = COH_OK;
    const int count = l->count;
    for (int i = 0; i < count && rc == COH_OK; i++) {
        const alog_rec *r = &l->idx[i];
        if (r->seq <= after_seq)
            continue;
        rc = record_load(l, r, &buf, &cap, err);
        if (rc)
            break;
        payload_info pi;
        char why[160];
        if (payload_check(buf + 16, r->len, &pi, why, sizeof why) != 0) {
            rc = coh_fail(err, COH_EFORMAT, "acklog '%s': record at byte offset %" PRIu64
                          ": %s; reopen the log", l->path, r->off, why);
            break;
        }
        size_t need = decode_block_size(&pi) + 1; /* never 0: realloc(p, 0) may free */
        if (need > block_cap) {
            void *p = realloc(block, need);
            if (!p) {
                rc = coh_fail(err, COH_ENOMEM, "out of memory decoding acklog record seq %"
                              PRIu64 " (%zu bytes)", r->seq, need);
                break;
            }
            block = p;
            block_cap = need;
        }
        gbuf_group g;
        payload_decode(buf + 16, &pi, block, &g);
        rc = fn(ctx, r->seq, pi.actor, &g);
    }
    free(buf);
    free(block);
    return rc;
}

/* ---- compaction ------------------------------------------------------------------------- */

int alog_compact(alog *l, uint64_t keep_after_seq, coh_err *err)
{
    if (!l)
        return coh_fail(err, COH_EINVAL, "alog_compact: log is NULL");
    if (l->broken)
        return coh_fail(err, COH_ESTATE, "acklog '%s': an earlier failed append could not be "
                        "rolled back; close and reopen the log before compacting", l->path);
    int first = 0;
    while (first < l->count && l->idx[first].seq <= keep_after_seq)
        first++;
    uint64_t new_base = keep_after_seq > l->base_seq ? keep_after_seq : l->base_seq;
    if (first == 0 && new_base == l->base_seq)
        return COH_OK; /* nothing to drop */

    int kept = l->count - first;
    alog_rec *nidx = malloc((size_t)(kept > 0 ? kept : 1) * sizeof *nidx);
    if (!nidx)
        return coh_fail(err, COH_ENOMEM, "out of memory compacting acklog '%s'", l->path);
    int fd = open(l->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        free(nidx);
        return coh_fail(err, COH_EIO, "cannot create '%s' to compact the acklog: %s; check "
                        "that the folder is writable", l->tmp_path, strerror(e));
    }
    /* lock the new inode before it gets the log's name, so no other opener slips in */
    int rc = COH_OK;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot lock '%s': %s", l->tmp_path, strerror(e));
        goto fail;
    }
    uint8_t h[ALOG_HEADER_BYTES];
    header_encode(h, new_base);
    uint64_t off = ALOG_HEADER_BYTES;
    if (pwrite_full(fd, h, sizeof h, 0) != 0) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot write '%s': %s; check the disk", l->tmp_path,
                      strerror(e));
        goto fail;
    }
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < kept; i++) {
        const alog_rec *r = &l->idx[first + i];
        rc = record_load(l, r, &buf, &cap, err);
        if (rc)
            break;
        size_t n = (size_t)r->len + ALOG_RECORD_OVERHEAD;
        if (pwrite_full(fd, buf, n, off) != 0) {
            int e = errno;
            rc = coh_fail(err, COH_EIO, "cannot write '%s': %s; check the disk", l->tmp_path,
                          strerror(e));
            break;
        }
        nidx[i] = (alog_rec){.off = off, .seq = r->seq, .len = r->len};
        off += n;
    }
    free(buf);
    if (rc)
        goto fail;
    if (fsync(fd) != 0) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot sync '%s': %s; check the disk", l->tmp_path,
                      strerror(e));
        goto fail;
    }
    if (rename(l->tmp_path, l->path) != 0) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot rename '%s' over '%s': %s", l->tmp_path, l->path,
                      strerror(e));
        goto fail;
    }
    /* the compacted file is the log now */
    close(l->fd);
    l->fd = fd;
    free(l->idx);
    l->idx = nidx;
    l->count = kept;
    l->cap = kept > 0 ? kept : 1;
    l->base_seq = new_base;
    l->size = off;
    return sync_parent_dir(l->path, err);

fail:
    close(fd);
    unlink(l->tmp_path);
    free(nidx);
    return rc;
}

/* ---- queries ---------------------------------------------------------------------------- */

uint64_t alog_last_seq(const alog *l)
{
    if (!l)
        return 0;
    uint64_t s = l->count > 0 ? l->idx[l->count - 1].seq : 0;
    return s > l->base_seq ? s : l->base_seq;
}

int alog_count(const alog *l)
{
    return l ? l->count : 0;
}

uint64_t alog_bytes(const alog *l)
{
    return l ? l->size : 0;
}
