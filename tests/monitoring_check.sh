#!/usr/bin/env bash
# deploy/monitoring/ as an SRE team imports it: the alerting rules load
# (promtool check rules), every alert fires and stays quiet where it should
# (promtool test rules on alerts_test.yml, which must test every alert of
# alerts.yml both ways), and the dashboard is valid JSON with queries.
# Whether the queries name only metrics the worker exports is checked
# against a live /metrics by test_notify (tests/monitoring_names.py).
# Exit 77 (skipped) without promtool (Debian package prometheus).
set -euo pipefail
top=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
mon="$top/deploy/monitoring"
command -v promtool >/dev/null 2>&1 || { echo "promtool not installed (Debian: prometheus): skipped"; exit 77; }
fail=0
promtool check rules "$mon/alerts.yml" || fail=1
# promtool resolves rule_files relative to the test file's directory
promtool test rules "$mon/alerts_test.yml" || fail=1
/usr/bin/python3 - "$mon" <<'PY' || fail=1
import json, sys, yaml
mon = sys.argv[1]
alerts = [r["alert"] for g in yaml.safe_load(open(mon + "/alerts.yml"))["groups"] for r in g["rules"] if "alert" in r]
tests = yaml.safe_load(open(mon + "/alerts_test.yml"))["tests"]
fired, quiet = set(), set()
for t in tests:
    for a in t.get("alert_rule_test", []):
        (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
bad = 0
for a in alerts:
    if a not in fired:
        print("alert %s has no unit test where it fires" % a); bad += 1
    if a not in quiet:
        print("alert %s has no unit test where it stays quiet" % a); bad += 1
d = json.load(open(mon + "/tenantq-dashboard.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
if len(exprs) < 10 or not all(e.strip() for e in exprs):
    print("the dashboard should have its queries (%d found)" % len(exprs)); bad += 1
for want in ("tenant_provisioning_successes_total", "tenant_provisioning_duration_seconds_bucket",
             "tenant_provisioning_failures_total", "tq_queue_depth", "tq_worker_up", "tq_drift_detected_total"):
    if not any(want in e for e in exprs):
        print("the dashboard shows nothing of %s" % want); bad += 1
print("%d alerts, each tested firing and quiet; %d dashboard queries; %d problem(s)" % (len(alerts), len(exprs), bad))
sys.exit(1 if bad else 0)
PY
if [ "$fail" = 0 ]; then echo "monitoring: OK"; else echo "monitoring: FAILED"; fi
exit "$fail"
