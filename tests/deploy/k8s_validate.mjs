// node k8s_validate.mjs SCHEMA_DIR RENDERED.yaml...
// Validates every object of kubectl-kustomize output offline:
//  - built-in kinds against the Kubernetes OpenAPI schemas of npm
//    kubernetes-models (types, formats, required fields);
//  - ScaledObject, TriggerAuthentication (KEDA) and ServiceMonitor (Prometheus
//    Operator) against @kubernetes-models/keda and
//    @kubernetes-models/prometheus-operator (generated from the CRDs) AND
//    against our own JSON schemas (SCHEMA_DIR), which also refuse unknown fields.
// Prints "ok   - ..." / "FAIL - ..." lines; exit 1 on any failure.
// Runs from the npm cache directory the check installed these into.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import Ajv from "ajv";

const [schemaDir, ...files] = process.argv.slice(2);
const builtin = {
  "v1": "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "batch/v1": "kubernetes-models/batch/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "networking.k8s.io/v1": "kubernetes-models/networking.k8s.io/v1",
  "autoscaling/v2": "kubernetes-models/autoscaling/v2",
  "keda.sh/v1alpha1": "@kubernetes-models/keda/keda.sh/v1alpha1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};
const own = {
  "keda.sh/v1alpha1/ScaledObject": "scaledobject.schema.json",
  "keda.sh/v1alpha1/TriggerAuthentication": "triggerauthentication.schema.json",
  "monitoring.coreos.com/v1/ServiceMonitor": "servicemonitor.schema.json",
};
// strictRequired off: "anyOf: [{required: [address]}, ...]" names properties defined one level up.
const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false });
let failed = 0;
const ok = (m) => console.log("ok   - " + m);
const bad = (m) => { failed++; console.log("FAIL - " + m); };

for (const f of files) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(f, "utf8"));
  const name = path.basename(f);
  for (const d of docs) {
    if (d.errors.length) { bad(`${name}: YAML: ${d.errors[0].message}`); continue; }
    const o = d.toJS();
    if (!o) continue;
    const id = `${name}: ${o.kind}/${o.metadata && o.metadata.name}`;
    // kustomize wraps a Secret's long base64 values at 76 columns; the API
    // server's decoder (Go encoding/base64) skips the newlines, the "byte"
    // format check does not.
    if (o.kind === "Secret" && o.data)
      for (const k of Object.keys(o.data)) o.data[k] = String(o.data[k]).replace(/\s+/g, "");
    const mod = builtin[o.apiVersion];
    if (!mod) { bad(`${id}: no schema for apiVersion ${o.apiVersion}`); continue; }
    let Cls;
    try { Cls = (await import(mod))[o.kind]; } catch (e) { Cls = undefined; }
    if (!Cls) { bad(`${id}: no model for ${o.apiVersion} ${o.kind}`); continue; }
    try { new Cls(o).validate(); ok(`${id} (${mod})`); }
    catch (e) { bad(`${id} (${mod}): ${e.message}`); }
    const s = own[`${o.apiVersion}/${o.kind}`];
    if (s) {
      const v = ajv.getSchema(s) || (ajv.addSchema(JSON.parse(fs.readFileSync(path.join(schemaDir, s), "utf8")), s), ajv.getSchema(s));
      if (v(o)) ok(`${id} (${s})`);
      else bad(`${id} (${s}): ${ajv.errorsText(v.errors, { separator: "; " })}`);
    } else if (!o.apiVersion.includes(".k8s.io") && o.apiVersion.includes(".")) {
      bad(`${id}: custom resource without a schema of ours`);
    }
  }
}
process.exit(failed ? 1 : 0);
