/* safetensors.h - read and write the safetensors format (Hugging Face).
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string", ...}}
 * then the data section. Reading accepts F32, F16 and BF16 and converts to float; writing
 * is F32 only. Cohort adds "__metadata__": {"format": "pt", "cohort_crc32": "<hex>"} with
 * the CRC-32 (zlib) of the data section; a file that carries it is verified on open, so a
 * flipped byte is refused, while files from elsewhere (without it) still load.
 * Every offset, shape and size is checked against the file before any data is used: a
 * truncated or malformed file is refused with a message naming the problem.
 */
#ifndef COHORT_SAFETENSORS_H
#define COHORT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum { ST_F32, ST_F16, ST_BF16 } st_dtype;

#define ST_MAX_DIMS 4

typedef struct st_tensor_info {
    const char *name;    /* owned by the st_file */
    st_dtype dtype;
    int ndim;
    long long shape[ST_MAX_DIMS];
    size_t numel;
} st_tensor_info;

typedef struct st_file st_file; /* opaque: the whole file in memory plus its parsed header */

int st_open(const char *path, st_file **out, coh_err *err);
/* The same checks on bytes already in memory (a weight download); data is copied, so the
 * caller keeps ownership. label names the source in messages (NULL: "in-memory"). */
int st_open_buffer(const void *data, size_t len, const char *label, st_file **out,
                   coh_err *err);
void st_close(st_file *f);
int st_count(const st_file *f);
/* Info of tensor i in header order; NULL if out of range. */
const st_tensor_info *st_info(const st_file *f, int i);
/* Info by name; NULL if absent. */
const st_tensor_info *st_find(const st_file *f, const char *name);
/* Metadata value for key, NULL if absent. */
const char *st_metadata(const st_file *f, const char *key);
/* Convert tensor `name` to float into dst, which holds exactly n floats. Fails with
 * COH_ENOTFOUND (no such tensor) or COH_ESHAPE (n differs from its element count). */
int st_read_f32(const st_file *f, const char *name, float *dst, size_t n, coh_err *err);

/* IEEE half (F16) and bfloat16 bit patterns to float; exact (every value is representable),
 * including F16 subnormals, infinities and NaNs. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t h);

/* One tensor to write. */
typedef struct st_entry {
    const char *name;
    int ndim;
    long long shape[ST_MAX_DIMS];
    const float *data;
} st_entry;

/* Write entries as F32 (atomically, with the cohort_crc32 metadata). extra_meta is an
 * optional NULL-terminated list of key, value, key, value, ... strings. */
int st_write(const char *path, const st_entry *entries, int n, const char *const *extra_meta,
             coh_err *err);

/* The same bytes st_write would write, in a malloc'd buffer (*out, *out_len) owned by the
 * caller. */
int st_write_buffer(const st_entry *entries, int n, const char *const *extra_meta, void **out,
                    size_t *out_len, coh_err *err);

#endif
