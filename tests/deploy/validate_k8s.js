// Validates rendered deploy/k8s manifests offline.
//   - Built-in kinds: against the Kubernetes OpenAPI schemas (npm kubernetes-models, v1.3x).
//   - ServiceMonitor and PrometheusRule (Prometheus Operator CRDs, not in kubernetes-models):
//     the structure the operator needs.
//   - The conventions of the issue: one-replica StatefulSet with a PVC at the server's
//     --state_dir, native gRPC startup/readiness/liveness probes, non-root, read-only root
//     filesystem, resources, a ConfigMap flag file, a Secret reference, Services and a
//     ServiceMonitor that select what they should, a PrometheusRule identical to
//     deploy/prometheus/alerts.yml.
// Every error names the object (kind/name) and the field.
// Usage: NODE_PATH=tools/node_modules node validate_k8s.js RENDERED.yaml SOURCE_DIR
//        NODE_PATH=tools/node_modules node validate_k8s.js --compare A.yaml B.yaml
'use strict';
const fs = require('fs');
const path = require('path');
const util = require('util');
const yaml = require('js-yaml');

const errors = [];
const error = (obj, field, message) =>
  errors.push(`${obj.kind}/${(obj.metadata || {}).name}: ${field}: ${message}`);

function loadAll(file) {
  return yaml.loadAll(fs.readFileSync(file, 'utf8')).filter((d) => d != null);
}

function finish(summary) {
  if (errors.length) {
    process.stderr.write(errors.map((e) => `validate_k8s: ${e}`).join('\n') + '\n');
    process.exit(1);
  }
  console.log(summary);
}

// ---- --compare: two renderings hold the same objects ----
if (process.argv[2] === '--compare') {
  const key = (o) => `${o.apiVersion} ${o.kind} ${o.metadata.name}`;
  const [a, b] = [process.argv[3], process.argv[4]].map((f) => new Map(loadAll(f).map((o) => [key(o), o])));
  for (const [k, o] of a) {
    if (!b.has(k)) errors.push(`${k}: only in ${process.argv[3]}`);
    else if (!util.isDeepStrictEqual(o, b.get(k))) errors.push(`${k}: renderings differ`);
  }
  for (const k of b.keys()) if (!a.has(k)) errors.push(`${k}: only in ${process.argv[4]}`);
  finish(`validate_k8s: kubectl kustomize and render_kustomize.js agree on ${a.size} objects`);
  return;
}

const [renderedFile, src] = process.argv.slice(2);
if (!renderedFile || !src) {
  process.stderr.write('usage: validate_k8s.js RENDERED.yaml SOURCE_DIR\n');
  process.exit(2);
}
const objects = loadAll(renderedFile);

// ---- 1. schemas ----
const CRD_GROUP = 'monitoring.coreos.com/v1';
function modelClass(apiVersion, kind) {
  // kubernetes-models lays its classes out by API version: kubernetes-models/apps/v1 exports
  // StatefulSet, kubernetes-models/v1 exports Service, ...
  let mod;
  try {
    mod = require(`kubernetes-models/${apiVersion}`);
  } catch (e) {
    return null;
  }
  return mod[kind] || null;
}
function schemaErrors(obj) {
  const Model = modelClass(obj.apiVersion, obj.kind);
  if (!Model) return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    return [e.message.split('\n').slice(0, 6).join(' | ')];
  }
}

// The validator must reject broken objects, or passing means nothing.
{
  const sts = objects.find((o) => o.kind === 'StatefulSet');
  const broken = [
    (o) => { o.spec.replicas = 'two'; },
    (o) => { delete o.spec.template.spec.containers[0].ports[0].containerPort; },
    (o) => { o.spec.template.spec.containers[0].startupProbe.grpc.port = 'grpc'; },
  ];
  for (const [i, breakIt] of broken.entries()) {
    if (!sts) break;
    const copy = JSON.parse(JSON.stringify(sts));
    breakIt(copy);
    if (schemaErrors(copy).length === 0) {
      errors.push(`self-test ${i}: kubernetes-models accepted a broken StatefulSet`);
    }
  }
}

const isStringMap = (m) =>
  m != null && typeof m === 'object' && Object.values(m).every((v) => typeof v === 'string');
const DURATION = /^(\d+(ms|s|m|h|d|w|y))+$/;

