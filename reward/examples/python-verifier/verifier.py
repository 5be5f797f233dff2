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
deadlines at work), --log FILE (append every request's task, metadata, rpc and the time left
before its deadline as JSON lines), --no-batch (answer VerifyBatch with UNIMPLEMENTED, as a
verifier without it would), --health-file FILE (Health answers NOT_SERVING while FILE holds
"NOT_SERVING"), --tls-cert PEM --tls-key PEM (serve TLS), --task NAME (serve this task
name too, scored like "match"; repeatable), --metadata-delay (an item's metadata "delay_ms"
overrides --delay-ms: for tests).
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

        def _log(self, req, context, rpc_name):
            """Append the request, as it arrived, to --log (with the time left before its
            deadline, so tests can see the deadline cohort-reward gave the call)."""
            if not args.log:
                return
            try:
                meta = json.loads(req.metadata_json or "{}")
            except ValueError:
                meta = None
            left = context.time_remaining()
            line = {"rpc": rpc_name, "time_remaining_ms": None if left is None else left * 1e3,
                    "arrived": time.time(),
                    "authorization": dict(context.invocation_metadata()).get("authorization", ""),
                    "task": req.task, "prompt": req.prompt, "metadata": meta,
                    "metadata_json": req.metadata_json, "completion": req.completion,
                    "prompt_tokens": list(req.prompt_tokens),
                    "completion_tokens": list(req.completion_tokens)}
            with log_lock, open(args.log, "a") as f:
                f.write(json.dumps(line) + "\n")

        def _one(self, req, context):
            if req.task != "match" and req.task not in args.task:
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
            score, passed = score_match(target, req.completion)
            return pb.VerifyReply(score=score, passed=passed,
                                  details="exact" if passed else f"{score:.2f} of '{target}'")

        def _delay(self, context, reqs=()):
            delay = args.delay_ms
            if args.metadata_delay:
                for r in reqs:
                    try:
                        delay = max(delay, int(json.loads(r.metadata_json).get("delay_ms", 0)))
                    except (ValueError, AttributeError, TypeError):
                        pass
            if delay > 0:
                end = time.monotonic() + delay / 1000.0
                while time.monotonic() < end and context.is_active():
                    time.sleep(0.01)

        def Verify(self, request, context):
            self._check_token(context)
            self._log(request, context, "Verify")
            self._delay(context, [request])
            return self._one(request, context)

        def VerifyBatch(self, request, context):
            if args.no_batch:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "VerifyBatch is not implemented")
            self._check_token(context)
            for r in request.requests:
                self._log(r, context, "VerifyBatch")
            self._delay(context, request.requests)
            return pb.VerifyBatchReply(replies=[self._one(r, context) for r in request.requests])

    return Verifier()


def make_health(hpb, hrpc, args):
    def serving():
        if not args.health_file:
            return True
        try:
            with open(args.health_file) as f:
                return f.read().strip() != "NOT_SERVING"
        except OSError:
            return True

    class Health(hrpc.HealthServicer):
        def Check(self, request, context):
            if request.service not in ("", "cohort.v1.Verifier"):
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
            return hpb.HealthCheckResponse(status=hpb.HealthCheckResponse.SERVING if serving()
                                           else hpb.HealthCheckResponse.NOT_SERVING)

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
    ap.add_argument("--no-batch", action="store_true")
    ap.add_argument("--task", action="append", default=[])
    ap.add_argument("--metadata-delay", action="store_true")
    ap.add_argument("--health-file", default="")
    ap.add_argument("--tls-cert", default="")
    ap.add_argument("--tls-key", default="")
    args = ap.parse_args()

    pb, rpc, hpb, hrpc = load_stubs(args.proto_dir)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(args.workers))
    rpc.add_VerifierServicer_to_server(make_servicer(pb, rpc, args), server)
    hrpc.add_HealthServicer_to_server(make_health(hpb, hrpc, args), server)
    if args.tls_cert:
        with open(args.tls_key, "rb") as k, open(args.tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(f"{args.host}:{args.port}", creds)
    else:
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
