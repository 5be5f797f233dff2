/* tsan.h - ThreadSanitizer annotations for hand-offs that happen inside uninstrumented code.
 *
 * Debian's gRPC (libgrpc, libgpr, absl) and libuv are not built with -fsanitize=thread, so
 * the synchronisation inside them (absl::Mutex, futexes, plain atomics) is invisible to
 * ThreadSanitizer: a tag given to grpc_call_start_batch on one thread and returned by
 * grpc_completion_queue_next on another looks unsynchronised, and TSan would report every
 * later use of the tag's owner as a race. These macros state the happens-before edge the
 * library provides:
 *
 *   COH_TSAN_RELEASE(addr)  on the sending thread, just before handing addr over
 *                           (grpc_call_start_batch, grpc_server_request_*_call,
 *                           uv_async_send, uv_queue_work, ...);
 *   COH_TSAN_ACQUIRE(addr)  on the receiving thread, right where addr comes back
 *                           (grpc_completion_queue_next / _pluck, the async or work callback).
 *
 * Everything the sender wrote before the release is then ordered before everything the
 * receiver does after the acquire. Use the same address on both sides (the tag, the uv
 * handle or request). In builds without ThreadSanitizer the macros evaluate their argument
 * and do nothing else.
 *
 * Use annotations for hand-offs through uninstrumented libraries only; a race between two
 * pieces of Cohort's own code is a bug to fix, never to annotate away.
 */
#ifndef COHORT_TSAN_H
#define COHORT_TSAN_H

#if defined(__SANITIZE_THREAD__)
#define COH_TSAN_ENABLED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define COH_TSAN_ENABLED 1
#endif
#endif

#ifdef COH_TSAN_ENABLED
#include <sanitizer/tsan_interface.h>
#define COH_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
#define COH_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#else
#define COH_TSAN_RELEASE(addr) ((void)(addr))
#define COH_TSAN_ACQUIRE(addr) ((void)(addr))
#endif

#endif
