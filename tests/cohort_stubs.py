"""cohort_stubs.py - Python modules for the cohort.v1 protocol, generated from proto/ into a
temporary folder with Debian's python3-grpc-tools, for the tests that talk to the services.

    sys.path.insert(0, TESTS_DIR); import cohort_stubs
    m = cohort_stubs.load(ROOT, WORK)            # m.learner_pb2, m.learner_pb2_grpc, ...
    m.health_pb2, m.health_pb2_grpc             # grpc.health.v1 (compiled as health_v1/)
"""
import importlib
import os
import tempfile
import types

from grpc_tools import protoc

FILES = ("common", "learner", "monitor", "reward", "verifier")


def load(root, workdir):
    out = tempfile.mkdtemp(dir=workdir)
    # health.proto sits at grpc/health/v1/ in Debian's grpc-proto; generated at that path its
    # module would shadow the grpc package, so compile a copy as health_v1/health.proto
    src = os.path.join(out, "src", "health_v1")
    os.makedirs(src)
    with open("/usr/share/grpc-proto/grpc/health/v1/health.proto") as f:
        open(os.path.join(src, "health.proto"), "w").write(f.read())
    for args in ([f"-I{root}/proto"] + [f"{root}/proto/cohort/v1/{n}.proto" for n in FILES],
                 [f"-I{out}/src", os.path.join(src, "health.proto")]):
        if protoc.main(["protoc", f"--python_out={out}", f"--grpc_python_out={out}"] + args) != 0:
            raise RuntimeError(f"protoc failed on {args[-1]}")
    for r, _, _ in os.walk(out):
        if "/src" not in r:
            open(os.path.join(r, "__init__.py"), "a").close()
    import sys
    sys.path.insert(0, out)
    m = types.SimpleNamespace()
    for n in FILES:
        setattr(m, f"{n}_pb2", importlib.import_module(f"cohort.v1.{n}_pb2"))
        setattr(m, f"{n}_pb2_grpc", importlib.import_module(f"cohort.v1.{n}_pb2_grpc"))
    m.health_pb2 = importlib.import_module("health_v1.health_pb2")
    m.health_pb2_grpc = importlib.import_module("health_v1.health_pb2_grpc")
    return m
