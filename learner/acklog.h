/* acklog.h - an append-only, checksummed, crash-safe log of the groups the learner accepted.
 *
 * Why: the learner acknowledges a SubmitGroup only after the group is appended here and the
 * append is durable (fdatasync). The checkpoint records the sequence number of the last group
 * whose training it contains; after a restart the learner replays the records after that
 * number into its buffer, so every acknowledged group is trained exactly once, SIGKILL or not.
 * At each checkpoint the learner compacts the log (alog_compact), so it stays small.
 *
 * File format (all integers little-endian, floats as IEEE-754 bit patterns):
 *
 *   header, 24 bytes:
 *     [0..8)   magic "COHALOG1"
 *     [8..12)  u32 format version (ALOG_FORMAT_VERSION)
 *     [12..20) u64 base_seq: every record's seq is > base_seq (raised by alog_compact)
 *     [20..24) u32 CRC-32 (zlib crc32) of bytes [0..20)
 *   records, back to back, seq strictly increasing:
 *     u32 record magic ALOG_RECORD_MAGIC (the bytes "AREC")
 *     u32 payload length L (<= ALOG_MAX_PAYLOAD)
 *     u64 seq
 *     L bytes payload:
 *       u64 actor id, u64 prompt index, u64 lease id,
 *       u32 n_prompt, u32 n_completions,
 *       i32 prompt tokens [n_prompt],
 *       per completion: u32 n_tokens, u64 version, f64 reward,
 *                       i32 tokens [n_tokens], f32 behaviour log-probs [n_tokens]
 *     u32 CRC-32 of (length, seq, payload), i.e. the record's bytes [4 .. 16 + L)
 *
 *   A record is 20 + L bytes. Every count is checked against the bytes that remain before
 *   anything is allocated, and the payload must be consumed exactly.
 *
 * Recovery (alog_open): records are scanned from the start. A record that is incomplete or
 * fails its checks (magic, length bound, CRC) with NO valid record anywhere after it is a torn
 * tail - what a crash in the middle of an append leaves - and is cut off (ftruncate + fsync)
 * and reported. A bad record FOLLOWED by a valid one is corruption of acknowledged data: the
 * open is refused (COH_EFORMAT) naming both byte offsets. A record whose CRC is right but
 * whose content is not (counts inconsistent, seq not increasing) cannot come from a torn
 * write and is refused wherever it is.
 *
 * Sequence numbers: seqs start at 1 (0 means "none", as in "replay everything after 0").
 * alog_last_seq() is the greatest seq ever in the log, including records compacted away
 * (kept in the header's base_seq), so numbering never goes back, even across restarts.
 *
 * Memory and I/O: open reads the whole file once to check it and keeps an in-memory index
 * (offset, length, seq per record); replay and compact re-read each record from the file with
 * pread and check its CRC again. The file is locked (flock, exclusive) while open, so a second
 * learner on the same log is refused instead of interleaving appends.
 *
 * Crash safety of compaction: the kept records go to "<path>.compact" (fsync'ed), which is
 * renamed over path; then the folder is fsync'ed. A crash before the rename leaves the old log
 * (and a stale "<path>.compact" that the next open removes); after it, the new one.
 *
 * Not thread-safe: the learner serialises calls.
 */
#ifndef COHORT_ACKLOG_H
#define COHORT_ACKLOG_H

#include <stdint.h>

#include "err.h"
#include "groupbuf.h"

#define ALOG_FORMAT_VERSION 1u
#define ALOG_HEADER_BYTES 24u
#define ALOG_RECORD_MAGIC 0x43455241u /* "AREC" little-endian */
#define ALOG_RECORD_OVERHEAD 20u     /* magic, length, seq, CRC */
#define ALOG_MAX_PAYLOAD (256u << 20) /* 256 MiB: a longer length field is corruption */

typedef struct alog alog; /* opaque */

