/* fuzz_wire.c - libFuzzer harness: request bytes as the services decode them (rpc_unpack:
 * the wire check, then protobuf-c) for the learner's, monitor's, reward and verifier
 * messages; the first byte picks the message type. A message that decodes must re-encode
 * and decode again (issue 12: an unknown field numbered 0 decoded, then could not be sent
 * back), and its strings must hold no NUL byte before their end. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cohort/v1/learner.pb-c.h"
#include "cohort/v1/monitor.pb-c.h"
#include "cohort/v1/reward.pb-c.h"
#include "cohort/v1/verifier.pb-c.h"
#include "rpc.h"

static const ProtobufCMessageDescriptor *const k_types[] = {
    &cohort__v1__score_request__descriptor,        &cohort__v1__submit_group_request__descriptor,
    &cohort__v1__set_request__descriptor,          &cohort__v1__register_request__descriptor,
    &cohort__v1__lease_request__descriptor,        &cohort__v1__download_request__descriptor,
    &cohort__v1__verify_request__descriptor,       &cohort__v1__verify_batch_request__descriptor,
    &cohort__v1__watch_metrics_request__descriptor, &cohort__v1__heartbeat_request__descriptor,
};
#define N_TYPES (sizeof k_types / sizeof *k_types)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = k_types[data[0] % N_TYPES];
    ProtobufCMessage *m = rpc_unpack(d, data + 1, size - 1);
    if (!m)
        return 0;
    uint8_t *bytes = NULL;
    size_t len = 0;
    coh_err err;
    if (rpc_pack(m, 0, &bytes, &len, &err) != COH_OK)
        abort();
    if (rpc_wire_check(d, bytes, len, NULL, 0) != COH_OK)
        abort(); /* we would send what we refuse */
    ProtobufCMessage *again = rpc_unpack(d, bytes, len);
    if (!again)
        abort();
    rpc_msg_free(again);
    free(bytes);
    rpc_msg_free(m);
    return 0;
}
