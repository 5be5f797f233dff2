/* fsutil.h - whole-file reads, atomic writes, directory creation. */
#ifndef COHORT_FSUTIL_H
#define COHORT_FSUTIL_H

#include <stddef.h>

#include "err.h"

/* Read a whole regular file into a malloc'd buffer (NUL-terminated for convenience; *len
 * excludes the NUL). A directory, FIFO, device or socket is refused at once (COH_EIO naming
 * what it is), never waited on. *buf is NULL on failure. */
int fs_read_all(const char *path, char **buf, size_t *len, coh_err *err);
/* Write atomically: path.tmp.<pid>, fsync, rename over path, fsync the directory.
 * A crash leaves either the old file or the new one, never a torn one. */
int fs_write_atomic(const char *path, const void *data, size_t len, coh_err *err);
/* Like fs_write_atomic but gathers several pieces into one file. */
int fs_write_atomic_iov(const char *path, const void *const *parts, const size_t *lens,
                        int nparts, coh_err *err);
/* mkdir -p. */
int fs_mkdirs(const char *path, coh_err *err);
/* 1 if path exists (any type), 0 otherwise. */
int fs_exists(const char *path);

#endif
