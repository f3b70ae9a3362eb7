#!/usr/bin/env bash
# docker/: there is no Docker engine here, so the image is not built. What is checked:
#   - docker/Dockerfile passes dockerfilelint (npm, offline), and dockerfilelint does reject a
#     bad Dockerfile;
#   - its structure: multi-stage Debian 12, build stage = scripts/install-deps.sh + make build
#     with DOTS_PORTABLE=ON, non-root runtime user, EXPOSE 50051 9464, the entrypoint flags;
#     every file it copies exists;
#   - docker/runtime-packages.sh (which picks the runtime image's packages) on the binaries
#     built here: Debian runtime packages only, all installed, gRPC among them;
#   - docker/compose.yaml parses and is consistent with deploy/ (mounted files exist, Prometheus
#     scrapes the dots-server service's metrics port, Grafana's datasource and dashboard paths);
#   - when SERVER_BIN is given: every flag the Dockerfile, compose.yaml and the Kubernetes
#     ConfigMap pass to dots-server exists in `dots-server --helpfull`.
# Usage: docker_test.sh SOURCE_DIR [SERVER_BIN] [OTHER_BIN...]
set -euo pipefail
src=${1:?usage: docker_test.sh SOURCE_DIR [SERVER_BIN] [OTHER_BIN...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
modules=$(bash "$here/node_tools.sh" "$src")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$modules/.bin/dockerfilelint" "$src/docker/Dockerfile"
printf 'FROM debian\nRUN apt-get update\nRUN apt-get install curl\n' > "$work/Dockerfile"
if "$modules/.bin/dockerfilelint" "$work/Dockerfile" > /dev/null 2>&1; then
  echo "docker_test: dockerfilelint accepted a Dockerfile with known issues" >&2
  exit 1
fi

if [ "$#" -ge 1 ]; then
  bash "$src/docker/runtime-packages.sh" "$@" > "$work/runtime-packages.txt"
  echo "docker_test: runtime packages of $*: $(tr '\n' ' ' < "$work/runtime-packages.txt")"
  "$1" --helpfull > "$work/helpfull.txt" 2>&1 || true
fi

/usr/bin/python3 - "$src" "$work" <<'PY'
import json, os, re, shutil, subprocess, sys
import yaml

src, work = sys.argv[1], sys.argv[2]
errors = []
dockerfile_path = os.path.join(src, "docker/Dockerfile")
lines = []
for raw in open(dockerfile_path).read().replace("\\\n", " ").splitlines():
    if raw.strip() and not raw.lstrip().startswith("#"):
        lines.append(raw.strip())
instr = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
stages = [i for i, (op, _) in enumerate(instr) if op == "FROM"]
if len(stages) < 2:
    errors.append(f"{dockerfile_path}: want a multi-stage build, got {len(stages)} FROM")
for i in stages:
    image = instr[i][1].split()[0]
    if image != "debian:bookworm-slim":
        errors.append(f"{dockerfile_path}: FROM {image}: want debian:bookworm-slim (Debian 12)")
build = instr[stages[0]:stages[-1]]
final = instr[stages[-1]:]
build_runs = " ".join(arg for op, arg in build if op == "RUN")
if "scripts/install-deps.sh" not in build_runs:
    errors.append(f"{dockerfile_path}: the build stage must run scripts/install-deps.sh")
if not re.search(r"make build\b.*CMAKE_FLAGS=-DDOTS_PORTABLE=ON", build_runs):
    errors.append(f"{dockerfile_path}: the build stage must run make build CMAKE_FLAGS=-DDOTS_PORTABLE=ON")
final_runs = " ".join(arg for op, arg in final if op == "RUN")
if re.search(r"-dev\b|build-essential|cmake", final_runs):
    errors.append(f"{dockerfile_path}: the runtime stage installs build tools")
users = [arg for op, arg in final if op == "USER"]
if not users or users[-1].split(":")[0] in ("0", "root"):
    errors.append(f"{dockerfile_path}: the runtime stage must end as a non-root USER")
exposed = {p for op, arg in final if op == "EXPOSE" for p in arg.split()}
if not {"50051", "9464"} <= exposed:
    errors.append(f"{dockerfile_path}: EXPOSE 50051 9464 (got {sorted(exposed)})")
entry = [arg for op, arg in final if op == "ENTRYPOINT"]
entrypoint = json.loads(entry[-1]) if entry else []
want = ["--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9464", "--state_dir=/var/lib/dots"]
if not entrypoint or not entrypoint[0].endswith("/dots-server") or not all(w in entrypoint for w in want):
    errors.append(f"{dockerfile_path}: ENTRYPOINT must be dots-server with {want}, got {entrypoint}")
for op, arg in instr:
    if op == "COPY" and "--from=" not in arg:
        for source in arg.split()[:-1]:
            if source != "." and not os.path.exists(os.path.join(src, source)):
                errors.append(f"{dockerfile_path}: COPY {source}: no such file in the repository")
ignore = os.path.join(src, "docker/Dockerfile.dockerignore")
patterns = open(ignore).read().split()
for p in ("build", "build-*", "tools/node_modules", ".git"):
    if p not in patterns:
        errors.append(f"{ignore}: should exclude {p} from the build context")

# docker/runtime-packages.sh output, when binaries were given.
packages_file = os.path.join(work, "runtime-packages.txt")
if os.path.exists(packages_file):
    packages = open(packages_file).read().split()
    if not any(p.startswith("libgrpc++") for p in packages):
        errors.append(f"runtime-packages.sh: no libgrpc++ package in {packages}")
    for p in packages:
        if p.endswith("-dev"):
            errors.append(f"runtime-packages.sh: {p} is a development package")
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in status.stdout:
            errors.append(f"runtime-packages.sh: {p} is not an installed package")

# compose.yaml
compose_path = os.path.join(src, "docker/compose.yaml")
compose = yaml.safe_load(open(compose_path))
services = compose.get("services", {})
for name in ("dots-server", "prometheus", "grafana"):
    if name not in services:
        errors.append(f"{compose_path}: services.{name} is missing")
compose_dir = os.path.dirname(compose_path)
declared_volumes = set((compose.get("volumes") or {}).keys())
mounts = {}
for name, svc in services.items():
    for v in svc.get("volumes", []):
        source, target = v.split(":")[0], v.split(":")[1]
        if source.startswith((".", "/")):
            path = os.path.normpath(os.path.join(compose_dir, source))
            if not os.path.exists(path):
                errors.append(f"{compose_path}: services.{name}.volumes: {source} does not exist")
            mounts[(name, target)] = path
        elif source not in declared_volumes:
            errors.append(f"{compose_path}: services.{name}.volumes: named volume {source} is not declared")
dots = services.get("dots-server", {})
b = dots.get("build", {})
if not os.path.exists(os.path.normpath(os.path.join(compose_dir, b.get("context", "."), b.get("dockerfile", "Dockerfile")))):
    errors.append(f"{compose_path}: services.dots-server.build does not name docker/Dockerfile")
published = {p.split(":")[-1] for p in dots.get("ports", [])}
if not {"50051", "9464"} <= published:
    errors.append(f"{compose_path}: dots-server must publish 50051 and 9464 (got {sorted(published)})")
if str(dots.get("user", "0")).split(":")[0] in ("0", "root"):
    errors.append(f"{compose_path}: dots-server must run as a non-root user")
# Prometheus gets deploy/prometheus and scrapes dots-server's metrics port.
prom_dir = mounts.get(("prometheus", "/etc/prometheus"))
if prom_dir != os.path.join(src, "deploy/prometheus"):
    errors.append(f"{compose_path}: prometheus must mount deploy/prometheus at /etc/prometheus")
else:
    config = yaml.safe_load(open(os.path.join(prom_dir, "prometheus.yml")))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = [t for sc in jobs.get("dots", {}).get("static_configs", []) for t in sc["targets"]]
    if targets != ["dots-server:9464"]:
        errors.append(f"deploy/prometheus/prometheus.yml: job dots must scrape dots-server:9464, got {targets}")
# Grafana: provisioning directory, datasource URL, dashboard path.
prov = mounts.get(("grafana", "/etc/grafana/provisioning"))
if prov != os.path.join(src, "deploy/grafana/provisioning"):
    errors.append(f"{compose_path}: grafana must mount deploy/grafana/provisioning at /etc/grafana/provisioning")
else:
    ds = yaml.safe_load(open(os.path.join(prov, "datasources/prometheus.yaml")))["datasources"]
    if not any(d["type"] == "prometheus" and d["url"] == "http://prometheus:9090" for d in ds):
        errors.append("deploy/grafana/provisioning/datasources: want a prometheus datasource at http://prometheus:9090")
    providers = yaml.safe_load(open(os.path.join(prov, "dashboards/dots.yaml")))["providers"]
    paths = {p["options"]["path"] for p in providers}
    dash_targets = [t for (svc, t), path in mounts.items()
                    if svc == "grafana" and path == os.path.join(src, "deploy/grafana/dots-dashboard.json")]
    if not dash_targets or os.path.dirname(dash_targets[0]) not in paths:
        errors.append(f"{compose_path}: the dashboard must be mounted under a provisioned dashboards path {sorted(paths)}")

# Flags handed to dots-server exist.
helpfull = os.path.join(work, "helpfull.txt")
if os.path.exists(helpfull):
    known = set(re.findall(r"^\s+--(\w+) \(", open(helpfull).read(), re.M))
    if "listen" not in known:
        errors.append("dots-server --helpfull lists no --listen flag")
    passed = {a for a in entrypoint if a.startswith("--")}
    passed |= {a for a in dots.get("command", []) if a.startswith("--")}
    cm = yaml.safe_load(open(os.path.join(src, "deploy/k8s/configmap.yaml")))
    passed |= {l.strip() for l in cm["data"]["dots.flags"].splitlines() if l.strip()}
    for flag in sorted(passed):
        name = flag[2:].split("=")[0]
        if name not in known:
            errors.append(f"dots-server has no flag --{name} (passed as {flag})")
    print(f"docker_test: {len(passed)} flags passed to dots-server exist")

# compose.cluster.yaml: replicas dots-0..N-1 each on a volume of its own, and the router's config
# is exactly make-config.sh's output for those replicas (the one generator of every router).
cluster_path = os.path.join(src, "docker/compose.cluster.yaml")
cluster = yaml.safe_load(open(cluster_path))
cluster_services = cluster.get("services", {})
replica_names = sorted((n for n in cluster_services if re.fullmatch(r"dots-\d+", n)),
                       key=lambda n: int(n.split("-")[1]))
if replica_names != [f"dots-{i}" for i in range(len(replica_names))] or len(replica_names) < 2:
    errors.append(f"{cluster_path}: want replicas dots-0..dots-N-1 (N >= 2), got {replica_names}")
state_volumes = set()
for name in replica_names:
    svc = cluster_services[name]
    vols = [v for v in svc.get("volumes", []) if v.endswith(":/var/lib/dots")]
    if len(vols) != 1:
        errors.append(f"{cluster_path}: {name} must mount one volume at /var/lib/dots")
    state_volumes.update(v.split(":")[0] for v in vols)
    if svc.get("user", "0").split(":")[0] in ("0", "root"):
        errors.append(f"{cluster_path}: {name} must run as a non-root user")
if len(state_volumes) != len(replica_names):
    errors.append(f"{cluster_path}: every replica needs a state volume of its own")
router_cfg = None
for v in cluster_services.get("router", {}).get("volumes", []):
    source, target = v.split(":")[:2]
    if target == "/usr/local/etc/haproxy/haproxy.cfg":
        router_cfg = os.path.normpath(os.path.join(os.path.dirname(cluster_path), source))
if router_cfg is None or not os.path.exists(router_cfg):
    errors.append(f"{cluster_path}: the router must mount its config at /usr/local/etc/haproxy/haproxy.cfg")
else:
    want = subprocess.run(
        ["bash", os.path.join(src, "deploy/haproxy/make-config.sh"), "--listen", ":50051",
         "--stats", ":8404", "--resolvers"] + [f"{n}:50051" for n in replica_names],
        capture_output=True, text=True, check=True).stdout
    if open(router_cfg).read() != want:
        errors.append(f"{router_cfg}: not make-config.sh's output for {replica_names}; regenerate: "
                      "deploy/haproxy/make-config.sh --listen :50051 --stats :8404 --resolvers "
                      + " ".join(f"{n}:50051" for n in replica_names))
    if shutil.which("haproxy"):
        check = subprocess.run(["haproxy", "-c", "-q", "-f", router_cfg], capture_output=True, text=True)
        if check.returncode != 0:
            errors.append(f"{router_cfg}: haproxy -c refuses it: {check.stderr.strip()}")
print(f"docker_test: compose.cluster.yaml: {len(replica_names)} replicas behind the router")

if errors:
    sys.exit("\n".join(errors))
print("docker_test: Dockerfile and compose.yaml consistent")
PY
echo "docker_test: OK"
