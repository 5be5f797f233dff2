/* rpc_internal.h - helpers shared by common/rpc_*.c only (prefix rpc__). Not a public API. */
#ifndef COHORT_RPC_INTERNAL_H
#define COHORT_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>

#include "rpc.h"

/* rpc_server_add_method with a "public" flag: public methods skip the bearer-token check
 * (the Health service). */
int rpc__server_add_method_ex(rpc_server *s, const char *full_name, rpc_kind kind,
                              rpc_handler_cb handler, void *method_data, int is_public,
                              coh_err *err);
/* One extension slot per server (the health state): freed with free_fn in
 * rpc_server_destroy, after every call is gone. */
void rpc__server_set_ext(rpc_server *s, void *ext, void (*free_fn)(void *));
void *rpc__server_ext(const rpc_server *s);

/* A byte buffer holding a copy of bytes / the encoding of msg (never NULL: gRPC's
 * allocator aborts on out-of-memory). Destroy with grpc_byte_buffer_destroy. */
grpc_byte_buffer *rpc__buffer_from_bytes(const uint8_t *bytes, size_t len);
grpc_byte_buffer *rpc__buffer_from_msg(const ProtobufCMessage *msg);
/* The contents of b as one contiguous slice (decompressed if needed); 0 or COH_EFORMAT.
 * The caller unrefs *out. */
int rpc__buffer_read(grpc_byte_buffer *b, grpc_slice *out);
/* Copy a status details slice into st->message (truncating), set st->code, and copy the
 * "cohort-reason" entry of trailers (may be NULL) into st->reason ("" if none). */
void rpc__status_set(rpc_status *st, grpc_status_code code, grpc_slice details,
                     const grpc_metadata_array *trailers);
/* printf into st (a local status: st->reason becomes ""). */
void rpc__status_setf(rpc_status *st, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
