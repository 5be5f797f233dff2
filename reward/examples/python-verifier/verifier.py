#!/usr/bin/python3
"""verifier.py - a custom Cohort verifier in Python: copy this file to write your own.

It implements cohort.v1.Verifier (proto/cohort/v1/verifier.proto) and grpc.health.v1.Health
for one task, "match": the completion should equal the string the prompt file put in the
item's metadata, {"target": "..."}. The score is the fraction of target characters matched
in place (partial credit makes a denser reward than pass/fail); `passed` means exact.

Python stubs are generated from proto/ when the server starts (nothing generated is kept
in the repository), with Debian's python3-grpc-tools:

    /usr/bin/python3 reward/examples/python-verifier/verifier.py --port 50061

Then route the task to it in cohort-reward's config:

    {"verifiers": [{"name": "match", "task": "match", "endpoints": ["127.0.0.1:50061"]}]}

Options: --token T (require "authorization: Bearer T"), --delay-ms N (answer late: to see
deadlines at work), --log FILE (append every request's task and metadata as JSON lines).
"""

import argparse
import concurrent.futures
import importlib
import json
import os
import sys
import tempfile
import threading
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))


def load_stubs(proto_dir):
    """Generate the Python modules for verifier.proto and health.proto into a temp dir."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="cohort-verifier-stubs-")
    # health.proto lives at grpc/health/v1/ in Debian's grpc-proto; generated under that path
    # its module would collide with the grpc package itself, so compile a copy at health_v1/
    # (the wire names come from the file's `package grpc.health.v1`, not from its path)
    src = os.path.join(out, "src", "health_v1")
    os.makedirs(src)
    with open("/usr/share/grpc-proto/grpc/health/v1/health.proto") as f_in, \
            open(os.path.join(src, "health.proto"), "w") as f_out:
        f_out.write(f_in.read())
    for args in (
        [f"-I{proto_dir}", os.path.join(proto_dir, "cohort", "v1", "verifier.proto")],
        [f"-I{os.path.join(out, 'src')}", os.path.join(src, "health.proto")],
    ):
        if protoc.main(["protoc", f"--python_out={out}", f"--grpc_python_out={out}"] + args) != 0:
            sys.exit(f"verifier: cannot compile {args[-1]}")
    # make the generated folders importable as packages
    for root, _dirs, _files in os.walk(out):
        if os.path.basename(root) == "src" or "/src/" in root + "/":
            continue
        open(os.path.join(root, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    pb = importlib.import_module("cohort.v1.verifier_pb2")
    rpc = importlib.import_module("cohort.v1.verifier_pb2_grpc")
    hpb = importlib.import_module("health_v1.health_pb2")
    hrpc = importlib.import_module("health_v1.health_pb2_grpc")
    return pb, rpc, hpb, hrpc


def score_match(target, completion):
    """Fraction of target characters matched in place; extra characters count against."""
    if not target:
        return (1.0 if completion == "" else 0.0), completion == ""
    same = sum(1 for a, b in zip(target, completion) if a == b)
    score = same / max(len(target), len(completion))
    return score, completion == target


def make_servicer(pb, rpc, args):
    log_lock = threading.Lock()

    class Verifier(rpc.VerifierServicer):
        def _check_token(self, context):
            if not args.token:
                return True
            md = dict(context.invocation_metadata())
            if md.get("authorization") != f"Bearer {args.token}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "missing or wrong bearer token for this verifier")
            return True

        def _one(self, req, context):
            if req.task != "match":
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"this verifier serves task 'match', not '{req.task}'")
            try:
                meta = json.loads(req.metadata_json or "{}")
                target = meta["target"]
                if not isinstance(target, str):
                    raise TypeError("target must be a string")
            except (ValueError, KeyError, TypeError) as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"metadata must be a JSON object with a string \"target\": {e}")
            if args.log:
                with log_lock, open(args.log, "a") as f:
                    f.write(json.dumps({"task": req.task, "prompt": req.prompt,
                                        "metadata": meta, "completion": req.completion,
                                        "prompt_tokens": list(req.prompt_tokens),
                                        "completion_tokens": list(req.completion_tokens)})
                            + "\n")
            score, passed = score_match(target, req.completion)
            return pb.VerifyReply(score=score, passed=passed,
                                  details="exact" if passed else f"{score:.2f} of '{target}'")

        def _delay(self, context):
            if args.delay_ms > 0:
                end = time.monotonic() + args.delay_ms / 1000.0
                while time.monotonic() < end and context.is_active():
                    time.sleep(0.01)

        def Verify(self, request, context):
            self._check_token(context)
            self._delay(context)
            return self._one(request, context)

        def VerifyBatch(self, request, context):
            self._check_token(context)
            self._delay(context)
            return pb.VerifyBatchReply(replies=[self._one(r, context) for r in request.requests])

    return Verifier()


def make_health(hpb, hrpc):
    class Health(hrpc.HealthServicer):
        def Check(self, request, context):
            if request.service not in ("", "cohort.v1.Verifier"):
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
            return hpb.HealthCheckResponse(status=hpb.HealthCheckResponse.SERVING)

    return Health()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=50061)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--proto-dir", default=os.environ.get("COHORT_PROTO_DIR", DEFAULT_PROTO))
    ap.add_argument("--token", default=os.environ.get("COHORT_VERIFIER_TOKEN", ""))
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--log", default="")
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()

    pb, rpc, hpb, hrpc = load_stubs(args.proto_dir)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(args.workers))
    rpc.add_VerifierServicer_to_server(make_servicer(pb, rpc, args), server)
    hrpc.add_HealthServicer_to_server(make_health(hpb, hrpc), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        sys.exit(f"verifier: cannot listen on {args.host}:{args.port}")
    server.start()
    print(f"verifier: serving task 'match' on {args.host}:{port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=1.0)


if __name__ == "__main__":
    main()
