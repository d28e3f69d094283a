#!/usr/bin/env python3
"""Policy tests on the rendered kustomize overlays (tests/deploy/k8s.sh).

usage: k8s_policy.py REPO OVERLAY=RENDERED.yaml... [--ready-key KEY]

--ready-key: the Redis key the code builds for the configured queue, found by
running the real tq-enqueue (k8s.sh); every KEDA redis trigger's listName
must equal it. Without it that check is reported as skipped.
Prints ok/FAIL/skip lines like terraform/check.sh; exit 1 on any FAIL.
"""
import os
import re
import sys

import yaml

FAILS = 0


def check(desc, cond, detail=""):
    global FAILS
    if not cond:
        FAILS += 1
    print(("ok   - " if cond else "FAIL - ") + desc + ("" if cond or not detail else " (%s)" % (detail,)))


def skip(desc):
    print("skip - " + desc)


# What a worker pod may need to take when it leaves, beyond TQ_GRACE_MS, in ms:
# the fetcher's BLMOVE returns (1 s), running steps cancelled and handed back
# (2 s), notifications in flight (their curl timeout, 15 s: worker/notify.c),
# the writer's last flush (2 s). terminationGracePeriodSeconds must exceed
# TQ_GRACE_MS plus this, or the kubelet's SIGKILL cuts the hand-back short.
DRAIN_BEYOND_GRACE_MS = 1000 + 2000 + 15000 + 2000

# Secret names and keys fixed for the whole project.
SECRET_KEYS = {
    "tenantq-worker": {"database-url", "redis-url", "secrets-key", "terraform-pg-url", "auth-key",
                       "notify-routes"},
    "tenantq-migrate": {"database-url"},
    "tenantq-keda-redis": {"username", "password"},
}