function checkServiceMonitor(o) {
  const spec = o.spec || {};
  if (!spec.selector || !isStringMap(spec.selector.matchLabels) ||
      !Object.keys(spec.selector.matchLabels).length) {
    error(o, 'spec.selector.matchLabels', 'a non-empty map of strings is required');
  }
  if (!Array.isArray(spec.endpoints) || !spec.endpoints.length) {
    error(o, 'spec.endpoints', 'a non-empty list is required');
    return;
  }
  spec.endpoints.forEach((e, i) => {
    if (typeof e.port !== 'string' || !e.port) error(o, `spec.endpoints[${i}].port`, 'a port name is required');
    if (e.path !== undefined && !/^\//.test(e.path)) error(o, `spec.endpoints[${i}].path`, 'must start with /');
    for (const f of ['interval', 'scrapeTimeout']) {
      if (e[f] !== undefined && !DURATION.test(e[f])) error(o, `spec.endpoints[${i}].${f}`, `"${e[f]}" is not a duration`);
    }
  });
}

function checkPrometheusRule(o) {
  const groups = (o.spec || {}).groups;
  if (!Array.isArray(groups) || !groups.length) {
    error(o, 'spec.groups', 'a non-empty list is required');
    return;
  }
  groups.forEach((g, i) => {
    if (typeof g.name !== 'string' || !g.name) error(o, `spec.groups[${i}].name`, 'required');
    if (!Array.isArray(g.rules) || !g.rules.length) {
      error(o, `spec.groups[${i}].rules`, 'a non-empty list is required');
      return;
    }
    g.rules.forEach((r, j) => {
      const at = `spec.groups[${i}].rules[${j}]`;
      if ((typeof r.alert === 'string') === (typeof r.record === 'string')) error(o, at, 'exactly one of alert and record');
      if (typeof r.expr !== 'string' || !r.expr.trim()) error(o, `${at}.expr`, 'a PromQL string is required');
      if (r.for !== undefined && !DURATION.test(r.for)) error(o, `${at}.for`, `"${r.for}" is not a duration`);
      if (r.labels !== undefined && !isStringMap(r.labels)) error(o, `${at}.labels`, 'a map of strings is required');
      if (r.annotations !== undefined && !isStringMap(r.annotations)) error(o, `${at}.annotations`, 'a map of strings is required');
    });
  });
}

let validated = 0;
for (const o of objects) {
  if (!o.metadata || !o.metadata.name) error(o, 'metadata.name', 'required');
  if (o.apiVersion === CRD_GROUP && o.kind === 'ServiceMonitor') checkServiceMonitor(o);
  else if (o.apiVersion === CRD_GROUP && o.kind === 'PrometheusRule') checkPrometheusRule(o);
  else for (const e of schemaErrors(o)) error(o, 'schema', e);
  validated++;
  if (((o.metadata || {}).labels || {})['app.kubernetes.io/part-of'] !== 'dots') {
    error(o, 'metadata.labels', 'app.kubernetes.io/part-of: dots (kustomization labels) is missing');
  }
}

// ---- 2. the conventions ----
const byKind = (kind) => objects.filter((o) => o.kind === kind);
const required = ['StatefulSet', 'Service', 'ConfigMap', 'ServiceMonitor', 'PrometheusRule'];
for (const kind of required) {
  if (!byKind(kind).length) errors.push(`no ${kind} in the rendering`);
}
const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);

