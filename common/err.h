/* err.h - one error enum for all of Cohort, plus a detail buffer.
 *
 * Every fallible function returns 0 (COH_OK) or a negative COH_E* code and, when given a
 * non-NULL coh_err*, writes a message that says what was wrong and what to do about it.
 * The table below is an X-macro: it generates the enum and coh_err_name().
 */
#ifndef COHORT_ERR_H
#define COHORT_ERR_H

#include <stddef.h>

#define COH_ERR_MAP(XX)                                                      \
    XX(OK, 0, "ok")                                                          \
    XX(EINVAL, -1, "invalid argument")                                       \
    XX(ENOMEM, -2, "out of memory")                                          \
    XX(EIO, -3, "input/output error")                                        \
    XX(EFORMAT, -4, "malformed or corrupt data")                             \
    XX(ESHAPE, -5, "wrong shape")                                            \
    XX(ENOTFOUND, -6, "not found")                                           \
    XX(ERANGE, -7, "value out of range")                                     \
    XX(ENONFINITE, -8, "non-finite number")                                  \
    XX(EUNSUPPORTED, -9, "unsupported")                                      \
    XX(ESTATE, -10, "wrong state")                                           \
    XX(EFULL, -11, "buffer full")

typedef enum {
#define COH_ERR_ENUM_(name, val, text) COH_##name = val,
    COH_ERR_MAP(COH_ERR_ENUM_)
#undef COH_ERR_ENUM_
} coh_code;

#define COH_ERR_MSG_LEN 512

/* Caller-owned error detail. code mirrors the last return value. */
typedef struct coh_err {
    int code;
    char msg[COH_ERR_MSG_LEN];
} coh_err;

/* Short text of a code ("malformed or corrupt data"); never NULL. */
const char *coh_err_str(int code);
/* Symbolic name of a code ("EFORMAT"); never NULL. */
const char *coh_err_name(int code);

/* Record code and a printf-style message in err (if non-NULL) and return code, so that
 * callers can write `return coh_fail(err, COH_EINVAL, "...", ...);`. */
int coh_fail(coh_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "ctx: old message". Returns err->code (or code if err NULL). */
int coh_wrap(coh_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reset to COH_OK with an empty message. */
void coh_err_clear(coh_err *err);

#endif
