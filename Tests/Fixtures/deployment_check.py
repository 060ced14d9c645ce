"""Checks the deployment examples: Kubernetes manifests, the Dockerfile and
the monitoring files. Nothing here runs a cluster, a container engine or
Grafana; it checks that the files parse and say what the docs promise.

usage: deployment_check.py EXAMPLES_DIR METRICS_MAN_PAGE
Prints each problem and exits 1 if there is any.
"""
import glob
import json
import os
import re
import sys

import yaml

examples, man_page = sys.argv[1], sys.argv[2]
problems = []


def need(cond, what):
    if not cond:
        problems.append(what)


# --- Kubernetes -------------------------------------------------------------
docs = []
for path in sorted(glob.glob(os.path.join(examples, "kubernetes", "*.yaml"))):
    for doc in yaml.safe_load_all(open(path, encoding="utf-8")):
        if doc is not None:
            need(isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc, f"{path}: a document without apiVersion/kind")
            docs.append((path, doc))
kinds = {}
for path, doc in docs:
    kinds.setdefault(doc["kind"], []).append((path, doc))
claims = {d["metadata"]["name"] for _, d in kinds.get("PersistentVolumeClaim", [])}
secrets = {d["metadata"]["name"] for _, d in kinds.get("Secret", [])}
cronjobs = kinds.get("CronJob", [])
components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for _, d in cronjobs}
need(components == {"collector", "site"}, f"CronJobs for collector and site expected, found {sorted(map(str, components))}")
for path, cj in cronjobs:
    where = f"{path}: CronJob {cj['metadata']['name']}"
    spec = cj["spec"]
    need(cj["apiVersion"] == "batch/v1", f"{where}: apiVersion must be batch/v1")
    need(spec.get("concurrencyPolicy") == "Forbid", f"{where}: concurrencyPolicy must be Forbid")
    need(isinstance(spec.get("schedule"), str) and len(spec["schedule"].split()) == 5, f"{where}: schedule must be a 5-field cron string")
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    need(pod.get("restartPolicy") == "Never", f"{where}: restartPolicy must be Never (podFailurePolicy needs it)")
    ctx = pod.get("securityContext", {})
    need(ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") == 10001, f"{where}: must run as the image's uid 10001, non-root")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    pvcs = [v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v]
    need(any(c in claims for c in pvcs), f"{where}: no volume from a PersistentVolumeClaim defined in the examples (home)")
    secret_vols = [v["secret"]["secretName"] for v in volumes.values() if "secret" in v]
    need(secret_vols and all(s in secrets for s in secret_vols), f"{where}: the GnuPG Secret must be a volume, defined in the examples")
    containers = {c["name"]: c for c in pod.get("containers", [])}
    main = containers.get("fedbatch")
    need(main is not None, f"{where}: no container named fedbatch")
    if main:
        script = " ".join(main.get("command", []) + main.get("args", []))
        need("-eq 5" in script and "exit 0" in script, f"{where}: exit 5 (nothing to do) must count as success")
        need(re.search(r"fedbatch .*\b(merge|train)\b", script) is not None, f"{where}: the container must run fedbatch merge or train")
        mounts = {m["name"]: m["mountPath"] for m in main.get("volumeMounts", [])}
        home = next((n for n, v in volumes.items() if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] in claims), None)
        need(home is not None and mounts.get(home) == "/var/lib/fedbatch", f"{where}: the home claim must be mounted at /var/lib/fedbatch")
        env = {e["name"]: e.get("value") for e in main.get("env", [])}
        need(env.get("FEDBATCH_HOME") == "/var/lib/fedbatch", f"{where}: FEDBATCH_HOME must name the mounted home")
        sc = main.get("securityContext", {})
        need(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False, f"{where}: container must be read-only, no escalation")
    for c in pod.get("initContainers", []):
        mounted = {m["name"] for m in c.get("volumeMounts", [])}
        need(any("secret" in volumes.get(n, {}) for n in mounted), f"{where}: the init container must read the key Secret")
need(claims, "no PersistentVolumeClaim in the examples")