// The image's entrypoint holds the state directory (docker/Dockerfile).
const dockerfile = fs.readFileSync(path.join(src, 'docker/Dockerfile'), 'utf8');
const stateDirMatch = dockerfile.match(/--state_dir=([^"\s]+)/);
if (!stateDirMatch) errors.push('docker/Dockerfile: no --state_dir in the entrypoint');
const stateDir = stateDirMatch ? stateDirMatch[1] : '/var/lib/dots';

const statefulSets = byKind('StatefulSet');
if (statefulSets.length !== 1) errors.push(`want exactly one StatefulSet, got ${statefulSets.length}`);
for (const sts of statefulSets) {
  const spec = sts.spec;
  const pod = spec.template.spec;
  const podLabels = spec.template.metadata.labels;
  if (spec.replicas !== 1) error(sts, 'spec.replicas', `must be 1 (one server owns the state), got ${spec.replicas}`);
  if (!matches(spec.selector.matchLabels, podLabels)) error(sts, 'spec.selector', 'does not select the pod template');
  const governing = byKind('Service').find((s) => s.metadata.name === spec.serviceName);
  if (!governing) error(sts, 'spec.serviceName', `no Service named "${spec.serviceName}"`);
  else if (governing.spec.clusterIP !== 'None') error(sts, 'spec.serviceName', `Service ${spec.serviceName} must be headless`);

  const psc = pod.securityContext || {};
  if (psc.runAsNonRoot !== true) error(sts, 'spec.template.spec.securityContext.runAsNonRoot', 'must be true');
  if (!(psc.runAsUser > 0)) error(sts, 'spec.template.spec.securityContext.runAsUser', 'must be a non-zero uid');
  if (psc.fsGroup === undefined) error(sts, 'spec.template.spec.securityContext.fsGroup', 'needed to write the state volume');

  if (pod.containers.length !== 1) error(sts, 'spec.template.spec.containers', 'want one container');
  const c = pod.containers[0];
  const at = `containers[${c.name}]`;
  const csc = c.securityContext || {};
  if (csc.readOnlyRootFilesystem !== true) error(sts, `${at}.securityContext.readOnlyRootFilesystem`, 'must be true');
  if (csc.allowPrivilegeEscalation !== false) error(sts, `${at}.securityContext.allowPrivilegeEscalation`, 'must be false');
  const res = c.resources || {};
  for (const r of ['cpu', 'memory']) {
    if (!(res.requests || {})[r]) error(sts, `${at}.resources.requests.${r}`, 'required');
  }
  if (!(res.limits || {}).memory) error(sts, `${at}.resources.limits.memory`, 'required');

  const ports = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
  if (ports.grpc !== 50051) error(sts, `${at}.ports`, 'want grpc: 50051');
  if (ports.metrics !== 9464) error(sts, `${at}.ports`, 'want metrics: 9464');

  // Native gRPC probes, each on the gRPC port.
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const p = c[probe];
    if (!p) { error(sts, `${at}.${probe}`, 'required'); continue; }
    if (!p.grpc || p.grpc.port !== 50051) error(sts, `${at}.${probe}.grpc.port`, 'must be a native gRPC probe on 50051');
    if (p.httpGet || p.exec || p.tcpSocket) error(sts, `${at}.${probe}`, 'must use only grpc');
  }
  const seconds = (p) => (p ? (p.periodSeconds || 10) * (p.failureThreshold || 3) : 0);
  if (c.readinessProbe && (c.readinessProbe.grpc || {}).service !== 'dots.v1.Dots') {
    error(sts, `${at}.readinessProbe.grpc.service`, 'must be dots.v1.Dots (NOT_SERVING while restoring or draining)');
  }
  if (seconds(c.startupProbe) < 600) error(sts, `${at}.startupProbe`, `allows ${seconds(c.startupProbe)} s; a restore needs >= 600`);
  if (seconds(c.livenessProbe) < 60) error(sts, `${at}.livenessProbe`, 'too eager (< 60 s of failures before a restart)');

  // State on a PVC at --state_dir.
  const claims = (spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
  const mounts = c.volumeMounts || [];
  const stateMount = mounts.find((m) => m.mountPath === stateDir);
  if (!stateMount) error(sts, `${at}.volumeMounts`, `nothing mounted at the state directory ${stateDir}`);
  else if (!claims.includes(stateMount.name)) error(sts, `${at}.volumeMounts[${stateMount.name}]`, 'the state directory must be a volumeClaimTemplate');
  for (const t of spec.volumeClaimTemplates || []) {
    if (!(t.spec.accessModes || []).includes('ReadWriteOnce')) error(sts, `volumeClaimTemplates[${t.metadata.name}]`, 'want ReadWriteOnce');
  }

  // Volumes by name.
  const volumes = Object.fromEntries((pod.volumes || []).map((v) => [v.name, v]));
  for (const m of mounts) {
    if (!volumes[m.name] && !claims.includes(m.name)) error(sts, `${at}.volumeMounts[${m.name}]`, 'no such volume');
  }
  // The flag file from the ConfigMap.
  const flagfileArg = (c.args || []).find((a) => a.startsWith('--flagfile='));
  let drainSeconds = null;
  if (!flagfileArg) {
    error(sts, `${at}.args`, 'want --flagfile=<file in the ConfigMap volume>');
  } else {
    const flagfile = flagfileArg.slice('--flagfile='.length);
    const mount = mounts.find((m) => path.dirname(flagfile) === m.mountPath);
    const volume = mount && volumes[mount.name];
    const cm = volume && volume.configMap && byKind('ConfigMap').find((x) => x.metadata.name === volume.configMap.name);
    const key = path.basename(flagfile);
    if (!cm) error(sts, `${at}.args`, `${flagfile} is not in a mounted ConfigMap of this base`);
    else if (!(cm.data || {})[key]) error(cm, `data.${key}`, `missing (read by ${flagfileArg})`);
    else {
      cm.data[key].split('\n').filter((l) => l.trim()).forEach((line, i) => {
        if (!/^--[a-z_]+=\S+$/.test(line)) error(cm, `data.${key} line ${i + 1}`, `"${line}" is not --flag=value`);
        const m = line.match(/^--drain_seconds=(\d+)$/);
        if (m) drainSeconds = Number(m[1]);
      });
      if (mount.readOnly !== true) error(sts, `${at}.volumeMounts[${mount.name}]`, 'config should be read-only');
    }
  }
  const grace = pod.terminationGracePeriodSeconds;
  if (drainSeconds === null) error(sts, 'flags', '--drain_seconds is not set in the flag file');
  else if (!(grace > drainSeconds)) error(sts, 'spec.template.spec.terminationGracePeriodSeconds', `${grace} must exceed --drain_seconds=${drainSeconds}`);
  // TLS material and tokens come from a Secret.
  const secretVolume = Object.values(volumes).find((v) => v.secret);
  if (!secretVolume) error(sts, 'spec.template.spec.volumes', 'no Secret reference (TLS, tokens)');
  else {
    const m = mounts.find((x) => x.name === secretVolume.name);
    if (!m || m.readOnly !== true) error(sts, `${at}.volumeMounts[${secretVolume.name}]`, 'the Secret must be mounted read-only');
  }

  // Services select the pod and target its named ports.
  for (const svc of byKind('Service')) {
    if (!matches(svc.spec.selector, podLabels)) error(svc, 'spec.selector', 'does not select the dots pod');
    for (const p of svc.spec.ports) {
      if (typeof p.targetPort === 'string' && ports[p.targetPort] === undefined) {
        error(svc, `spec.ports[${p.name}].targetPort`, `the container has no port named ${p.targetPort}`);
      }
    }
  }
}

for (const sm of byKind('ServiceMonitor')) {
  const selected = byKind('Service').filter((s) => matches(sm.spec.selector.matchLabels, s.metadata.labels));
  if (selected.length !== 1) {
    error(sm, 'spec.selector', `must select exactly one Service, selects ${selected.map((s) => s.metadata.name).join(', ') || 'none'}`);
  } else {
    for (const e of sm.spec.endpoints) {
      if (!selected[0].spec.ports.some((p) => p.name === e.port)) error(sm, `endpoints[${e.port}]`, `Service ${selected[0].metadata.name} has no port ${e.port}`);
    }
    // The alert rules select job="dots"; the operator's job label is the Service's name.
    if (selected[0].metadata.name !== 'dots' && !sm.spec.jobLabel) {
      error(sm, 'spec.selector', 'the scraped Service must be named "dots" (job label of the alert rules)');
    }
  }
}

// The PrometheusRule ships exactly the promtool-tested rules of deploy/prometheus/alerts.yml.
const alerts = yaml.load(fs.readFileSync(path.join(src, 'deploy/prometheus/alerts.yml'), 'utf8'));
const trim = (groups) => JSON.parse(JSON.stringify(groups, (k, v) => (typeof v === 'string' ? v.trim() : v)));
for (const pr of byKind('PrometheusRule')) {
  if (!util.isDeepStrictEqual(trim(pr.spec.groups), trim(alerts.groups))) {
    error(pr, 'spec.groups', 'differs from deploy/prometheus/alerts.yml');
  }
}

finish(`validate_k8s: ${validated} objects valid (${objects.map((o) => o.kind).join(', ')})`);
