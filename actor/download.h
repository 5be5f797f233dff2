/* download.h - the actor's weights side: watching the learner's policy versions
 * (WatchVersions) and downloading them (DownloadWeights) into a verified policy.
 *
 * A download assembles the version in a wt_recv (common/weights.h): chunks are accepted
 * strictly in order, each chunk's CRC-32 is checked, a broken or refused stream resumes at
 * wt_recv_offset (the bytes received and verified so far), and only a complete blob whose
 * whole CRC-32 matches becomes a policy (wt_recv_finish). The actor never samples with a
 * partial version.
 *
 * Threads: download_watch_run and download_run are thread bodies (one thread each); both
 * return when the session stops. download_version blocks the calling thread. All three
 * register again (session_register) when the learner says the actor is unknown, and open
 * their streams through the session, so session_stop cancels them at once.
 */
#ifndef COHORT_ACTOR_DOWNLOAD_H
#define COHORT_ACTOR_DOWNLOAD_H

#include "policy.h"
#include "session.h"
#include "vtrack.h"

/* Outcome of download_version. */
typedef enum download_result {
    DOWNLOAD_OK = 0,      /* *out holds the verified policy */
    DOWNLOAD_SKIP = 1,    /* give this version up (not downloadable any more, never existed,
                           * corrupt beyond resuming, or 20 failed attempts in a row): wait
                           * for a newer notice */
    DOWNLOAD_STOPPED = -1 /* the session is stopping */
} download_result;

/* Download version nt (as a VersionNotice announced it) into a verified policy. Resumes
 * broken streams at the verified offset with back-off (200 ms doubling to 5 s). The tokenizer
 * comes from the notice's manifest, else from the first chunk's, else the default one; the
 * config.json likewise. FAILED_PRECONDITION / NOT_FOUND (not an unknown actor) give
 * DOWNLOAD_SKIP; so does a chunk naming another version, size or CRC than the notice. */
download_result download_version(session *s, const vtrack_notice *nt, policy **out);

/* Thread body: wait for a notice worth downloading (vtrack_wait_download), download it,
 * publish the verified policy (vtrack_publish); a skipped notice is not tried again until a
 * newer one (or a re-watch) arrives. */
void download_run(session *s, vtrack *vt);

/* Thread body: WatchVersions, recording every VersionNotice in vt (vtrack_notice_seen);
 * re-watches at once when a stream that delivered reaches its deadline or ends OK, registers
 * again for an unknown actor, and reconnects with back-off otherwise. */
void download_watch_run(session *s, vtrack *vt);

#endif
