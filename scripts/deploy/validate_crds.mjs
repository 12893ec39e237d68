// Validates custom resources with the @kubernetes-models packages (types and required
// fields of each CRD's OpenAPI schema). Input: a JSON array of objects on stdin.
// Output: one line per object, "ok <kind>/<name>" or "FAIL <kind>/<name>: <reason>";
// exit 1 when any object fails or has no model.
import { readFileSync } from "node:fs";
import { existsSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

const modelsDir = process.argv[2];
if (!modelsDir) {
  console.error("usage: validate_crds.mjs <dir with node_modules> < objects.json");
  process.exit(2);
}

// API group -> npm package of its models.
const PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "keda.sh": "@kubernetes-models/keda",
  "argoproj.io": "@kubernetes-models/argo-cd",
  "external-secrets.io": "@kubernetes-models/external-secrets",
  "cert-manager.io": "@kubernetes-models/cert-manager",
};

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;

for (const obj of objects) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : ["", obj.apiVersion];
  const pkg = PACKAGES[group];
  if (!pkg) {
    console.log(`FAIL ${id}: no model for API group ${JSON.stringify(group)}`);
    failed++;
    continue;
  }
  let Model;
  try {
    // Import the model file itself: the packages' export maps only cover ESM resolution.
    const file = resolve(modelsDir, "node_modules", pkg, group, version, `${obj.kind}.js`);
    if (!existsSync(file)) throw Object.assign(new Error("missing"), { code: "ENOENT" });
    Model = (await import(pathToFileURL(file).href))[obj.kind];
  } catch (err) {
    console.log(`FAIL ${id}: no model ${pkg} ${obj.apiVersion} ${obj.kind} (${err.code ?? err.message})`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok ${id}`);
  } catch (err) {
    console.log(`FAIL ${id}: ${err.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
