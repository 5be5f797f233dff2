#!/usr/bin/env python3
"""A scripted cohort.v1.Learner for testing cohort-actor without cohort-learner.

Serves the actor-facing rpcs from the proto files alone (grpcio + grpc_tools) and records
what it saw in a JSON Lines event log. Versions are checkpoint folders given on the command
line (their model.safetensors blob is served as the weights); the version advances every
--groups-per-version accepted groups, cycling through the folders.
Fault injection: --corrupt-first-chunk (the first chunk of the first download has a wrong
CRC), --break-after N (the first download stream is cut after N chunks).
"""
import argparse, importlib, json, os, sys, tempfile, threading, time, zlib, random
from concurrent import futures

import grpc
from grpc_tools import protoc

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--ckpt", action="append", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--group-size", type=int, default=4)
ap.add_argument("--max-new-tokens", type=int, default=8)
ap.add_argument("--groups-per-version", type=int, default=2)
ap.add_argument("--chunk", type=int, default=65536)
ap.add_argument("--corrupt-first-chunk", action="store_true")
ap.add_argument("--break-after", type=int, default=0)
ap.add_argument("--start-version", type=int, default=0)
ap.add_argument("--token", default="")
args = ap.parse_args()

out = tempfile.mkdtemp()
assert protoc.main(["protoc", f"-I{args.root}/proto", f"--python_out={out}", f"--grpc_python_out={out}"]
                   + [f"{args.root}/proto/cohort/v1/{f}" for f in ("common.proto", "learner.proto")]) == 0
for r, _, _ in os.walk(out):
    open(os.path.join(r, "__init__.py"), "a").close()
sys.path.insert(0, out)
pb = importlib.import_module("cohort.v1.learner_pb2")
cpb = importlib.import_module("cohort.v1.common_pb2")
rpc = importlib.import_module("cohort.v1.learner_pb2_grpc")

blobs = []
for d in args.ckpt:
    blob = open(os.path.join(d, "model.safetensors"), "rb").read()
    cfg = open(os.path.join(d, "config.json")).read()
    tokp = os.path.join(d, "tokenizer.json")
    tok = open(tokp).read() if os.path.exists(tokp) else ""
    blobs.append((blob, cfg, tok))

mu = threading.Condition()
state = {"version": args.start_version, "actors": {}, "leases": {}, "accepted": 0, "log": open(args.log, "a")}
faults = {"corrupt": args.corrupt_first_chunk, "break": args.break_after}
CHARS = "".join(chr(c) for c in range(32, 127))


def log(ev, **kw):
    kw["ev"] = ev
    kw["t"] = time.time()
    state["log"].write(json.dumps(kw) + "\n")
    state["log"].flush()


def blob_of(v):
    return blobs[v % len(blobs)]


def sampling():
    return cpb.SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens,
                              stop_token_ids=[2])


def check_auth(ctx):
    if not args.token:
        return True
    md = dict(ctx.invocation_metadata())
    if md.get("authorization") != "Bearer " + args.token:
        ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
    return True


def known(ctx, aid):
    if aid not in state["actors"]:
        ctx.abort(grpc.StatusCode.NOT_FOUND, f"unknown actor {aid:016x}")


