#!/usr/bin/env python3
"""Checks the Helm chart in charts/clew: helm lint and helm template with the
default values and with ci/production-values.yaml, the rendered manifests
validated offline against the Kubernetes schemas (kubernetes-validate), and
assertions on the rendered objects: probes, resources, a non-root read-only
securityContext, keys and tokens only by Secret reference, no service-account
token in any pod, a NetworkPolicy (ingress and egress) over every pod, images
by digest in production, one sequencer on a PersistentVolumeClaim, manifests
in the shared bucket (credentials as files of their Secret), bad values
refused by values.schema.json — and checkov (Bridgecrew's policy checks for
Kubernetes) over both renders.

Usage: check.py --helm PATH --chart charts/clew --validate PATH --checkov PATH
Prints what it checked; exits non-zero on the first failure."""

import argparse
import json
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


# Checks the example defaults cannot pass: they name no image digest (there is
# no released image to pin), and checkov's pull-policy check passes only for
# images pinned by digest. The production render must pass both.
DEFAULTS_MAY_FAIL = {"CKV_K8S_43", "CKV_K8S_15"}


def checkov(binary, manifest, label, may_fail):
    p = run([binary, "-f", manifest, "--framework", "kubernetes", "--quiet", "--compact",
             "-o", "json"], ok=False)
    try:
        report = json.loads(p.stdout)
    except json.JSONDecodeError:
        sys.exit(f"FAILED: checkov gave no JSON report\n{p.stdout}\n{p.stderr}")
    reports = report if isinstance(report, list) else [report]
    passed = sum(r["summary"]["passed"] for r in reports)
    failed = [f for r in reports for f in r["results"]["failed_checks"]]
    unexpected = sorted({(f["check_id"], f["resource"]) for f in failed
                         if f["check_id"] not in may_fail})
    check(passed >= 250, f"{label}: checkov ran {passed} passing checks")
    check(not unexpected, f"{label}: checkov finds nothing"
          + (f" but {sorted(may_fail)} (no digest in the example defaults)" if may_fail else "")
          + ("" if not unexpected else "\n" + "\n".join(f"  {c} {r}" for c, r in unexpected)))