/* What alog_open found (OUT; all zero after a failed open). */
typedef struct alog_open_report {
    int created;          /* 1: the file was missing (or empty) and a fresh log was made */
    int records;          /* valid records in the log */
    uint64_t last_seq;    /* alog_last_seq() after the open */
    uint64_t bytes;       /* file size after the open */
    uint64_t cut_bytes;   /* bytes of a torn or corrupt tail cut off; 0 when none */
    uint64_t cut_offset;  /* byte offset where the tail was cut (the new size), if cut_bytes */
    char cut_reason[160]; /* why the tail was cut ("record at byte 1234: CRC mismatch ..."), or "" */
} alog_open_report;

/* ---- lifecycle ---- */

/* Open the log at path, creating it (atomically, header only) if missing; an existing empty
 * file is initialised too. Scans every record, cuts a torn tail (see Recovery above), locks
 * the file, and removes a stale "<path>.compact". rep may be NULL.
 * Returns COH_OK, or:
 *   COH_EFORMAT      not an acklog (bad magic, header CRC), a short header, a bad record
 *                    followed by valid ones, or a CRC-valid record with invalid content;
 *                    the message names the byte offset and what to do;
 *   COH_EUNSUPPORTED another format version;
 *   COH_ESTATE       another process (or handle) has the log open;
 *   COH_EIO          open/read/truncate/sync failed (message has the OS error);
 *   COH_ENOMEM, COH_EINVAL (NULL path or out).
 * *out is NULL on failure, and the file is left as it was (nothing is cut on a refusal). */
int alog_open(const char *path, alog **out /* OUT */, alog_open_report *rep /* OUT, may be NULL */,
              coh_err *err);

/* Close the file (the lock goes with it) and free the handle. NULL is fine. */
void alog_close(alog *l);

/* ---- mutators ---- */

/* Append one record and fdatasync it before returning: when this returns COH_OK the group is
 * durable and may be acknowledged. The caller's memory is not kept.
 * seq must be > alog_last_seq(l) (and so >= 1), else COH_EINVAL. g must be well formed
 * (counts >= 0, arrays present when counts > 0, n_logp == n_tokens), else COH_EINVAL; a
 * record longer than ALOG_MAX_PAYLOAD is COH_ERANGE. Nothing else of g is judged here (the
 * learner validates with gbuf_validate first).
 * On a write or sync failure (COH_EIO) the file is truncated back to its previous end, so the
 * log stays valid and the record is not in it; if even that fails, the handle refuses every
 * further append and compaction with COH_ESTATE (close and reopen: open cuts the partial
 * record). */
int alog_append(alog *l, uint64_t seq, uint64_t actor, const gbuf_group *g, coh_err *err);

/* Drop every record with seq <= keep_after_seq and raise base_seq to keep_after_seq (when
 * larger), so that later appends need seq > keep_after_seq. Rewrites the kept records to
 * "<path>.compact", fsyncs it, renames it over path and fsyncs the folder (crash-safe at every
 * point, see above). Each kept record's CRC is checked again on the way (COH_EFORMAT if the
 * file changed under us). On a failure before the rename the log and the handle are unchanged;
 * after the rename (a failed folder sync, COH_EIO) the handle already reflects the new file. */
int alog_compact(alog *l, uint64_t keep_after_seq, coh_err *err);

/* ---- queries ---- */

/* Call fn(ctx, seq, actor, group) for every record with seq > after_seq, in seq order. The
 * group and its arrays are valid during the call only (n_logp == n_tokens in every
 * completion). A non-zero return from fn stops the replay and is returned as is (fn may put a
 * message in its own context). Each record is re-read from the file and its CRC checked
 * (COH_EFORMAT if the file changed since the open; COH_EIO, COH_ENOMEM). fn must not append
 * to or compact this log. */
int alog_replay(const alog *l, uint64_t after_seq,
                int (*fn)(void *ctx, uint64_t seq, uint64_t actor, const gbuf_group *g),
                void *ctx, coh_err *err);

/* The greatest seq the log ever held (records or base_seq); 0 for a fresh log. */
uint64_t alog_last_seq(const alog *l);
/* Records in the log. */
int alog_count(const alog *l);
/* Size of the file in bytes (header included). */
uint64_t alog_bytes(const alog *l);

#endif
