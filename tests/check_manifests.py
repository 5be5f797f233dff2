#!/usr/bin/python3
"""check_manifests.py - parse Cohort's Kubernetes manifests and check that what they refer to
exists in them: kustomization resources and images, StatefulSet serviceName, selectors,
Service target ports, probe ports, ConfigMap / Secret / volume references, $(VAR) in args,
host:port addresses of Services in args and in the mounted reward.json.

    check_manifests.py DIR        exit 0 and a summary when all holds; exit 1 and one line
                                  per problem otherwise

No cluster is needed: this is a static check (kubectl is not on the test machines).
"""
import json
import os
import re
import sys

import yaml

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def main(d):
    problems = []
    bad = problems.append
    kpath = os.path.join(d, "kustomization.yaml")
    if not os.path.exists(kpath):
        return [f"{kpath}: missing (kubectl apply -k needs it)"], None
    with open(kpath) as f:
        kust = yaml.safe_load(f)
    files = kust.get("resources") or []
    on_disk = sorted(n for n in os.listdir(d) if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml")
    for n in on_disk:
        if n not in files:
            bad(f"kustomization.yaml: {n} is in the folder but not in resources")
    docs = []
    for n in files:
        p = os.path.join(d, n)
        if not os.path.exists(p):
            bad(f"kustomization.yaml: resource {n} does not exist")
            continue
        try:
            with open(p) as f:
                for i, doc in enumerate(yaml.safe_load_all(f)):
                    if doc is None:
                        continue
                    where = f"{n}#{i + 1}"
                    for k in ("apiVersion", "kind", "metadata"):
                        if k not in doc:
                            bad(f"{where}: no {k}")
                    if "name" not in (doc.get("metadata") or {}):
                        bad(f"{where}: no metadata.name")
                    docs.append((where, doc))
        except yaml.YAMLError as e:
            bad(f"{n}: does not parse as YAML: {e}")
    objs = {}
    for where, doc in docs:
        key = (doc.get("kind"), (doc.get("metadata") or {}).get("name"))
        if key in objs:
            bad(f"{where}: {key[0]} {key[1]} defined twice")
        objs[key] = (where, doc)

    def get(kind, name):
        return objs.get((kind, name), (None, None))[1]

    configmaps = {n: (doc.get("data") or {}) for (k, n), (_, doc) in objs.items() if k == "ConfigMap"}
    services = {n: doc for (k, n), (_, doc) in objs.items() if k == "Service"}
    workloads = [(w, doc) for w, doc in objs.values() if doc.get("kind") in WORKLOADS]
    images = {i.get("name") for i in kust.get("images") or []}

    def check_cm_key(where, name, key, optional=False):
        if name not in configmaps:
            if not optional:
                bad(f"{where}: ConfigMap {name} does not exist")
        elif key is not None and key not in configmaps[name]:
            bad(f"{where}: ConfigMap {name} has no key {key}")

    def check_secret(where, name, optional):
        if get("Secret", name) is None and not optional:
            bad(f"{where}: Secret {name} does not exist (mark it optional or add it)")

    def service_port(host, port):
        svc = services.get(host)
        return svc is not None and any(p.get("port") == port for p in svc["spec"].get("ports") or [])

    # workloads: labels, containers, probes, env, volumes
    pod_ports = []  # (labels, {name: port}, {port})
    for where, w in workloads:
        name = w["metadata"]["name"]
        spec = w.get("spec") or {}
        tmpl = spec.get("template") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        if not match:
            bad(f"{where}: {name} has no selector.matchLabels")
        for k, v in match.items():
            if labels.get(k) != v:
                bad(f"{where}: selector {k}={v} does not match the pod template's labels")
        if w["kind"] == "StatefulSet":
            sn = spec.get("serviceName")
            if sn not in services:
                bad(f"{where}: serviceName {sn} is not a Service here")
        pspec = tmpl.get("spec") or {}
        vols = {v.get("name"): v for v in pspec.get("volumes") or []}
        claims = {(c.get("metadata") or {}).get("name") for c in spec.get("volumeClaimTemplates") or []}
        for vn, v in vols.items():
            if "configMap" in v:
                cm = v["configMap"]
                for it in cm.get("items") or [{"key": None}]:
                    check_cm_key(f"{where}: volume {vn}", cm.get("name"), it.get("key"), cm.get("optional", False))
            if "secret" in v:
                check_secret(f"{where}: volume {vn}", v["secret"].get("secretName"), v["secret"].get("optional", False))
            if "persistentVolumeClaim" in v:
                cn = v["persistentVolumeClaim"].get("claimName")
                if get("PersistentVolumeClaim", cn) is None:
                    bad(f"{where}: volume {vn}: PersistentVolumeClaim {cn} does not exist")
        names, numbers = {}, set()
        containers = pspec.get("containers") or []
        if not containers:
            bad(f"{where}: no containers")
        for c in containers:
            cw = f"{where}: container {c.get('name')}"
            img = (c.get("image") or "").split(":")[0]
            if images and img not in images:
                bad(f"{cw}: image {c.get('image')} is not one kustomization.yaml sets ({', '.join(sorted(images))})")
            cports = {}
            for p in c.get("ports") or []:
                cports[p.get("name")] = p.get("containerPort")
                numbers.add(p.get("containerPort"))
            names.update(cports)
            env = set()
            for e in c.get("env") or []:
                env.add(e.get("name"))
                vf = e.get("valueFrom") or {}
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    check_cm_key(f"{cw}: env {e.get('name')}", r.get("name"), r.get("key"), r.get("optional", False))
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    check_secret(f"{cw}: env {e.get('name')}", r.get("name"), r.get("optional", False))
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef:
                    check_cm_key(f"{cw}: envFrom", ef["configMapRef"].get("name"), None, ef["configMapRef"].get("optional", False))
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in vols and m.get("name") not in claims:
                    bad(f"{cw}: volumeMount {m.get('name')} is neither a volume nor a volumeClaimTemplate")
            for a in (c.get("command") or []) + (c.get("args") or []):
                a = str(a)
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    if var not in env:
                        bad(f"{cw}: argument {a} uses $({var}), which is not in env")
                for host, port in re.findall(r"=([a-z][a-z0-9-]*):([0-9]+)$", a):
                    if host not in ("localhost",) and not service_port(host, int(port)):
                        bad(f"{cw}: argument {a}: no Service {host} with port {port}")
            for pk in ("startupProbe", "readinessProbe", "livenessProbe"):
                pr = c.get(pk)
                if not pr:
                    continue
                for mech in ("grpc", "tcpSocket", "httpGet"):
                    if mech in pr:
                        port = pr[mech].get("port")
                        ok = port in cports if isinstance(port, str) else port in cports.values()
                        if not ok:
                            bad(f"{cw}: {pk} uses port {port}, which the container does not declare")
        pod_ports.append((labels, names, numbers, name))
    # Services: selectors select some pod; target ports exist there
    for sn, svc in services.items():
        sel = (svc.get("spec") or {}).get("selector") or {}
        pods = [p for p in pod_ports if sel and all(p[0].get(k) == v for k, v in sel.items())]
        if not pods:
            bad(f"Service {sn}: its selector {sel} selects no pod template here")
            continue
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            for labels, names, numbers, wname in pods:
                if (isinstance(tp, str) and tp not in names) or (isinstance(tp, int) and tp not in numbers):
                    bad(f"Service {sn}: targetPort {tp} is not a port of {wname}")
    # the reward service's config: valid JSON, its verifier endpoints are Services here
    for cmn, data in configmaps.items():
        if "reward.json" in data:
            try:
                cfg = json.loads(data["reward.json"])
            except ValueError as e:
                bad(f"ConfigMap {cmn}: reward.json is not JSON: {e}")
                continue
            for v in cfg.get("verifiers") or []:
                for ep in v.get("endpoints") or []:
                    host, _, port = ep.rpartition(":")
                    if not port.isdigit() or not service_port(host, int(port)):
                        bad(f"ConfigMap {cmn}: reward.json routes task {v.get('task')} to {ep}, which is no Service port here")
    summary = (f"{len(docs)} objects ({', '.join(sorted({f'{k}' for k, _ in objs}))}); "
               f"{len(workloads)} workloads, {len(services)} Services, {len(configmaps)} ConfigMaps")
    return problems, summary


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_manifests.py DIR")
    probs, summary = main(sys.argv[1])
    for p in probs:
        print("problem:", p)
    if probs:
        sys.exit(1)
    print("manifests OK:", summary)
