/* actlog.c - the actor's log lines (see actlog.h). */
#include "actlog.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static const char *actlog_name = "actor";
static int actlog_is_quiet;
static pthread_mutex_t actlog_mu = PTHREAD_MUTEX_INITIALIZER;

void actlog_setup(const char *name, int quiet)
{
    actlog_name = name && *name ? name : "actor";
    actlog_is_quiet = quiet != 0;
}

int actlog_quiet(void) { return actlog_is_quiet; }

void actlog_printf(int always, const char *fmt, ...)
{
    if (actlog_is_quiet && !always)
        return;
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&actlog_mu);
    fprintf(stderr, "cohort-actor[%s]: ", actlog_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&actlog_mu);
    va_end(ap);
}
