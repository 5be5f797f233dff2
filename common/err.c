/* err.c - error names and message formatting (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *coh_err_str(int code)
{
    switch (code) {
#define COH_ERR_STR_(name, val, text) case val: return text;
        COH_ERR_MAP(COH_ERR_STR_)
#undef COH_ERR_STR_
    }
    return "unknown error";
}

const char *coh_err_name(int code)
{
    switch (code) {
#define COH_ERR_NAME_(name, val, text) case val: return #name;
        COH_ERR_MAP(COH_ERR_NAME_)
#undef COH_ERR_NAME_
    }
    return "EUNKNOWN";
}

int coh_fail(coh_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int coh_wrap(coh_err *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    char prefix[COH_ERR_MSG_LEN];
    char old[COH_ERR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    /* truncation of over-long messages is acceptable; build the text piecewise */
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    err->msg[n++] = ':';
    err->msg[n++] = ' ';
    size_t rest = strlen(old);
    if (rest > sizeof err->msg - 1 - n)
        rest = sizeof err->msg - 1 - n;
    memcpy(err->msg + n, old, rest);
    err->msg[n + rest] = '\0';
    if (err->code == COH_OK)
        err->code = code;
    return err->code;
}

void coh_err_clear(coh_err *err)
{
    if (err) {
        err->code = COH_OK;
        err->msg[0] = '\0';
    }
}
