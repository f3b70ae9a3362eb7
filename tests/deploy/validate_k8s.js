// Validates rendered deploy/k8s manifests offline.
//   - Built-in kinds: against the Kubernetes OpenAPI schemas (npm kubernetes-models, v1.3x).
//   - ServiceMonitor and PrometheusRule (Prometheus Operator CRDs, not in kubernetes-models):
//     the structure the operator needs.
//   - The conventions of the issues: a StatefulSet of dots-server replicas, each with a PVC at
//     the server's --state_dir, native gRPC startup/readiness/liveness probes, a ConfigMap flag
//     file, a Secret reference, behind a headless Service; the HAProxy router as a Deployment of
//     at least two pods whose ConfigMap holds exactly deploy/haproxy/make-config.sh's output for
//     as many replicas as the StatefulSet has (named by their pod DNS names, in ordinal order),
//     which `haproxy -c` accepts when HAProxy is installed; every pod non-root with a read-only
//     root filesystem and resources; the Service `dots` on the router; Services and
//     ServiceMonitors that select what they should: every replica scraped under job "dots" (what
//     the alert rules select), HAProxy's /metrics under another job; a PrometheusRule identical
//     to deploy/prometheus/alerts.yml.
//   The conventions are also run on broken copies of the rendering (self-tests), each of which
//   they must reject.
// Every error names the object (kind/name) and the field.
// Usage: NODE_PATH=tools/node_modules node validate_k8s.js RENDERED.yaml SOURCE_DIR
//        NODE_PATH=tools/node_modules node validate_k8s.js --compare A.yaml B.yaml
'use strict';
const childProcess = require('child_process');
const fs = require('fs');
const os = require('os');
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
    if (e.relabelings !== undefined && !Array.isArray(e.relabelings)) {
      error(o, `spec.endpoints[${i}].relabelings`, 'must be a list');
    }
    (Array.isArray(e.relabelings) ? e.relabelings : []).forEach((r, j) => {
      const at = `spec.endpoints[${i}].relabelings[${j}]`;
      if (r.sourceLabels !== undefined &&
          (!Array.isArray(r.sourceLabels) || !r.sourceLabels.every((l) => /^[a-zA-Z_][a-zA-Z0-9_]*$/.test(l)))) {
        error(o, `${at}.sourceLabels`, 'must be a list of label names');
      }
      if ((r.action || 'replace') === 'replace' && !/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(r.targetLabel || '')) {
        error(o, `${at}.targetLabel`, 'a label name is required by action replace');
      }
    });
  });
  if (spec.jobLabel !== undefined && (typeof spec.jobLabel !== 'string' || !spec.jobLabel)) {
    error(o, 'spec.jobLabel', 'must be a label name');
  }
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
// The image's entrypoint holds the state directory (docker/Dockerfile).
const dockerfile = fs.readFileSync(path.join(src, 'docker/Dockerfile'), 'utf8');
const stateDirMatch = dockerfile.match(/--state_dir=([^"\s]+)/);
if (!stateDirMatch) errors.push('docker/Dockerfile: no --state_dir in the entrypoint');
const stateDir = stateDirMatch ? stateDirMatch[1] : '/var/lib/dots';
const alerts = yaml.load(fs.readFileSync(path.join(src, 'deploy/prometheus/alerts.yml'), 'utf8'));
const makeConfig = path.join(src, 'deploy/haproxy/make-config.sh');
const haproxy = (childProcess.spawnSync('sh', ['-c', 'command -v haproxy'], {encoding: 'utf8'}).stdout || '').trim() ||
  ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy'].find((f) => fs.existsSync(f)) || null;

const REPLICA_METRICS_PORT = 9464;
const ROUTER_STATS_PORT = 8404;
const GRPC_PORT = 50051;
const HAPROXY_IMAGE = /^([^/@\s]+\/)*haproxy:2\.6([.-][\w.-]*)?(@sha256:[0-9a-f]{64})?$/;
const HAPROXY_DEFAULT_CONFIG = '/usr/local/etc/haproxy/haproxy.cfg';

const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
const selects = (selector, labels) => Object.keys(selector || {}).length > 0 && matches(selector, labels);

// The servers of each backend of an HAProxy config: {backend: [{name, address, id}]}.
function haproxyServers(config) {
  const out = {};
  let section = null;
  for (const line of config.split('\n')) {
    if (/^\S/.test(line)) {
      const m = line.match(/^backend\s+(\S+)/);
      section = m ? m[1] : null;
      if (section) out[section] = [];
    } else if (section) {
      const m = line.match(/^\s+server\s+(\S+)\s+(\S+)(?:.*\sid\s+(\d+))?/);
      if (m) out[section].push({name: m[1], address: m[2], id: m[3] === undefined ? null : Number(m[3])});
    }
  }
  return out;
}

// Both are memoized: the self-tests run the conventions on many copies of one rendering.
const haproxyChecked = new Map();
function haproxyCheck(config) {
  if (!haproxyChecked.has(config)) haproxyChecked.set(config, runHaproxyCheck(config));
  return haproxyChecked.get(config);
}
function runHaproxyCheck(config) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'validate-k8s-'));
  try {
    const file = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(file, config);
    const r = childProcess.spawnSync(haproxy, ['-c', '-f', file], {encoding: 'utf8'});
    if (r.status === 0) return null;
    const lines = `${r.stdout}${r.stderr}`.trim().split('\n');
    const alerts = lines.filter((l) => /ALERT|error/i.test(l));
    return (alerts.length ? alerts : lines).slice(0, 4).join(' | ');
  } finally {
    fs.rmSync(dir, {recursive: true, force: true});
  }
}

