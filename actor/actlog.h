/* actlog.h - the actor's log lines: "cohort-actor[NAME]: text" on stderr.
 *
 * Threads: any thread may log; lines never interleave (one mutex). actlog_setup is called once
 * by main before any thread starts.
 * ALOG is progress / information and is silenced by --quiet; AWARN is a problem and is always
 * printed.
 */
#ifndef COHORT_ACTOR_ALOG_H
#define COHORT_ACTOR_ALOG_H

/* name is borrowed (must outlive every log call); quiet != 0 silences ALOG. */
void actlog_setup(const char *name, int quiet);
/* 1 when ALOG lines are silenced. */
int actlog_quiet(void);
/* always != 0: print even when quiet. */
void actlog_printf(int always, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ALOG(...) actlog_printf(0, __VA_ARGS__)
#define AWARN(...) actlog_printf(1, __VA_ARGS__)

#endif
