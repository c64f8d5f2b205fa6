#!/usr/bin/env python3
"""Checks the Helm chart in charts/clew: helm lint and helm template with the
default values and with ci/production-values.yaml, the rendered manifests
validated offline against the Kubernetes schemas (kubernetes-validate), and
assertions on the rendered objects: probes, resources, a non-root read-only
securityContext, keys and tokens only by Secret reference, one sequencer on a
PersistentVolumeClaim, and bad values refused by values.schema.json.

Usage: check.py --helm PATH --chart charts/clew
Prints what it checked; exits non-zero on the first failure."""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def run(cmd, ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if ok and p.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def render(helm, chart, values):
    args = [helm, "template", "clew-test", str(chart), "--namespace", "provenance"]
    if values:
        args += ["-f", str(values)]
    text = run(args).stdout
    return text, [d for d in yaml.safe_load_all(text) if d]


def pod_spec(obj):
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def check_workloads(docs, label, values):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    sts = by_kind.get("StatefulSet", [])
    check(len(sts) == 1 and sts[0]["spec"]["replicas"] == 1,
          f"{label}: the sequencer is one StatefulSet of exactly one replica")
    check(sts[0]["spec"].get("volumeClaimTemplates"),
          f"{label}: the sequencer's data is on a PersistentVolumeClaim")
    check(len(by_kind.get("Deployment", [])) == 1, f"{label}: replicas are one Deployment")
    check(any(s["spec"].get("clusterIP") != "None" for s in by_kind.get("Service", [])),
          f"{label}: a Service in front of the replicas")
    check(by_kind.get("PodDisruptionBudget"), f"{label}: a PodDisruptionBudget for the replicas")
    check(by_kind.get("ConfigMap") and "ledger.vkey" in by_kind["ConfigMap"][0]["data"],
          f"{label}: the ledger public key in a ConfigMap")

    for obj in docs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
        psc = spec.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0,
              f"{name} runs as non-root")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True, f"{name} has a read-only root filesystem")
            check(sc.get("allowPrivilegeEscalation") is False, f"{name} forbids privilege escalation")
            check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{name} drops all capabilities")
            res = c.get("resources", {})
            check(all(k in res.get(t, {}) for t in ("requests", "limits") for k in ("cpu", "memory")),
                  f"{name} has cpu and memory requests and limits")
            if obj["kind"] != "Job":
                live = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
                ready = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
                check(live == "/healthz" and ready == "/readyz",
                      f"{name} has liveness /healthz and readiness /readyz probes")
            for e in c.get("env", []):
                if "PASSWORD" in e["name"]:
                    check("valueFrom" in e and "value" not in e,
                          f"{name}: {e['name']} comes from a Secret, not a value")

    seq = pod_spec(sts[0])
    secrets = {v["name"]: v["secret"]["secretName"] for v in seq["volumes"] if "secret" in v}
    check(secrets.get("keys") == values["secrets"]["keys"],
          f"{label}: the sequencer's keys come from Secret {values['secrets']['keys']}")
    rep = pod_spec(by_kind["Deployment"][0])
    rsecrets = {v["secret"]["secretName"] for v in rep["volumes"] if "secret" in v}
    check({values["secrets"]["keys"], values["secrets"]["tokens"]} <= rsecrets,
          f"{label}: the replicas' service key and tokens come from Secrets")
    return by_kind


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True)
    ap.add_argument("--validate", required=True, help="the kubernetes-validate executable")
    args = ap.parse_args()
    chart = Path(args.chart)
    prod = chart / "ci" / "production-values.yaml"
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    production = {**defaults, **yaml.safe_load(prod.read_text())}

    for label, values in (("default values", None), ("production values", prod)):
        lint = [args.helm, "lint", str(chart), "--strict"] + (["-f", str(values)] if values else [])
        run(lint)
        print(f"ok: helm lint --strict with the {label}")
        text, docs = render(args.helm, chart, values)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        v = run([args.validate, "--strict", "--kubernetes-version", "1.33.0", f.name], ok=False)
        out = v.stdout + v.stderr
        problems = [l for l in out.splitlines()
                    if l.startswith(("ERROR", "WARN")) and "kind ServiceMonitor" not in l]
        check(v.returncode == 0 and not problems,
              f"{label}: every rendered object validates against the Kubernetes 1.33 schemas"
              + ("" if not problems else "\n" + "\n".join(problems)))
        check("PRIVATE+KEY" not in text, f"{label}: no private key material in the manifests")
        by_kind = check_workloads(docs, label, production if values else defaults)
        if values:
            check(by_kind.get("HorizontalPodAutoscaler"), "production: the autoscaler is on")
            check(by_kind.get("Ingress"), "production: the Ingress is on")
            dep = by_kind["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
            refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in dep["env"] if "valueFrom" in e
                    and "secretKeyRef" in e["valueFrom"]]
            check(production["kafka"]["sasl"]["existingSecret"] in refs,
                  "production: SASL credentials come from their Secret")
            check("--kafka-property=security.protocol=SASL_SSL" in dep["args"],
                  "production: SASL over TLS to Kafka")
        else:
            check(not by_kind.get("HorizontalPodAutoscaler"), "defaults: the autoscaler is off")

    for bad, field in (("ledger.publicKey=not-a-key", "publicKey"),
                       ("kafka.bootstrapServers=", "bootstrapServers"),
                       ("replica.storage.type=hostPath", "type"),
                       ("replica.replicaCount=0", "replicaCount")):
        p = run([args.helm, "template", "x", str(chart), "--set", bad], ok=False)
        check(p.returncode != 0 and field in p.stderr,
              f"bad value {bad!r} is refused naming {field}")
    print("chart checks passed")


if __name__ == "__main__":
    main()