class Learner(rpc.LearnerServicer):
    def RegisterActor(self, req, ctx):
        check_auth(ctx)
        with mu:
            aid = random.getrandbits(63) | 1
            state["actors"][aid] = {"name": req.name, "hb": time.time()}
            log("register", actor=aid, name=req.name, threads=req.threads)
            return pb.RegisterReply(actor_id=aid, heartbeat_interval_ms=500, lease_ttl_ms=3000,
                                    group_size=args.group_size, sampling=sampling(),
                                    current_version=state["version"], max_staleness=4)

    def Heartbeat(self, req, ctx):
        with mu:
            known(ctx, req.actor_id)
            log("heartbeat", actor=req.actor_id, held=req.held_version, rate=req.sampler_tokens_per_s,
                completions=req.completions)
            return pb.HeartbeatReply(current_version=state["version"], paused=False, sampling=sampling(),
                                     max_staleness=4)

    def WatchVersions(self, req, ctx):
        if req.actor_id:
            with mu:
                known(ctx, req.actor_id)
        sent = -1
        while ctx.is_active():
            with mu:
                while state["version"] == sent and ctx.is_active():
                    mu.wait(0.5)
                v = state["version"]
            if v == sent:
                continue
            blob, cfg, tok = blob_of(v)
            sent = v
            yield pb.VersionNotice(version=v, step=v, total_bytes=len(blob), checksum=zlib.crc32(blob),
                                   format="safetensors",
                                   manifest=pb.WeightManifest(format="safetensors", config_json=cfg,
                                                              tokenizer_json=tok))

    def DownloadWeights(self, req, ctx):
        with mu:
            if req.actor_id:
                known(ctx, req.actor_id)
            cur = state["version"]
        if req.version > cur:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"version {req.version} does not exist")
        if req.version < cur - 1:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"version {req.version} is gone; current {cur}")
        blob, cfg, tok = blob_of(req.version)
        crc = zlib.crc32(blob)
        off = req.offset
        log("download", actor=req.actor_id, version=req.version, offset=off)
        first = True
        n = 0
        while True:
            data = blob[off:off + args.chunk]
            c = pb.WeightChunk(version=req.version, offset=off, data=data, chunk_crc32=zlib.crc32(data),
                               total_bytes=len(blob), total_crc32=crc)
            if first:
                c.manifest.CopyFrom(pb.WeightManifest(format="safetensors", config_json=cfg, tokenizer_json=tok))
                first = False
            if faults["corrupt"] and n == 1:
                faults["corrupt"] = False
                c.chunk_crc32 ^= 1
                log("fault", kind="corrupt", offset=off)
            yield c
            n += 1
            off += len(data)
            if faults["break"] and n == faults["break"] and off < len(blob):
                faults["break"] = 0
                log("fault", kind="break", offset=off)
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "injected break")
            if off >= len(blob):
                return

    def LeasePrompts(self, req, ctx):
        with mu:
            known(ctx, req.actor_id)
            leases = []
            for _ in range(req.max_prompts):
                a, b = random.randrange(10), random.randrange(10)
                prompt = f"{a}+{b}="
                lid = random.getrandbits(63) | 1
                state["leases"][lid] = {"actor": req.actor_id, "state": "out"}
                leases.append(pb.Lease(lease_id=lid, prompt_id=f"addition/{a}/{b}", task="addition", prompt=prompt,
                                       prompt_tokens=[1] + [3 + CHARS.index(ch) for ch in prompt],
                                       answer=str(a + b), metadata_json="{}", expires_in_ms=3000))
            log("lease", actor=req.actor_id, n=len(leases))
            return pb.LeaseReply(leases=leases, retry_after_ms=100)

    def SubmitGroup(self, req, ctx):
        with mu:
            known(ctx, req.actor_id)
            l = state["leases"].get(req.lease_id)
            if not l or l["actor"] != req.actor_id or l["state"] != "out":
                ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown lease")
            bad = None
            if len(req.completions) != args.group_size:
                bad = "completion count"
            for c in req.completions:
                if not (1 <= len(c.completion_tokens) <= args.max_new_tokens):
                    bad = "length"
                if len(c.behaviour_logprobs) != len(c.completion_tokens):
                    bad = "logprobs length"
                if any(not (x <= 0.0) for x in c.behaviour_logprobs):
                    bad = "positive logprob"
                if c.policy_version > state["version"] or c.policy_version < 0:
                    bad = "version"
            if bad:
                log("submit_invalid", why=bad)
                ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, bad)
            l["state"] = "done"
            state["accepted"] += 1
            log("submit", actor=req.actor_id, lease=req.lease_id, temperature=req.temperature,
                versions=[c.policy_version for c in req.completions],
                rewards=[c.reward for c in req.completions],
                statuses=[c.status for c in req.completions],
                components=[[x.name for x in c.components] for c in req.completions],
                reward_latency_ms=req.reward_latency_ms, sample_ms=req.sample_ms)
            if state["accepted"] % args.groups_per_version == 0:
                state["version"] += 1
                log("version", version=state["version"])
                mu.notify_all()
            return pb.SubmitGroupReply(accepted=True, buffered_groups=0, buffer_capacity=8)

    def ReturnLeases(self, req, ctx):
        with mu:
            known(ctx, req.actor_id)
            n = 0
            for lid in req.lease_ids:
                l = state["leases"].get(lid)
                if l and l["actor"] == req.actor_id and l["state"] == "out":
                    l["state"] = "returned"
                    n += 1
            log("return", actor=req.actor_id, n=n, asked=len(req.lease_ids))
            return pb.ReturnLeasesReply(returned=n)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
rpc.add_LearnerServicer_to_server(Learner(), server)
server.add_insecure_port(f"127.0.0.1:{args.port}")
server.start()
print("fake learner on", args.port, flush=True)
try:
    server.wait_for_termination()
except KeyboardInterrupt:
    pass