# The regional merges of a hierarchical federation: an Indexed Job, one
# index per region named in a ConfigMap.
maps = {d["metadata"]["name"]: d for _, d in kinds.get("ConfigMap", [])}
jobs = [(p, d) for p, d in kinds.get("Job", []) if d["spec"].get("completionMode") == "Indexed"]
need(len(jobs) == 1, f"one Indexed Job for the regional merges expected, found {len(jobs)}")
for path, job in jobs:
    where = f"{path}: Job {job['metadata']['name']}"
    spec = job["spec"]
    pod = spec["template"]["spec"]
    need(job["apiVersion"] == "batch/v1", f"{where}: apiVersion must be batch/v1")
    need(pod.get("restartPolicy") == "Never", f"{where}: restartPolicy must be Never (podFailurePolicy needs it)")
    ctx = pod.get("securityContext", {})
    need(ctx.get("runAsNonRoot") is True and ctx.get("runAsUser") == 10001, f"{where}: must run as the image's uid 10001, non-root")
    rules = spec.get("podFailurePolicy", {}).get("rules", [])
    need(any(r.get("action") in ("FailIndex", "FailJob") and sorted(r.get("onExitCodes", {}).get("values", [])) == [2, 3] for r in rules),
         f"{where}: exits 2 and 3 must fail the index at once")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    pvcs = [v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v]
    need(any(c in claims for c in pvcs), f"{where}: no volume from a PersistentVolumeClaim defined in the examples (the region homes)")
    secret_vols = [v["secret"]["secretName"] for v in volumes.values() if "secret" in v]
    need(secret_vols and all(s in secrets for s in secret_vols), f"{where}: the regions' keys must be a Secret volume defined in the examples")
    cms = [v["configMap"]["name"] for v in volumes.values() if "configMap" in v]
    regions = [l for cm in cms if cm in maps for l in maps[cm]["data"].get("regions.txt", "").splitlines() if l.strip()]
    need(regions, f"{where}: no ConfigMap listing the regions (regions.txt) is mounted")
    need(spec.get("completions") == len(regions) and spec.get("parallelism") == len(regions),
         f"{where}: completions and parallelism must equal the {len(regions)} regions listed")
    containers = {c["name"]: c for c in pod.get("containers", [])}
    main = containers.get("fedbatch")
    need(main is not None, f"{where}: no container named fedbatch")
    if main:
        script = " ".join(main.get("command", []) + main.get("args", []))
        need("JOB_COMPLETION_INDEX" in script, f"{where}: the region must come from JOB_COMPLETION_INDEX")
        need(all(re.search(rf"\b{w}\b", script) for w in ("pull", "merge", "push")), f"{where}: each region must pull, merge and push")
        need("-ne 5" in script or "-eq 5" in script, f"{where}: exit 5 (nothing to do) must count as success")
        refs = [e["secretRef"]["name"] for e in main.get("envFrom", []) if "secretRef" in e]
        need(refs and all(r in secrets for r in refs), f"{where}: the S3 credentials must come from a Secret defined in the examples")
        sc = main.get("securityContext", {})
        need(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False, f"{where}: container must be read-only, no escalation")

# --- Dockerfile -------------------------------------------------------------
dockerfile = open(os.path.join(examples, "container", "Dockerfile"), encoding="utf-8").read()
instructions = [l.split()[0] for l in dockerfile.splitlines() if l.strip() and not l.startswith("#") and not l.startswith(" ")]
need(re.search(r"^FROM debian:12-slim$", dockerfile, re.M) is not None, "Dockerfile: must start FROM debian:12-slim")
need(re.search(r"apt-get install .*fedbatch_\S*\.deb", dockerfile) is not None, "Dockerfile: must install the .deb with apt-get")
need(re.search(r"^USER 10001", dockerfile, re.M) is not None, "Dockerfile: must switch to the non-root uid 10001")
need(re.search(r'^ENTRYPOINT \["fedbatch"\]', dockerfile, re.M) is not None, "Dockerfile: the entry point must be fedbatch")
need(set(instructions) <= {"FROM", "RUN", "COPY", "USER", "ENV", "VOLUME", "WORKDIR", "ENTRYPOINT", "CMD"}, f"Dockerfile: unexpected instructions {instructions}")

# --- Monitoring -------------------------------------------------------------
documented = set(re.findall(r"^\.B (fedbatch_[a-z_]+)", open(man_page, encoding="utf-8").read(), re.M))
need(len(documented) > 10, f"{man_page}: found only {len(documented)} series")
dashboard = json.load(open(os.path.join(examples, "monitoring", "grafana-dashboard.json"), encoding="utf-8"))
need(dashboard.get("uid") == "fedbatch-overview", "dashboard: uid must stay fedbatch-overview")
used = set()
for panel in dashboard.get("panels", []):
    need(panel.get("targets"), f"dashboard panel {panel.get('title')}: no query")
    for t in panel.get("targets", []):
        used |= set(re.findall(r"fedbatch_[a-z_]+", t.get("expr", "")))
alerts = yaml.safe_load(open(os.path.join(examples, "monitoring", "alerts.yml"), encoding="utf-8"))
for group in alerts["groups"]:
    for rule in group["rules"]:
        used |= set(re.findall(r"fedbatch_[a-z_]+", rule["expr"]))
need(used, "dashboard and alerts use no fedbatch series")
for name in sorted(used - documented):
    problems.append(f"monitoring: {name} is used but fedbatch-metrics(7) documents no such series")
prov = yaml.safe_load(open(os.path.join(examples, "monitoring", "grafana-provisioning.yaml"), encoding="utf-8"))
need(prov.get("apiVersion") == 1 and prov.get("providers") and prov["providers"][0].get("type") == "file"
     and prov["providers"][0].get("options", {}).get("path"), "grafana-provisioning.yaml: needs apiVersion 1 and a file provider with a path")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