const generatedConfigs = new Map();
function makeConfigOutput(args) {
  const key = JSON.stringify(args);
  if (!generatedConfigs.has(key)) {
    generatedConfigs.set(key, childProcess.spawnSync('bash', [makeConfig, ...args], {encoding: 'utf8'}));
  }
  return generatedConfigs.get(key);
}

// Returns the list of convention errors of a rendering.
function conventions(objects) {
  const errs = [];
  const error = (obj, field, message) =>
    errs.push(`${obj.kind}/${(obj.metadata || {}).name}: ${field}: ${message}`);
  const byKind = (kind) => objects.filter((o) => o.kind === kind);
  for (const kind of ['StatefulSet', 'Deployment', 'Service', 'ConfigMap', 'ServiceMonitor', 'PrometheusRule']) {
    if (!byKind(kind).length) errs.push(`no ${kind} in the rendering`);
  }
  const workloads = [...byKind('StatefulSet'), ...byKind('Deployment')];
  const podLabels = (w) => w.spec.template.metadata.labels;
  const containerPorts = (w) => Object.fromEntries(
    w.spec.template.spec.containers.flatMap((c) => (c.ports || []).map((p) => [p.name, p.containerPort])));
  const volumesOf = (w) => Object.fromEntries((w.spec.template.spec.volumes || []).map((v) => [v.name, v]));

  // Every pod: non-root, read-only root filesystem, no privilege escalation, resources.
  function checkPod(w) {
    const pod = w.spec.template.spec;
    if (!matches(w.spec.selector.matchLabels, podLabels(w))) error(w, 'spec.selector', 'does not select the pod template');
    for (const v of workloads) {
      if (v !== w && selects(w.spec.selector.matchLabels, podLabels(v))) {
        error(w, 'spec.selector', `also selects the pods of ${v.kind}/${v.metadata.name}`);
      }
    }
    const psc = pod.securityContext || {};
    if (psc.runAsNonRoot !== true) error(w, 'spec.template.spec.securityContext.runAsNonRoot', 'must be true');
    if (!(psc.runAsUser > 0)) error(w, 'spec.template.spec.securityContext.runAsUser', 'must be a non-zero uid');
    if (pod.containers.length !== 1) error(w, 'spec.template.spec.containers', 'want one container');
    for (const c of pod.containers) {
      const at = `containers[${c.name}]`;
      const csc = c.securityContext || {};
      if (csc.readOnlyRootFilesystem !== true) error(w, `${at}.securityContext.readOnlyRootFilesystem`, 'must be true');
      if (csc.allowPrivilegeEscalation !== false) error(w, `${at}.securityContext.allowPrivilegeEscalation`, 'must be false');
      if (!((csc.capabilities || {}).drop || []).includes('ALL')) error(w, `${at}.securityContext.capabilities.drop`, 'must include ALL');
      const res = c.resources || {};
      for (const r of ['cpu', 'memory']) {
        if (!(res.requests || {})[r]) error(w, `${at}.resources.requests.${r}`, 'required');
      }
      if (!(res.limits || {}).memory) error(w, `${at}.resources.limits.memory`, 'required');
      const volumes = volumesOf(w);
      const claims = (w.spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
      for (const m of c.volumeMounts || []) {
        if (!volumes[m.name] && !claims.includes(m.name)) error(w, `${at}.volumeMounts[${m.name}]`, 'no such volume');
      }
    }
  }

  // ---- the dots-server replicas ----
  const statefulSets = byKind('StatefulSet');
  if (statefulSets.length !== 1) errs.push(`want exactly one StatefulSet, got ${statefulSets.length}`);
  const sts = statefulSets[0];
  for (const s of statefulSets) {
    const spec = s.spec;
    const pod = spec.template.spec;
    checkPod(s);
    if (!Number.isInteger(spec.replicas) || spec.replicas < 1) error(s, 'spec.replicas', `must be a positive integer, got ${spec.replicas}`);
    if (spec.podManagementPolicy !== 'Parallel') {
      error(s, 'spec.podManagementPolicy', 'must be Parallel (replicas are independent: one restoring must not hold back the others)');
    }
    const governing = byKind('Service').find((x) => x.metadata.name === spec.serviceName);
    if (!governing) error(s, 'spec.serviceName', `no Service named "${spec.serviceName}"`);
    else {
      if (governing.spec.clusterIP !== 'None') error(s, 'spec.serviceName', `Service ${spec.serviceName} must be headless`);
      if (!selects(governing.spec.selector, podLabels(s))) error(s, 'spec.serviceName', `Service ${spec.serviceName} does not select the replicas`);
    }
    if ((pod.securityContext || {}).fsGroup === undefined) error(s, 'spec.template.spec.securityContext.fsGroup', 'needed to write the state volume');

    const c = pod.containers[0];
    const at = `containers[${c.name}]`;
    const ports = containerPorts(s);
    if (ports.grpc !== GRPC_PORT) error(s, `${at}.ports`, `want grpc: ${GRPC_PORT}`);
    if (ports.metrics !== REPLICA_METRICS_PORT) error(s, `${at}.ports`, `want metrics: ${REPLICA_METRICS_PORT}`);

    // Native gRPC probes, each on the gRPC port.
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const p = c[probe];
      if (!p) { error(s, `${at}.${probe}`, 'required'); continue; }
      if (!p.grpc || p.grpc.port !== GRPC_PORT) error(s, `${at}.${probe}.grpc.port`, `must be a native gRPC probe on ${GRPC_PORT}`);
      if (p.httpGet || p.exec || p.tcpSocket) error(s, `${at}.${probe}`, 'must use only grpc');
    }
    const seconds = (p) => (p ? (p.periodSeconds || 10) * (p.failureThreshold || 3) : 0);
    if (c.readinessProbe && (c.readinessProbe.grpc || {}).service !== 'dots.v1.Dots') {
      error(s, `${at}.readinessProbe.grpc.service`, 'must be dots.v1.Dots (NOT_SERVING while restoring or draining)');
    }
    if (seconds(c.startupProbe) < 600) error(s, `${at}.startupProbe`, `allows ${seconds(c.startupProbe)} s; a restore needs >= 600`);
    if (seconds(c.livenessProbe) < 60) error(s, `${at}.livenessProbe`, 'too eager (< 60 s of failures before a restart)');

    // State on a PVC at --state_dir: one volume per replica.
    const claims = (spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
    const mounts = c.volumeMounts || [];
    const stateMount = mounts.find((m) => m.mountPath === stateDir);
    if (!stateMount) error(s, `${at}.volumeMounts`, `nothing mounted at the state directory ${stateDir}`);
    else if (!claims.includes(stateMount.name)) error(s, `${at}.volumeMounts[${stateMount.name}]`, 'the state directory must be a volumeClaimTemplate (a PVC per replica)');
    for (const t of spec.volumeClaimTemplates || []) {
      if (!(t.spec.accessModes || []).includes('ReadWriteOnce')) error(s, `volumeClaimTemplates[${t.metadata.name}]`, 'want ReadWriteOnce');
    }

    // The flag file from the ConfigMap.
    const volumes = volumesOf(s);
    const flagfileArg = (c.args || []).find((a) => a.startsWith('--flagfile='));
    let drainSeconds = null;
    if (!flagfileArg) {
      error(s, `${at}.args`, 'want --flagfile=<file in the ConfigMap volume>');
    } else {
      const flagfile = flagfileArg.slice('--flagfile='.length);
      const mount = mounts.find((m) => path.dirname(flagfile) === m.mountPath);
      const volume = mount && volumes[mount.name];
      const cm = volume && volume.configMap && byKind('ConfigMap').find((x) => x.metadata.name === volume.configMap.name);
      const key = path.basename(flagfile);
      if (!cm) error(s, `${at}.args`, `${flagfile} is not in a mounted ConfigMap of this base`);
      else if (!(cm.data || {})[key]) error(cm, `data.${key}`, `missing (read by ${flagfileArg})`);
      else {
        cm.data[key].split('\n').filter((l) => l.trim()).forEach((line, i) => {
          if (!/^--[a-z_]+=\S+$/.test(line)) error(cm, `data.${key} line ${i + 1}`, `"${line}" is not --flag=value`);
          const m = line.match(/^--drain_seconds=(\d+)$/);
          if (m) drainSeconds = Number(m[1]);
        });
        if (mount.readOnly !== true) error(s, `${at}.volumeMounts[${mount.name}]`, 'config should be read-only');
      }
    }
    const grace = pod.terminationGracePeriodSeconds;
    if (drainSeconds === null) error(s, 'flags', '--drain_seconds is not set in the flag file');
    else if (!(grace > drainSeconds)) error(s, 'spec.template.spec.terminationGracePeriodSeconds', `${grace} must exceed --drain_seconds=${drainSeconds}`);
    // TLS material and tokens come from a Secret.
    const secretVolume = Object.values(volumes).find((v) => v.secret);
    if (!secretVolume) error(s, 'spec.template.spec.volumes', 'no Secret reference (TLS, tokens)');
    else {
      const m = mounts.find((x) => x.name === secretVolume.name);
      if (!m || m.readOnly !== true) error(s, `${at}.volumeMounts[${secretVolume.name}]`, 'the Secret must be mounted read-only');
    }
  }

  // ---- the HAProxy router ----
  const deployments = byKind('Deployment');
  if (deployments.length !== 1) errs.push(`want exactly one Deployment (the HAProxy router), got ${deployments.length}`);
  const router = deployments[0];
  let routerConfig = null;  // {cm, key, text}
  for (const d of deployments) {
    checkPod(d);
    if (!(d.spec.replicas >= 2)) error(d, 'spec.replicas', `want at least 2 router pods (one may fail or roll), got ${d.spec.replicas}`);
    const c = d.spec.template.spec.containers[0];
    const at = `containers[${c.name}]`;
    if (!HAPROXY_IMAGE.test(c.image || '')) error(d, `${at}.image`, `want haproxy:2.6 (the config is written for HAProxy 2.6), got ${c.image}`);
    const ports = containerPorts(d);
    if (ports.grpc !== GRPC_PORT) error(d, `${at}.ports`, `want grpc: ${GRPC_PORT}`);
    if (ports.stats !== ROUTER_STATS_PORT) error(d, `${at}.ports`, `want stats: ${ROUTER_STATS_PORT}`);
    const portNumber = (p) => (typeof p === 'string' ? ports[p] : p);
    for (const probe of ['readinessProbe', 'livenessProbe']) {
      const p = c[probe];
      if (!p) { error(d, `${at}.${probe}`, 'required'); continue; }
      const handler = p.tcpSocket || p.httpGet;
      if (!handler || p.exec || p.grpc) { error(d, `${at}.${probe}`, 'want a tcpSocket or httpGet probe'); continue; }
      const number = portNumber(handler.port);
      if (!Object.values(ports).includes(number)) error(d, `${at}.${probe}.port`, `${handler.port} is not a port of the container`);
      // The stats frontend answers /stats and /metrics only (make-config.sh).
      if (p.httpGet && number === ROUTER_STATS_PORT && !['/stats', '/metrics'].includes(p.httpGet.path)) {
        error(d, `${at}.${probe}.httpGet.path`, `HAProxy's stats port serves /stats and /metrics, not ${p.httpGet.path}`);
      }
    }
    // The config file: -f FILE (the image's default otherwise), in a mounted ConfigMap.
    const args = c.args || [];
    const f = args.indexOf('-f');
    const file = f >= 0 ? args[f + 1] : HAPROXY_DEFAULT_CONFIG;
    const mount = (c.volumeMounts || []).find((m) => m.mountPath === path.dirname(file));
    const volume = mount && volumesOf(d)[mount.name];
    const cm = volume && volume.configMap && byKind('ConfigMap').find((x) => x.metadata.name === volume.configMap.name);
    const key = path.basename(file);
    if (!cm) error(d, `${at}.volumeMounts`, `${file} is not in a mounted ConfigMap of this base`);
    else if (typeof (cm.data || {})[key] !== 'string') error(cm, `data.${key}`, `missing (HAProxy reads ${file})`);
    else {
      if (mount.readOnly !== true) error(d, `${at}.volumeMounts[${mount.name}]`, 'config should be read-only');
      routerConfig = {cm, key, text: cm.data[key]};
    }
  }
  for (const pdb of byKind('PodDisruptionBudget')) {
    if (!workloads.some((w) => selects(pdb.spec.selector.matchLabels, podLabels(w)))) error(pdb, 'spec.selector', 'selects no pods of this base');
  }

  // The router's config lists every replica by its pod DNS name, in ordinal order with id i+1, and
  // is exactly what make-config.sh writes for them.
  if (routerConfig && sts && router && !sts.metadata.namespace) {
    error(sts, 'metadata.namespace', 'required: the router reaches the replicas by DNS names that contain the namespace');
  }
  if (routerConfig && sts && router && sts.metadata.namespace) {
    const {cm, key, text} = routerConfig;
    const field = `data.${key}`;
    const ns = sts.metadata.namespace;
    const servers = haproxyServers(text);
    const headless = `${sts.spec.serviceName}.${ns}.svc`;
    const first = ((servers.runs || [])[0] || {}).address || '';
    const domainMatch = first.startsWith(`${sts.metadata.name}-0.${headless}.`) &&
      first.slice(`${sts.metadata.name}-0.${headless}.`.length).match(/^([a-z0-9.-]+):\d+$/);
    const domain = domainMatch ? domainMatch[1] : 'cluster.local';
    const n = sts.spec.replicas;
    const want = Array.from({length: n}, (_, i) => ({
      name: `dots-${i}`, address: `${sts.metadata.name}-${i}.${headless}.${domain}:${GRPC_PORT}`, id: i + 1}));
    for (const backend of ['runs', 'any']) {
      const got = servers[backend];
      if (!got) { error(cm, field, `no backend ${backend}`); continue; }
      if (got.length !== n) {
        error(cm, field, `backend ${backend} lists ${got.length} servers, the StatefulSet ${sts.metadata.name} has replicas: ${n}`);
      }
      got.forEach((s, i) => {
        if (i < n && !util.isDeepStrictEqual(s, want[i])) {
          error(cm, field, `backend ${backend}: server ${i} is "${s.name} ${s.address} id ${s.id}", want "${want[i].name} ${want[i].address} id ${want[i].id}" (pod ${sts.metadata.name}-${i})`);
        }
      });
    }
    const generated = makeConfigOutput(['--listen', `:${GRPC_PORT}`, '--stats', `:${ROUTER_STATS_PORT}`,
      '--resolvers', ...want.map((w) => w.address)]);
    if (generated.status !== 0) errs.push(`deploy/haproxy/make-config.sh failed: ${generated.stderr}`);
    else if (generated.stdout !== text) {
      const a = text.split('\n');
      const b = generated.stdout.split('\n');
      let i = 0;
      while (i < Math.max(a.length, b.length) && a[i] === b[i]) i++;
      error(cm, field, `is not deploy/haproxy/make-config.sh's output for the ${n} replicas (regenerate: ` +
        `deploy/haproxy/make-k8s-configmap.sh ${n} ${ns}); line ${i + 1}: got ${JSON.stringify(a[i])}, want ${JSON.stringify(b[i])}`);
    }
    if (haproxy) {
      const problem = haproxyCheck(text);
      if (problem) error(cm, field, `haproxy -c rejects it: ${problem}`);
    }
  }

  // ---- Services ----
  for (const svc of byKind('Service')) {
    const selected = workloads.filter((w) => selects(svc.spec.selector, podLabels(w)));
    if (selected.length !== 1) {
      error(svc, 'spec.selector', `must select the pods of exactly one workload, selects ${selected.map((w) => `${w.kind}/${w.metadata.name}`).join(', ') || 'none'}`);
      continue;
    }
    const ports = containerPorts(selected[0]);
    for (const p of svc.spec.ports) {
      if (typeof p.targetPort === 'string' && ports[p.targetPort] === undefined) {
        error(svc, `spec.ports[${p.name}].targetPort`, `${selected[0].kind}/${selected[0].metadata.name} has no port named ${p.targetPort}`);
      }
    }
  }
  // Trainers dial the Service dots: the router, never the replicas directly.
  const api = byKind('Service').find((x) => x.metadata.name === 'dots');
  if (!api) errs.push('no Service "dots" (what trainers dial)');
  else {
    if (!router || !selects(api.spec.selector, podLabels(router))) {
      error(api, 'spec.selector', 'must select the HAProxy router (a run lives on one replica; only the router knows which)');
    }
    const grpc = (api.spec.ports || []).find((p) => p.port === GRPC_PORT);
    if (!grpc || grpc.targetPort !== 'grpc') error(api, 'spec.ports', `want port ${GRPC_PORT} to the router's grpc port`);
  }

  // ---- ServiceMonitors: what Prometheus scrapes, and under which job ----
  const scraped = [];  // {sm, workload, port, path, job}
  for (const sm of byKind('ServiceMonitor')) {
    const selected = byKind('Service').filter((s) => selects(sm.spec.selector.matchLabels, s.metadata.labels));
    if (selected.length !== 1) {
      error(sm, 'spec.selector', `must select exactly one Service, selects ${selected.map((s) => s.metadata.name).join(', ') || 'none'}`);
      continue;
    }
    const svc = selected[0];
    // The operator's job label: the Service's label named by jobLabel, else the Service's name.
    const job = (sm.spec.jobLabel && (svc.metadata.labels || {})[sm.spec.jobLabel]) || svc.metadata.name;
    const workload = workloads.find((w) => selects(svc.spec.selector, podLabels(w)));
    for (const e of sm.spec.endpoints) {
      const port = svc.spec.ports.find((p) => p.name === e.port);
      if (!port) { error(sm, `endpoints[${e.port}]`, `Service ${svc.metadata.name} has no port ${e.port}`); continue; }
      if (!workload) continue;
      const target = typeof port.targetPort === 'string' ? containerPorts(workload)[port.targetPort] : (port.targetPort || port.port);
      scraped.push({sm, workload, port: target, path: e.path || '/metrics', job});
    }
  }
  const replicaScrapes = scraped.filter((x) => x.workload === sts && x.port === REPLICA_METRICS_PORT);
  if (sts && !replicaScrapes.length) errs.push(`no ServiceMonitor scrapes the replicas' metrics port ${REPLICA_METRICS_PORT}`);
  for (const x of replicaScrapes) {
    if (x.job !== 'dots') error(x.sm, 'spec.jobLabel', `scrapes the replicas as job "${x.job}"; the alert rules select job="dots"`);
    if (x.path !== '/metrics') error(x.sm, 'spec.endpoints.path', 'dots-server serves /metrics');
  }
  for (const x of scraped) {
    if (x.job === 'dots' && x.workload !== sts) {
      error(x.sm, 'spec.selector', `scrapes ${x.workload.kind}/${x.workload.metadata.name} as job "dots", which is the replicas' (DotsServerDown counts up{job="dots"})`);
    }
  }
  if (router && !scraped.some((x) => x.workload === router && x.port === ROUTER_STATS_PORT && x.path === '/metrics')) {
    errs.push(`no ServiceMonitor scrapes HAProxy's /metrics on the router's stats port ${ROUTER_STATS_PORT}`);
  }

  // The PrometheusRule ships exactly the promtool-tested rules of deploy/prometheus/alerts.yml.
  const trim = (groups) => JSON.parse(JSON.stringify(groups, (k, v) => (typeof v === 'string' ? v.trim() : v)));
  for (const pr of byKind('PrometheusRule')) {
    if (!util.isDeepStrictEqual(trim(pr.spec.groups), trim(alerts.groups))) {
      error(pr, 'spec.groups', 'differs from deploy/prometheus/alerts.yml');
    }
  }
  return errs;
}

errors.push(...conventions(objects));

// The conventions must reject broken renderings, or passing means nothing: each case breaks one
// thing in a copy of this rendering and names what the error must mention.
if (!errors.length) {
  const find = (objs, kind, name) => objs.find((o) => o.kind === kind && (!name || o.metadata.name === name));
  const routerCm = (objs) => {
    const d = find(objs, 'Deployment');
    const v = d.spec.template.spec.volumes.find((x) => x.configMap);
    return find(objs, 'ConfigMap', v.configMap.name);
  };
  const cases = [
    ['StatefulSet scaled without the router', /lists \d+ servers, the StatefulSet dots has replicas/, (o) => { find(o, 'StatefulSet').spec.replicas += 1; }],
    ['replicas in another order', /server 1 is/, (o) => {
      const cm = routerCm(o);
      cm.data['haproxy.cfg'] = cm.data['haproxy.cfg'].replace(/(server dots-)0( \S+ id )1/, '$1X$2Y').replace(/(server dots-)1( \S+ id )2/, '$10$21').replace(/(server dots-)X( \S+ id )Y/, '$11$22');
    }],
    ['router config for another namespace', /want "dots-0 /, (o) => {
      const cm = routerCm(o);
      cm.data['haproxy.cfg'] = cm.data['haproxy.cfg'].replace(/\.dots-headless\.[a-z0-9-]+\.svc/g, '.dots-headless.elsewhere.svc');
    }],
    ['router config edited by hand', /make-config\.sh's output/, (o) => {
      const cm = routerCm(o);
      cm.data['haproxy.cfg'] = cm.data['haproxy.cfg'].replace('timeout server 1h', 'timeout server 1m');
    }],
    ['StatefulSet without a namespace', /metadata\.namespace/, (o) => { delete find(o, 'StatefulSet').metadata.namespace; }],
    ['OrderedReady replicas', /podManagementPolicy/, (o) => { find(o, 'StatefulSet').spec.podManagementPolicy = 'OrderedReady'; }],
    ['one router pod', /at least 2 router pods/, (o) => { find(o, 'Deployment').spec.replicas = 1; }],
    ['router as root', /runAsNonRoot|runAsUser/, (o) => {
      Object.assign(find(o, 'Deployment').spec.template.spec.securityContext, {runAsNonRoot: false, runAsUser: 0});
    }],
    ['router with a writable root filesystem', /readOnlyRootFilesystem/, (o) => {
      find(o, 'Deployment').spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem = false;
    }],
    ['router of another HAProxy', /want haproxy:2\.6/, (o) => { find(o, 'Deployment').spec.template.spec.containers[0].image = 'haproxy:3.0'; }],
    ['router probe on a path HAProxy does not serve', /serves \/stats and \/metrics|not a port|want a tcpSocket or httpGet/, (o) => {
      const c = find(o, 'Deployment').spec.template.spec.containers[0];
      c.livenessProbe = {httpGet: {path: '/healthz', port: 'stats'}};
    }],
    ['trainers sent to the replicas directly', /must select the HAProxy router/, (o) => {
      find(o, 'Service', 'dots').spec.selector = Object.assign({}, find(o, 'StatefulSet').spec.selector.matchLabels);
    }],
    ['replicas scraped under another job', /job "dots-metrics"|job="dots"/, (o) => {
      for (const sm of o.filter((x) => x.kind === 'ServiceMonitor')) delete sm.spec.jobLabel;
    }],
    ['router scraped as job dots', /which is the replicas'/, (o) => {
      for (const sm of o.filter((x) => x.kind === 'ServiceMonitor')) sm.spec.jobLabel = 'app.kubernetes.io/part-of';
    }],
    ['HAProxy not scraped', /HAProxy's \/metrics/, (o) => {
      for (const sm of o.filter((x) => x.kind === 'ServiceMonitor' && x.spec.endpoints.some((e) => e.port === 'stats'))) {
        o.splice(o.indexOf(sm), 1);
      }
    }],
  ];
  if (haproxy) {
    cases.push(['a config HAProxy rejects', /haproxy -c rejects/, (o) => {
      const cm = routerCm(o);
      cm.data['haproxy.cfg'] = cm.data['haproxy.cfg'].replace('balance hdr(x-dots-run)', 'balance hdr(x-dots-run) bogus');
    }]);
  }
  for (const [name, want, breakIt] of cases) {
    const copy = JSON.parse(JSON.stringify(objects));
    try {
      breakIt(copy);
    } catch (e) {
      errors.push(`self-test "${name}": could not break the rendering: ${e.message}`);
      continue;
    }
    let got;
    try {
      got = conventions(copy);
    } catch (e) {
      got = [`threw ${e.message}`];
    }
    if (!got.some((e) => want.test(e))) {
      errors.push(`self-test "${name}": the conventions did not reject it as ${want} (got: ${got.join('; ') || 'no error'})`);
    }
  }
  console.log(`validate_k8s: ${cases.length} broken renderings rejected` +
    (haproxy ? `; haproxy -c (${haproxy}) accepts the router's config` : '; haproxy not installed: the router\'s config was not checked by HAProxy'));
}

finish(`validate_k8s: ${validated} objects valid (${objects.map((o) => o.kind).join(', ')})`);
