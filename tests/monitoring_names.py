#!/usr/bin/python3
"""Every metric that deploy/monitoring's dashboard and alerting rules query is
one the worker exports.

    monitoring_names.py METRICS_FILE DASHBOARD_JSON RULES_YML...

METRICS_FILE is a real /metrics answer (test_notify writes one). A name
counts as exported when a "# TYPE" line declares it (histograms: also its
_bucket, _sum and _count series). Our metrics start with tq_ or tenant_; any
such name in a query (outside string literals) must be exported, and every
query must name at least one. Prints each problem; exit 1 if any.
"""
import json
import re
import sys

import yaml

NAME = re.compile(r"(?<![A-Za-z0-9_:$])((?:tq|tenant)_[a-z0-9_]+)")


def exported(path):
    names = set()
    for line in open(path, encoding="utf-8"):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            names.add(m.group(1))
            if m.group(2) == "histogram":
                names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


def dashboard_queries(path):
    d = json.load(open(path, encoding="utf-8"))
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append(("panel %r" % p.get("title"), t["expr"]))
            walk(p.get("panels", []))
    walk(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            out.append(("variable %s" % v["name"], q["query"] if isinstance(q, dict) else q))
    return out


def rule_queries(path):
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    return [("rule %s" % (r.get("alert") or r.get("record")), r["expr"])
            for g in doc["groups"] for r in g["rules"]]


def main():
    have = exported(sys.argv[1])
    if not have:
        print("no # TYPE line in %s" % sys.argv[1])
        return 1
    queries = dashboard_queries(sys.argv[2])
    for f in sys.argv[3:]:
        queries += rule_queries(f)
    bad = 0
    for where, expr in queries:
        names = set(NAME.findall(re.sub(r'"[^"]*"', '""', expr)))
        if not names:
            print("%s: its query names none of our metrics: %s" % (where, expr))
            bad += 1
        for n in sorted(names - have):
            print("%s: %s is not exported by the worker" % (where, n))
            bad += 1
    print("%d queries checked, %d problem(s)" % (len(queries), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
