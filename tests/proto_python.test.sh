#!/usr/bin/env bash
# proto_python.test.sh - the public protocol (proto/cohort/v1/*.proto) works from Python alone,
# with the compilers a Debian 12 user has:
#   - protoc (protobuf-compiler) and protoc-c accept every file;
#   - no proto3 `optional` label is used (Debian's grpc-tools 1.14.1 bundles libprotoc 3.5.1,
#     which rejects it; protoc-c 1.4.1 does too);
#   - grpc_tools.protoc generates Python messages and stubs; every module imports; one request
#     message per rpc of every service is built, serialised and parsed back;
#   - a Python Verifier server answers a Python client, and a slow verifier call ends with
#     DEADLINE_EXCEEDED at the caller's deadline.
# Usage: bash tests/proto_python.test.sh [build dir]   (the build dir is not needed)
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

cd "$SRC"
PROTOS=(proto/cohort/v1/*.proto)
[ "${#PROTOS[@]}" -ge 5 ] || { echo "FAIL: expected 5 protos under proto/cohort/v1" >&2; exit 1; }

# 1. no proto3 `optional` (comments excluded)
if sed 's://.*$::' "${PROTOS[@]}" | grep -Eq '^[[:space:]]*optional[[:space:]]'; then
    echo "FAIL: a proto uses 'optional', which protoc 3.5 (grpc-tools 1.14) rejects;" \
         "use a one-field oneof" >&2
    exit 1
fi

# 2. protoc and protoc-c accept the files
echo "protoc: $(protoc --version); protoc-c: $(protoc-c --version 2>&1 | sed -n 1p)"
mkdir -p "$WORK/cpp" "$WORK/c"
protoc -Iproto -I/usr/share/grpc-proto --cpp_out="$WORK/cpp" --descriptor_set_out="$WORK/all.pb" \
    --include_imports "${PROTOS[@]}"
protoc-c -Iproto --c_out="$WORK/c" "${PROTOS[@]}"
for p in "${PROTOS[@]}"; do
    stem=$(basename "$p" .proto)
    if [ ! -s "$WORK/c/cohort/v1/$stem.pb-c.c" ]; then
        echo "FAIL: protoc-c made no $stem.pb-c.c" >&2
        exit 1
    fi
done

# 3. Python stubs with Debian's grpc-tools
mkdir -p "$WORK/py"
"$PY" -m grpc_tools.protoc -Iproto -I/usr/share/grpc-proto \
    --python_out="$WORK/py" --grpc_python_out="$WORK/py" "${PROTOS[@]}"

cd "$WORK/py"
"$PY" - <<'EOF'
import concurrent.futures as cf
import math
import time

import grpc

from cohort.v1 import common_pb2, learner_pb2, monitor_pb2, reward_pb2, verifier_pb2
from cohort.v1 import common_pb2_grpc, learner_pb2_grpc, monitor_pb2_grpc
from cohort.v1 import reward_pb2_grpc, verifier_pb2_grpc


def roundtrip(msg):
    data = msg.SerializeToString()
    back = type(msg)()
    back.ParseFromString(data)
    assert back == msg, (type(msg).__name__, msg, back)
    return back


# One request per rpc, keyed by the full method name; checked against the service descriptors
# so that a new rpc without a case here fails the test.
sp = common_pb2.SamplingParams(temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=16,
                               stop_token_ids=[2])
requests = {
    "cohort.v1.Learner.RegisterActor": learner_pb2.RegisterRequest(name="host/0", threads=2),
    "cohort.v1.Learner.Heartbeat": learner_pb2.HeartbeatRequest(
        actor_id=2**64 - 1, held_version=-1, sampler_tokens_per_s=1234.5, completions=99),
    "cohort.v1.Learner.WatchVersions": learner_pb2.WatchVersionsRequest(actor_id=7),
    "cohort.v1.Learner.DownloadWeights": learner_pb2.DownloadRequest(
        actor_id=7, version=3, offset=5 * 2**30, max_chunk_bytes=1 << 20),
    "cohort.v1.Learner.LeasePrompts": learner_pb2.LeaseRequest(actor_id=7, max_prompts=8),
    "cohort.v1.Learner.SubmitGroup": learner_pb2.SubmitGroupRequest(
        actor_id=7, lease_id=11, temperature=0.7, reward_latency_ms=3.5, sample_ms=40.0,
        completions=[
            learner_pb2.ScoredCompletion(
                completion_tokens=[5, 6, 2], behaviour_logprobs=[-0.5, -1.25, -0.125],
                policy_version=3, reward=1.0, status=common_pb2.ITEM_OK,
                components=[common_pb2.RewardComponent(name="correct", value=1.0, weight=1.0)]),
            learner_pb2.ScoredCompletion(
                completion_tokens=[9], behaviour_logprobs=[-2.0], policy_version=2,
                status=common_pb2.ITEM_TIMED_OUT, detail="verifier:judge timed out"),
        ]),
    "cohort.v1.Learner.ReturnLeases": learner_pb2.ReturnLeasesRequest(
        actor_id=7, lease_ids=[11, 12]),
    "cohort.v1.Monitor.GetStatus": monitor_pb2.GetStatusRequest(),
    "cohort.v1.Monitor.WatchMetrics": monitor_pb2.WatchMetricsRequest(from_step=-10),
    "cohort.v1.Monitor.ListWorkers": monitor_pb2.ListWorkersRequest(),
    "cohort.v1.Monitor.Pause": monitor_pb2.ControlRequest(reason="inspect"),
    "cohort.v1.Monitor.Resume": monitor_pb2.ControlRequest(reason="done"),
    "cohort.v1.Monitor.Checkpoint": monitor_pb2.CheckpointRequest(),
    "cohort.v1.Monitor.SetHyperparameters": monitor_pb2.SetRequest(
        settings=[monitor_pb2.Setting(key="lr", value=5e-4)], reason="lower"),
    "cohort.v1.Reward.Score": reward_pb2.ScoreRequest(
        timeout_ms=5000,
        items=[reward_pb2.RewardItem(item_id="11/0", task="countdown", prompt="3 7 25 -> 175",
                                     completion="25*7", metadata_json='{"target": 175}',
                                     completion_num_tokens=4)]),
    "cohort.v1.Reward.Status": reward_pb2.RewardStatusRequest(),
    "cohort.v1.Verifier.Verify": verifier_pb2.VerifyRequest(
        task="addition", prompt="2+2=", completion="4", answer="4", metadata_json="{}"),
    "cohort.v1.Verifier.VerifyBatch": verifier_pb2.VerifyBatchRequest(
        requests=[verifier_pb2.VerifyRequest(task="addition", completion="4", answer="4")]),
}

classes = {}
for mod in (common_pb2, learner_pb2, monitor_pb2, reward_pb2, verifier_pb2):
    for name in mod.DESCRIPTOR.message_types_by_name:
        cls = getattr(mod, name)
        classes[cls.DESCRIPTOR.full_name] = cls

seen = set()
for mod in (learner_pb2, monitor_pb2, reward_pb2, verifier_pb2):
    for svc in mod.DESCRIPTOR.services_by_name.values():
        for m in svc.methods:
            key = svc.full_name + "." + m.name
            seen.add(key)
            assert key in requests, "no test request for " + key
            req = requests[key]
            assert req.DESCRIPTOR.full_name == m.input_type.full_name, key
            roundtrip(req)
            reply_cls = classes[m.output_type.full_name]
            roundtrip(reply_cls())
assert seen == set(requests), set(requests) - seen

# stubs and servicer hooks exist for every service
for mod, name in ((learner_pb2_grpc, "Learner"), (monitor_pb2_grpc, "Monitor"),
                  (reward_pb2_grpc, "Reward"), (verifier_pb2_grpc, "Verifier")):
    for attr in (name + "Stub", name + "Servicer", "add_%sServicer_to_server" % name):
        assert hasattr(mod, attr), mod.__name__ + "." + attr

# presence of eval_accuracy (one-field oneof instead of proto3 `optional`)
m = common_pb2.StepMetrics(step=5, version=5, phase="rl", grad_norm=float("nan"),
                           groups_dropped_by_reason={"stale": 2, "zero_signal": 1})
assert not m.HasField("eval_accuracy")
back = common_pb2.StepMetrics.FromString(m.SerializeToString())
assert not back.HasField("eval_accuracy") and math.isnan(back.grad_norm)
assert dict(back.groups_dropped_by_reason) == {"stale": 2, "zero_signal": 1}
m.eval_accuracy = 0.0
back = common_pb2.StepMetrics.FromString(m.SerializeToString())
assert back.HasField("eval_accuracy") and back.eval_accuracy == 0.0

# metrics-file field names of DESIGN.md are StepMetrics fields
names = set(common_pb2.StepMetrics.DESCRIPTOR.fields_by_name)
for f in ("step version phase reward_mean reward_std eval_accuracy kl clip_frac entropy "
          "grad_norm lr learner_tokens_per_s sampler_tokens_per_s staleness_mean "
          "groups_used groups_dropped time_s").split():
    assert f in names, "StepMetrics lacks " + f

# reply messages round-trip too (a sample of the bigger ones)
roundtrip(learner_pb2.WeightChunk(
    version=3, offset=0, data=bytes(range(256)) * 4096, chunk_crc32=1, total_bytes=2**40,
    total_crc32=2**32 - 1,
    manifest=learner_pb2.WeightManifest(format="safetensors", config_json="{}")))
m.grad_norm = 2.5  # NaN != NaN: compare a finite record
roundtrip(monitor_pb2.Status(step=5, settings=common_pb2.AlgorithmSettings(
    estimator="grpo", sampling=sp), last=m))
roundtrip(reward_pb2.ScoreReply(results=[reward_pb2.ItemResult(
    item_id="a", status=common_pb2.ITEM_FAILED, detail="bad json", latency_ms=0.5)]))

# a Python Verifier server and client, as a user would write them
class Judge(verifier_pb2_grpc.VerifierServicer):
    def Verify(self, req, ctx):
        if req.task == "slow":
            while ctx.is_active():
                time.sleep(0.01)
            return verifier_pb2.VerifyReply()
        if req.task != "addition":
            ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown task " + req.task)
        ok = req.completion.strip() == req.answer
        return verifier_pb2.VerifyReply(score=1.0 if ok else 0.0, passed=ok, details="checked")

server = grpc.server(cf.ThreadPoolExecutor(max_workers=4))
verifier_pb2_grpc.add_VerifierServicer_to_server(Judge(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
try:
    with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
        stub = verifier_pb2_grpc.VerifierStub(ch)
        r = stub.Verify(requests["cohort.v1.Verifier.Verify"], timeout=5)
        assert r.passed and r.score == 1.0 and r.details == "checked", r
        try:
            stub.VerifyBatch(requests["cohort.v1.Verifier.VerifyBatch"], timeout=5)
            raise AssertionError("VerifyBatch should be UNIMPLEMENTED")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
        try:
            stub.Verify(verifier_pb2.VerifyRequest(task="poetry"), timeout=5)
            raise AssertionError("unknown task should be NOT_FOUND")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
        t0 = time.monotonic()
        try:
            stub.Verify(verifier_pb2.VerifyRequest(task="slow"), timeout=0.3)
            raise AssertionError("slow verifier should time out")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
        assert time.monotonic() - t0 < 3.0
finally:
    server.stop(grace=None)

print("proto_python: %d rpcs checked, all modules import, verifier server ok" % len(seen))
EOF
echo "proto_python.test.sh: OK"