def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec.get("template", {}).get("spec", {})
    if obj["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    return None


def base_name(name):
    """tenantq-config-b4dm7ht7f5 -> tenantq-config (kustomize's hash suffix)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def main():
    args = sys.argv[1:]
    ready_key = None
    if "--ready-key" in args:
        i = args.index("--ready-key")
        ready_key = args[i + 1]
        del args[i:i + 2]
    repo = args[0]
    overlays = dict(a.split("=", 1) for a in args[1:])

    for ov, path in sorted(overlays.items()):
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        P = "%s: " % ov

        # --- every workload container
        for obj in docs:
            ps = pod_spec(obj)
            if ps is None:
                continue
            wl = "%s %s/%s" % (P, obj["kind"], obj["metadata"]["name"])
            psc = ps.get("securityContext", {})
            check(wl + ": seccomp RuntimeDefault",
                  psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", psc)
            check(wl + ": no service account token mounted", ps.get("automountServiceAccountToken") is False)
            for kind in ("initContainers", "containers"):
                for c in ps.get(kind, []):
                    cn = "%s container %s" % (wl, c["name"])
                    csc = c.get("securityContext", {})
                    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
                    uid = csc.get("runAsUser", psc.get("runAsUser"))
                    check(cn + ": runAsNonRoot with a numeric non-zero runAsUser",
                          non_root and isinstance(uid, int) and uid > 0, (non_root, uid))
                    check(cn + ": allowPrivilegeEscalation false", csc.get("allowPrivilegeEscalation") is False)
                    check(cn + ": readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True)
                    check(cn + ": drops ALL capabilities and adds none",
                          csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"),
                          csc.get("capabilities"))
                    check(cn + ": not privileged", not csc.get("privileged", False))
                    res = c.get("resources", {})
                    check(cn + ": cpu and memory requests and limits",
                          all(res.get(a, {}).get(r) for a in ("requests", "limits") for r in ("cpu", "memory")), res)
                    img = c.get("image", "")
                    tag = img.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
                    check(cn + ": image %s has a tag (or digest) and it is not latest" % img,
                          ("@sha256:" in img) or (tag and tag != "latest"))
                    if kind == "containers":
                        check(cn + ": liveness and readiness probes",
                              bool(c.get("livenessProbe")) and bool(c.get("readinessProbe")))
                    for e in c.get("env", []):
                        ref = e.get("valueFrom", {}).get("secretKeyRef")
                        if ref and ref["name"] in SECRET_KEYS:
                            check(cn + ": secret %s key %s is one of the agreed keys" % (ref["name"], ref["key"]),
                                  ref["key"] in SECRET_KEYS[ref["name"]])
                    for e in c.get("env", []):
                        check(cn + ": env %s carries no literal credential" % e["name"],
                              "value" not in e or not re.search(r"://[^/@\s]*:[^/@\s]+@", str(e["value"])))

        # --- the worker Deployment
        deps = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "tenantq-worker"]
        check(P + "one Deployment tenantq-worker", len(deps) == 1)
        if not deps:
            continue
        dep = deps[0]
        ps = pod_spec(dep)
        worker = next(c for c in ps["containers"] if c["name"] == "worker")
        cms = {base_name(d["metadata"]["name"]): d for d in by_kind.get("ConfigMap", [])}
        config = cms.get("tenantq-config", {}).get("data", {})
        check(P + "worker reads ConfigMap tenantq-config",
              any(base_name(r.get("configMapRef", {}).get("name", "")) == "tenantq-config" for r in worker.get("envFrom", [])))
        grace_ms = int(config.get("TQ_GRACE_MS", "20000"))
        tgps = ps.get("terminationGracePeriodSeconds", 30)
        check(P + "terminationGracePeriodSeconds %d s > TQ_GRACE_MS %d ms + %d ms of drain after it"
              % (tgps, grace_ms, DRAIN_BEYOND_GRACE_MS), tgps * 1000 > grace_ms + DRAIN_BEYOND_GRACE_MS)
        env = {e["name"]: e for e in worker.get("env", [])}
        check(P + "POD_IP from the downward API status.podIP",
              env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP")
        check(P + "TQ_HTTP_ADDR is $(POD_IP):<port> and that port is the probes' and the container's",
              env.get("TQ_HTTP_ADDR", {}).get("value") == "$(POD_IP):9464"
              and any(p.get("containerPort") == 9464 for p in worker.get("ports", [])))
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            check(P + "%s on %s" % (probe, path), worker.get(probe, {}).get("httpGet", {}).get("path") == path)
        init = ps.get("initContainers", [])
        check(P + "init container runs tq-enqueue migrate with the tenantq-migrate credentials",
              any(c.get("command", [])[-1:] == ["migrate"] and any(
                  e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "tenantq-migrate"
                  for e in c.get("env", [])) for c in init))
        check(P + "the worker container never sees the migration credentials",
              "tenantq-migrate" not in yaml.safe_dump(worker))
        mounts = {m["mountPath"]: m for m in worker.get("volumeMounts", [])}
        vols = {v["name"]: v for v in ps.get("volumes", [])}
        check(P + "/tmp is an emptyDir (read-only root filesystem)",
              "/tmp" in mounts and "emptyDir" in vols.get(mounts["/tmp"]["name"], {}))
        keyfile = config.get("TQ_SECRETS_KEY_FILE", "")
        kdir, kname = os.path.split(keyfile)
        km = mounts.get(kdir)
        kv = vols.get(km["name"], {}) if km else {}
        check(P + "TQ_SECRETS_KEY_FILE %s is the key secrets-key of Secret tenantq-worker, mounted read-only" % keyfile,
              kv.get("secret", {}).get("secretName") == "tenantq-worker" and km.get("readOnly") is True
              and {"key": "secrets-key", "path": kname} in kv["secret"].get("items", []), kv)
        # The other files that hold secrets: the tenants' JWT signing keys and
        # the notification routes (webhook URLs, PagerDuty routing keys), each a
        # key of Secret tenantq-worker mounted read-only, never a ConfigMap.
        for var, key in (("TQ_AUTH_KEY_FILE", "auth-key"), ("TQ_NOTIFY_ROUTES_FILE", "notify-routes")):
            path = config.get(var, "")
            fdir, fname = os.path.split(path)
            fm = mounts.get(fdir)
            fv = vols.get(fm["name"], {}) if fm else {}
            check(P + "%s %s is the key %s of Secret tenantq-worker, mounted read-only" % (var, path or "(unset)", key),
                  bool(fname) and fv.get("secret", {}).get("secretName") == "tenantq-worker"
                  and fm.get("readOnly") is True
                  and {"key": key, "path": fname} in fv["secret"].get("items", []), fv)
        # Nothing reads TQ_PIPELINE any more: a submit picks a registered
        # pipeline. A fresh cluster gets its default from an init container
        # that registers the mounted file with the migration account.
        check(P + "no ConfigMap or container sets TQ_PIPELINE (nothing reads it)",
              "TQ_PIPELINE" not in config and all(
                  e.get("name") != "TQ_PIPELINE" for c in init + [worker] for e in c.get("env", [])))
        reg = [c for c in init if c.get("command", [])[1:3] == ["pipeline", "register"]]
        regfile = reg[0]["command"][3] if reg and len(reg[0]["command"]) > 3 else ""
        rmounts = {m["mountPath"]: m for m in reg[0].get("volumeMounts", [])} if reg else {}
        rm = rmounts.get(os.path.dirname(regfile))
        check(P + "an init container after migrate registers %s as the default pipeline "
              "from ConfigMap tenantq-pipelines with the tenantq-migrate credentials" % (regfile or "a pipeline"),
              bool(reg) and "--default" in reg[0]["command"] and init.index(reg[0]) > 0
              and rm is not None and rm.get("readOnly") is True
              and base_name(vols.get(rm["name"], {}).get("configMap", {}).get("name", "")) == "tenantq-pipelines"
              and os.path.basename(regfile) in cms.get("tenantq-pipelines", {}).get("data", {})
              and any(e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "tenantq-migrate"
                      for e in reg[0].get("env", [])), reg)
        check(P + "the worker container does not mount the pipeline files (it reads registered pipelines from PostgreSQL)",
              not any(base_name(vols.get(m["name"], {}).get("configMap", {}).get("name", "")) == "tenantq-pipelines"
                      for m in worker.get("volumeMounts", [])))
        pipes = cms.get("tenantq-pipelines", {}).get("data", {})
        src = os.path.join(repo, "deploy", "pipelines")
        want = {f: open(os.path.join(src, f)).read() for f in os.listdir(src) if f.endswith(".json")}
        check(P + "ConfigMap tenantq-pipelines holds exactly deploy/pipelines/*.json, byte for byte",
              pipes == want, sorted(set(pipes) ^ set(want)) or "contents differ")
        spread = {t["topologyKey"] for t in ps.get("topologySpreadConstraints", [])}
        check(P + "spread across nodes and zones",
              {"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= spread, spread)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matches = lambda sel: sel and all(labels.get(k) == v for k, v in sel.items())
        pdbs = by_kind.get("PodDisruptionBudget", [])
        check(P + "a PodDisruptionBudget selects the workers",
              any(matches(p["spec"]["selector"].get("matchLabels")) for p in pdbs))
        svcs = [s for s in by_kind.get("Service", []) if matches(s["spec"].get("selector"))]
        check(P + "a metrics Service selects the workers on port http-metrics",
              any(p.get("name") == "http-metrics" for s in svcs for p in s["spec"]["ports"]))
        for sm in by_kind.get("ServiceMonitor", []):
            check(P + "ServiceMonitor selects that Service and scrapes its port",
                  any(all(s["metadata"].get("labels", {}).get(k) == v
                          for k, v in sm["spec"]["selector"]["matchLabels"].items()) for s in svcs)
                  and all(e["port"] == "http-metrics" for e in sm["spec"]["endpoints"]))

        # --- autoscaling: exactly one owner of the replica count
        sos = [s for s in by_kind.get("ScaledObject", []) if s["spec"]["scaleTargetRef"]["name"] == "tenantq-worker"]
        hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["spec"]["scaleTargetRef"]["name"] == "tenantq-worker"]
        check(P + "exactly one autoscaler (KEDA ScaledObject or HPA) for the workers", len(sos) + len(hpas) == 1,
              (len(sos), len(hpas)))
        check(P + "the Deployment leaves replicas to the autoscaler", "replicas" not in dep["spec"])
        for so in sos:
            for t in so["spec"]["triggers"]:
                if t["type"] != "redis":
                    continue
                if ready_key is None:
                    skip(P + "listName %s equals the key tq-enqueue pushes to (needs TQ_TEST_PG_DSN and "
                         "TQ_TEST_REDIS_URL to run the binary)" % t["metadata"]["listName"])
                else:
                    check(P + "KEDA listName %r equals the key tq-enqueue pushes to for TQ_PREFIX=%s TQ_QUEUE=%s (%r)"
                          % (t["metadata"]["listName"], config.get("TQ_PREFIX"), config.get("TQ_QUEUE"), ready_key),
                          t["metadata"]["listName"] == ready_key)
                check(P + "KEDA reads Redis with its own credentials (TriggerAuthentication)",
                      t.get("authenticationRef", {}).get("name") in
                      {a["metadata"]["name"] for a in by_kind.get("TriggerAuthentication", [])})
            check(P + "minReplicaCount >= 1 (delayed jobs and reaping need a running worker)",
                  so["spec"].get("minReplicaCount", 0) >= 1)

        # --- network
        nps = {n["metadata"]["name"]: n for n in by_kind.get("NetworkPolicy", [])}
        check(P + "a default-deny NetworkPolicy for the namespace",
              "default-deny" in nps and nps["default-deny"]["spec"]["podSelector"] == {}
              and set(nps["default-deny"]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
              and not nps["default-deny"]["spec"].get("egress") and not nps["default-deny"]["spec"].get("ingress"))
        wnp = nps.get("tenantq-worker", {}).get("spec", {})
        ports = {(p.get("port"), p.get("protocol", "TCP")) for r in wnp.get("egress", []) for p in r.get("ports", [])}
        check(P + "worker egress only to DNS 53, Redis 6379, PostgreSQL 5432, HTTPS 443",
              ports == {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (5432, "TCP"), (443, "TCP")}, sorted(ports, key=str))
        check(P + "every worker egress rule names its ports", all(r.get("ports") for r in wnp.get("egress", [None])))
        for r in wnp.get("egress", []):
            for t in r.get("to", []):
                if "ipBlock" in t and t["ipBlock"]["cidr"] == "0.0.0.0/0":
                    check(P + "the open HTTPS rule excludes the instance metadata range",
                          "169.254.0.0/16" in t["ipBlock"].get("except", []) and
                          {p["port"] for p in r["ports"]} == {443})

        # --- secrets
        secrets = by_kind.get("Secret", [])
        if ov == "production":
            check(P + "no Secret object is rendered (they are created outside the repository)", not secrets,
                  [s["metadata"]["name"] for s in secrets])
        else:
            have = {base_name(s["metadata"]["name"]): set(s.get("data", {})) for s in secrets}
            for name, keys in SECRET_KEYS.items():
                if name in have:
                    check(P + "Secret %s has the agreed keys" % name, have[name] == keys, have[name])
    print("policy: %d failure(s)" % FAILS)
    sys.exit(1 if FAILS else 0)


main()
