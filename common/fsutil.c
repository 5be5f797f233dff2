/* fsutil.c - whole-file reads, crash-safe atomic writes, mkdir -p (see fsutil.h).
 *
 * Atomic write protocol: write everything to "path.tmp.<pid>" in the same directory, fsync
 * it, rename it over path, then fsync the directory so the rename itself is durable. rename(2)
 * within one file system is atomic, so readers see either the old or the new file. On any
 * failure the temporary file is removed and path is left untouched.
 */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* ---- private helpers ---------------------------------------------------------------- */

/* write(2) until all of len is written, retrying on EINTR and short writes. */
static int write_full(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        size_t chunk = len > (size_t)1 << 30 ? (size_t)1 << 30 : len;
        ssize_t w = write(fd, p, chunk);
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
    }
    return 0;
}

/* fsync the directory that contains path (best effort on file systems that refuse it). */
static int fsync_parent_dir(const char *path, coh_err *err)
{
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    if (!dir)
        return coh_fail(err, COH_ENOMEM, "out of memory syncing the directory of '%s'", path);
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0'; /* "/file" -> "/" */
    else
        *slash = '\0';

    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        int rc = coh_fail(err, COH_EIO, "cannot open directory '%s' to sync it: %s", dir,
                          strerror(e));
        free(dir);
        return rc;
    }
    int rc = COH_OK;
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) {
        int e = errno;
        rc = coh_fail(err, COH_EIO, "cannot sync directory '%s': %s", dir, strerror(e));
    }
    close(fd);
    free(dir);
    return rc;
}

/* ---- public API --------------------------------------------------------------------- */

int fs_read_all(const char *path, char **buf, size_t *len, coh_err *err)
{
    if (buf)
        *buf = NULL;
    if (len)
        *len = 0;
    if (!path || !buf || !len)
        return coh_fail(err, COH_EINVAL, "fs_read_all: NULL argument");

    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return coh_fail(err, e == ENOENT ? COH_ENOTFOUND : COH_EIO, "cannot open '%s': %s",
                        path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return coh_fail(err, COH_EIO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return coh_fail(err, COH_EIO, "cannot read '%s': it is a directory", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return coh_fail(err, COH_EIO,
                        "cannot read '%s': it is not a regular file (%s); give a file, not a "
                        "pipe or device",
                        path,
                        S_ISFIFO(st.st_mode)   ? "a FIFO"
                        : S_ISCHR(st.st_mode)  ? "a character device"
                        : S_ISBLK(st.st_mode)  ? "a block device"
                        : S_ISSOCK(st.st_mode) ? "a socket"
                                               : "not a file");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);

    /* Start from the reported size but read until EOF, so files whose size changes or is
     * not reported (/proc) still read correctly. */
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
    size_t n = 0;
    char *p = malloc(cap);
    if (!p) {
        close(fd);
        return coh_fail(err, COH_ENOMEM, "out of memory reading '%s' (%zu bytes)", path, cap);
    }
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > SIZE_MAX / 2) {
                free(p);
                close(fd);
                return coh_fail(err, COH_ENOMEM, "'%s' is too large to read", path);
            }
            char *q = realloc(p, cap * 2);
            if (!q) {
                free(p);
                close(fd);
                return coh_fail(err, COH_ENOMEM, "out of memory reading '%s'", path);
            }
            p = q;
            cap *= 2;
        }
        size_t want = cap - 1 - n;
        if (want > (size_t)1 << 30)
            want = (size_t)1 << 30;
        ssize_t r = read(fd, p + n, want);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free(p);
            close(fd);
            return coh_fail(err, COH_EIO, "cannot read '%s': %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    p[n] = '\0';
    *buf = p;
    *len = n;
    return COH_OK;
}

int fs_write_atomic(const char *path, const void *data, size_t len, coh_err *err)
{
    const void *parts[1] = {data};
    size_t lens[1] = {len};
    return fs_write_atomic_iov(path, parts, lens, 1, err);
}

int fs_write_atomic_iov(const char *path, const void *const *parts, const size_t *lens,
                        int nparts, coh_err *err)
{
    if (!path || !*path || nparts < 0 || (nparts > 0 && (!parts || !lens)))
        return coh_fail(err, COH_EINVAL, "fs_write_atomic: bad arguments");
    for (int i = 0; i < nparts; i++)
        if (lens[i] > 0 && !parts[i])
            return coh_fail(err, COH_EINVAL, "fs_write_atomic: part %d of '%s' is NULL", i,
                            path);

    size_t plen = strlen(path);
    size_t tlen = plen + 32;
    char *tmp = malloc(tlen);
    if (!tmp)
        return coh_fail(err, COH_ENOMEM, "out of memory writing '%s'", path);
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        int rc = coh_fail(err, COH_EIO, "cannot create '%s' (to write '%s'): %s", tmp, path,
                          strerror(e));
        free(tmp);
        return rc;
    }
    for (int i = 0; i < nparts; i++) {
        if (lens[i] == 0)
            continue;
        if (write_full(fd, parts[i], lens[i]) != 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            int rc = coh_fail(err, COH_EIO, "cannot write '%s': %s", tmp, strerror(e));
            free(tmp);
            return rc;
        }
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        int rc = coh_fail(err, COH_EIO, "cannot sync '%s': %s", tmp, strerror(e));
        free(tmp);
        return rc;
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        int rc = coh_fail(err, COH_EIO, "cannot close '%s': %s", tmp, strerror(e));
        free(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        int rc = coh_fail(err, COH_EIO, "cannot rename '%s' to '%s': %s", tmp, path,
                          strerror(e));
        free(tmp);
        return rc;
    }
    free(tmp);
    return fsync_parent_dir(path, err);
}

int fs_mkdirs(const char *path, coh_err *err)
{
    if (!path || !*path)
        return coh_fail(err, COH_EINVAL, "fs_mkdirs: empty path");
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (!p)
        return coh_fail(err, COH_ENOMEM, "out of memory creating '%s'", path);
    memcpy(p, path, n + 1);

    /* Create each prefix ending before a '/', then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (i < n && p[i] != '/')
            continue;
        char saved = p[i];
        p[i] = '\0';
        if (p[i - 1] != '/' && mkdir(p, 0755) != 0) {
            int e = errno;
            struct stat st;
            if (e != EEXIST || stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
                int rc = e == EEXIST
                             ? coh_fail(err, COH_EIO,
                                        "cannot create directory '%s': '%s' exists and is not "
                                        "a directory",
                                        path, p)
                             : coh_fail(err, COH_EIO, "cannot create directory '%s': %s", p,
                                        strerror(e));
                free(p);
                return rc;
            }
        }
        p[i] = saved;
    }
    free(p);
    return COH_OK;
}

int fs_exists(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0;
}