def check_network_policies(docs, label, values):
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for obj in docs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        name = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
        check(spec.get("automountServiceAccountToken") is False,
              f"{name} mounts no service-account token")
        covering = [p for p in policies
                    if all(labels.get(k) == v
                           for k, v in p["spec"]["podSelector"]["matchLabels"].items())]
        check(any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} for p in covering),
              f"{name} is under a NetworkPolicy for ingress and egress")
    for component in ("ledger", "replica"):
        policy = next(p for p in policies if p["metadata"]["name"].endswith(f"-{component}"))
        reached = [port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])]
        check(set(values["networkPolicy"]["blobStore"]["ports"]) <= set(reached),
              f"{label}: the {component} may reach the blob store")
    # Only the sequencer sends checkpoints to the witnesses.
    ledger = next(p for p in policies if p["metadata"]["name"].endswith("-ledger"))
    replica = next(p for p in policies if p["metadata"]["name"].endswith("-replica"))
    witness_peers = values["networkPolicy"]["witnesses"]["to"]
    to_witnesses = [r for r in ledger["spec"]["egress"] if r.get("to") == witness_peers]
    if values["witnesses"]["list"]:
        check(len(to_witnesses) == 1
              and {p["port"] for p in to_witnesses[0]["ports"]}
              == set(values["networkPolicy"]["witnesses"]["ports"]),
              f"{label}: the sequencer may reach the witnesses")
    else:
        check(not to_witnesses, f"{label}: no egress to witnesses when none are listed")
    check(not any(r.get("to") == witness_peers for r in replica["spec"]["egress"]),
          f"{label}: the replicas do not reach the witnesses")
    topics = next(p for p in policies if p["metadata"]["name"].endswith("-topics"))
    check(len(topics["spec"]["egress"]) == 2,
          f"{label}: the topics job reaches only DNS and Kafka")
    ledger = next(p for p in policies if p["metadata"]["name"].endswith("-ledger"))
    peers = [f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
             for rule in ledger["spec"]["ingress"] for f in rule["from"]]
    check({"replica", "topics"} <= set(peers) and "replica" in peers,
          f"{label}: the sequencer takes connections only from the replicas, the topics job "
          "and the metrics scraper")


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
                # A *_FILE variable holds the path of a mounted Secret key.
                if "PASSWORD" in e["name"] and not e["name"].endswith("_FILE"):
                    check("valueFrom" in e and "value" not in e,
                          f"{name}: {e['name']} comes from a Secret, not a value")

    # Manifests live in the shared bucket, never on a pod's disk; its
    # credentials are files of their Secret.
    for obj in (sts[0], by_kind["Deployment"][0]):
        c = pod_spec(obj)["containers"][0]
        env = {e["name"]: e for e in c.get("env", [])}
        name = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
        check(env.get("CLEW_BLOB_STORE", {}).get("value") == values["blobStore"]["url"],
              f"{name} keeps manifests in the bucket {values['blobStore']['url']}")
        check(not any(k.startswith("AWS_ACCESS") or k.startswith("AWS_SECRET") for k in env)
              and env.get("CLEW_BLOB_STORE_SECRET_ACCESS_KEY_FILE", {}).get("value", "")
              .startswith("/etc/clew/blob-store/"),
              f"{name}: the blob store's credentials are files of their Secret")
        mounted = {v["secret"]["secretName"] for v in pod_spec(obj)["volumes"] if "secret" in v}
        check(values["blobStore"]["credentialsSecret"] in mounted,
              f"{name} mounts Secret {values['blobStore']['credentialsSecret']}")

    # The same witnesses for the sequencer (it feeds them) and the replicas
    # (they keep their cosignatures), with the quorum.
    listed = [f"--witness={w['verifierKey']}@{w['url']}" for w in values["witnesses"]["list"]]
    quorum = values["witnesses"]["quorum"]
    for obj in (sts[0], by_kind["Deployment"][0]):
        given = [a for a in pod_spec(obj)["containers"][0]["args"] if a.startswith("--witness")]
        want = listed + ([f"--witness-quorum={quorum}"] if listed and quorum else [])
        check(given == want, f"{label}: {obj['kind']}/{obj['metadata']['name']} is given the "
              f"witnesses {want} (it has {given})")

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
    ap.add_argument("--checkov", required=True, help="the checkov executable")
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
        check_network_policies(docs, label, production if values else defaults)
        checkov(args.checkov, f.name, label, set() if values else DEFAULTS_MAY_FAIL)
        if values:
            check(by_kind.get("HorizontalPodAutoscaler"), "production: the autoscaler is on")
            check(by_kind.get("Ingress"), "production: the Ingress is on")
            pod = by_kind["Deployment"][0]["spec"]["template"]["spec"]
            dep = pod["containers"][0]
            mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
            env = {e["name"]: e.get("value") for e in dep["env"]}
            check(production["kafka"]["sasl"]["existingSecret"] in mounted
                  and env.get("CLEW_KAFKA_SASL_PASSWORD_FILE", "").startswith("/etc/clew/")
                  and not any("secretKeyRef" in e.get("valueFrom", {}) for e in dep["env"]),
                  "production: SASL credentials are files of their Secret, not environment values")
            check(all("@sha256:" in c["image"] for d in docs if pod_spec(d)
                      for c in pod_spec(d)["containers"]),
                  "production: every image is pinned by digest")
            check("--kafka-property=security.protocol=SASL_SSL" in dep["args"],
                  "production: SASL over TLS to Kafka")
        else:
            check(not by_kind.get("HorizontalPodAutoscaler"), "defaults: the autoscaler is off")

    for bad, field in (("ledger.publicKey=not-a-key", "publicKey"),
                       ("kafka.bootstrapServers=", "bootstrapServers"),
                       ("replica.storage.type=hostPath", "type"),
                       ("replica.replicaCount=0", "replicaCount"),
                       ("image.digest=latest", "digest"),
                       ("networkPolicy.kafka.ports={}", "ports"),
                       ("blobStore.url=/var/lib/clew/manifests", "url"),
                       ("blobStore.credentialsSecret=", "credentialsSecret"),
                       ("witnesses.list[0].verifierKey=not-a-key,witnesses.list[0].url=https://w.example",
                        "verifierKey"),
                       ("witnesses.quorum=2", "witnesses.quorum")):
        p = run([args.helm, "template", "x", str(chart), "--set", bad], ok=False)
        check(p.returncode != 0 and field in p.stderr,
              f"bad value {bad!r} is refused naming {field}")
    print("chart checks passed")


if __name__ == "__main__":
    main()
