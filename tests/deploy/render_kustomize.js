// Renders a kustomize base without kubectl, for the subset deploy/k8s uses: `resources` (plain
// files), `labels` (pairs added to every object's metadata.labels; includeSelectors and
// includeTemplates must be false or absent) and `namespace`. Anything else in the
// kustomization is an error naming the field, so the base cannot outgrow this renderer
// unnoticed. Writes a multi-document YAML stream to stdout.
// Usage: NODE_PATH=tools/node_modules node render_kustomize.js DIR
'use strict';
const fs = require('fs');
const path = require('path');
const yaml = require('js-yaml');

function fail(message) {
  process.stderr.write(`render_kustomize: ${message}\n`);
  process.exit(1);
}

const dir = process.argv[2];
if (!dir) fail('usage: render_kustomize.js DIR');
const kfile = path.join(dir, 'kustomization.yaml');
const k = yaml.load(fs.readFileSync(kfile, 'utf8'));
const known = new Set(['apiVersion', 'kind', 'resources', 'labels', 'namespace']);
for (const key of Object.keys(k)) {
  if (!known.has(key)) fail(`${kfile}: field "${key}" is not supported by this renderer`);
}
const labels = {};
for (const [i, entry] of (k.labels || []).entries()) {
  if (entry.includeSelectors || entry.includeTemplates) {
    fail(`${kfile}: labels[${i}]: includeSelectors/includeTemplates are not supported`);
  }
  Object.assign(labels, entry.pairs || {});
}
const objects = [];
for (const resource of k.resources || []) {
  const file = path.join(dir, resource);
  if (!fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    fail(`${kfile}: resource "${resource}" is not a file`);
  }
  for (const doc of yaml.loadAll(fs.readFileSync(file, 'utf8'))) {
    if (doc == null) continue;
    doc.metadata = doc.metadata || {};
    doc.metadata.labels = Object.assign({}, doc.metadata.labels || {}, labels);
    if (k.namespace) doc.metadata.namespace = k.namespace;
    objects.push(doc);
  }
}
process.stdout.write(objects.map((o) => yaml.dump(o, {lineWidth: -1})).join('---\n'));
