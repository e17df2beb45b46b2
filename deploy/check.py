#!/usr/bin/env python3
"""Offline checks of the container image recipe and the Kubernetes manifests.

    python deploy/check.py [--repo DIR] [--kubernetes DIR] [--dockerfile FILE]
                           [--no-hadolint] [--write-configs DIR]

Run in $OSPREY_CACHE/venv-deploy (`make deploy-check`). No cluster, no network:
- every manifest against Kubernetes' own JSON schemas, strict (unknown fields
  are errors), for the oldest and the newest version we promise (kubernetes-validate);
- what the schemas cannot see: selectors that select, ports and ConfigMaps and
  Secrets that exist, probes on /readyz and /healthz, the pod security settings,
  a GPU request on GPU nodes, an HPA on a metric osprey exports, the gateway's
  pool naming the nodes' headless Service, config paths the image holds;
- the Dockerfile (dockerfile-parse, then hadolint): multi-stage, the build
  stage on the workspace's Rust, a non-root numeric USER, no build tools in the
  final stage, and every file `osprey serve` reads copied in.
Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import functools
import io
import posixpath
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import yaml
from dockerfile_parse import DockerfileParser

# The oldest Kubernetes the manifests promise to work on, and the newest the
# pinned kubernetes-validate knows.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
# Secrets the operator creates (README.md), not shipped in the manifests.
EXTERNAL_SECRETS = {"osprey-gateway-tls"}
NAMESPACE = "osprey"
# What a build stage installs and the runtime stage must not.
BUILD_TOOLS = {"build-essential", "gcc", "g++", "clang", "make", "cmake", "pkg-config", "git", "curl",
               "wget", "python3", "python3-pip", "python3-venv", "npm", "nodejs", "cargo", "rustc"}
RUNTIME_PACKAGES = {"ffmpeg", "ca-certificates"}
KUSTOMIZATION = "kustomization.yaml"
# kubernetes-validate re-reads its multi-megabyte definitions for every object:
# read each schema file once per process (the check runs inside `make test`).
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)


class Problems:
    def __init__(self):
        self.lines: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.lines.append(f"{where}: {what}")


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------

class Image:
    """What the final stage puts where: exact files and whole directories."""

    def __init__(self):
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self.env: dict[str, str] = {}
        self.uid: int | None = None
        self.ports: set[int] = set()

    def holds(self, path: str) -> bool:
        path = posixpath.normpath(path)
        return path in self.files or any(path.startswith(d.rstrip("/") + "/") for d in self.dirs)


def stages(parser: DockerfileParser) -> list[list[dict]]:
    out: list[list[dict]] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def rust_version(repo: Path) -> str:
    with open(repo / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["rust-version"]


def apt_packages(run: str) -> set[str]:
    pkgs: set[str] = set()
    for m in re.finditer(r"apt-get\s+install\s+([^&;|]*)", run):
        pkgs |= {w for w in m.group(1).split() if not w.startswith("-") and w != "\\"}
    return pkgs


def check_dockerfile(text: str, repo: Path, p: Problems) -> Image:
    where = "Dockerfile"
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    image = Image()
    st = stages(parser)
    if len(st) < 2:
        p.add(where, f"{len(st)} stage(s): want a build stage and a slim runtime stage (multi-stage)")
        return image
    build, final = st[0], st[-1]

    want_rust = rust_version(repo)
    base = build[0]["value"].split()[0]
    if not re.fullmatch(rf"rust:{re.escape(want_rust)}(\.\d+)?-bookworm(@sha256:[0-9a-f]{{64}})?", base):
        p.add(where, f"build stage FROM {base}: want rust:{want_rust}-bookworm (rust-version in Cargo.toml)")
    build_runs = " ".join(i["value"] for s in st[:-1] for i in s if i["instruction"] == "RUN")
    for step in ["rustup target add wasm32-wasip2", "make plugins", "cargo build --release", "-p osprey",
                 "python3 models/fetch.py"]:
        if step not in build_runs:
            p.add(where, f"the build stages never run `{step}`")

    final_base = final[0]["value"].split()[0]
    if not final_base.startswith("debian:bookworm-slim"):
        p.add(where, f"final stage FROM {final_base}: want debian:bookworm-slim")
    users = [i["value"].strip() for i in final if i["instruction"] == "USER"]
    if not users:
        p.add(where, "final stage has no USER: it would run as root")
    else:
        uid = users[-1].split(":")[0]
        if not uid.isdigit():
            p.add(where, f"final stage USER {users[-1]}: use a numeric UID (runAsNonRoot can only verify numbers)")
        elif int(uid) == 0:
            p.add(where, "final stage USER is root (UID 0)")
        else:
            image.uid = int(uid)

    for ins in final:
        kind, value = ins["instruction"], ins["value"]
        if kind == "RUN":
            pkgs = apt_packages(value)
            for tool in sorted(pkgs & BUILD_TOOLS):
                p.add(where, f"line {ins['startline'] + 1}: final stage installs build tool '{tool}'")
            image.files |= {f"package:{x}" for x in pkgs}
        elif kind in ("COPY", "ADD"):
            words = [w for w in value.split() if not w.startswith("--")]
            sources, dest = words[:-1], words[-1]
            from_build = "--from=" in value
            for src in sources:
                if from_build and re.match(r"/usr/local/(cargo|rustup)|/cache/venv|/root/\.cargo", src):
                    p.add(where, f"line {ins['startline'] + 1}: final stage copies the toolchain or venv {src}")
            if dest.endswith("/"):
                for src in sources:
                    if src.endswith("/"):
                        image.dirs.add(posixpath.normpath(dest))
                    else:
                        image.files.add(posixpath.join(dest, posixpath.basename(src)))
            else:
                image.files.add(posixpath.normpath(dest))
        elif kind == "ENV":
            for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', value):
                image.env[m.group(1)] = m.group(2).strip('"')
        elif kind == "EXPOSE":
            image.ports |= {int(x.split("/")[0]) for x in value.split()}

    missing_pkgs = RUNTIME_PACKAGES - {f[len("package:"):] for f in image.files if f.startswith("package:")}
    for pkg in sorted(missing_pkgs):
        p.add(where, f"final stage does not install {pkg} (videos need ffmpeg; outbound TLS ca-certificates)")
    if not image.holds("/usr/local/bin/osprey"):
        p.add(where, "final stage has no /usr/local/bin/osprey")
    ort = image.env.get("ORT_DYLIB_PATH")
    if not ort:
        p.add(where, "final stage sets no ORT_DYLIB_PATH (the binary loads ONNX Runtime from it)")
    elif not image.holds(ort):
        p.add(where, f"ORT_DYLIB_PATH={ort}, but the final stage copies nothing there")
    for var, want in [("TMPDIR", "/tmp"), ("OSPREY_CACHE", None)]:
        if var not in image.env or (want and image.env[var] != want):
            p.add(where, f"final stage should set {var}{'=' + want if want else ''} (read-only root filesystem)")
    if not image.holds("/opt/osprey/config/osprey.toml") and "/opt/osprey/config" not in image.dirs:
        p.add(where, "final stage does not copy config/ to /opt/osprey/config")
    # The default config, run from the image, must find every file it names.
    with open(repo / "config/osprey.toml", "rb") as f:
        default = tomllib.load(f)
    for path in config_files(default, "/opt/osprey/config"):
        if not image.holds(path):
            p.add(where, f"config/osprey.toml needs {path} in the image; no COPY puts it there")
    for port in (8080, 8443):
        if port not in image.ports:
            p.add(where, f"final stage does not EXPOSE {port}")
    return image


def hadolint(dockerfile: Path, config: Path, p: Problems) -> None:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not exe:
        p.add("Dockerfile", "hadolint not found (make deploy-deps installs it)")
        return
    out = subprocess.run([exe, "--no-color", "--config", str(config), str(dockerfile)],
                         capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        if line.strip():
            p.add("Dockerfile (hadolint)", line.strip())
    if out.returncode != 0 and not (out.stdout + out.stderr).strip():
        p.add("Dockerfile (hadolint)", f"exit {out.returncode}")


# ---------------------------------------------------------------------------
# Osprey configs (inside ConfigMaps)
# ---------------------------------------------------------------------------

def config_files(cfg: dict, config_dir: str) -> list[str]:
    """Every file a config names (models, labels, plugins), as absolute paths."""
    paths = []
    for model in cfg.get("models", {}).values():
        paths += [model[k] for k in ("file", "labels") if k in model]
    paths += [pl["file"] for pl in cfg.get("plugins", {}).values()]
    return [posixpath.normpath(posixpath.join(config_dir, x)) for x in paths]


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------

def load_manifests(directory: Path, p: Problems) -> dict[str, list[dict]]:
    out = {}
    for f in sorted(directory.glob("*.yaml")):
        try:
            out[f.name] = [d for d in yaml.safe_load_all(f.read_text()) if d]
        except yaml.YAMLError as e:
            p.add(f.name, f"not YAML: {e}")
    return out


def check_schemas(files: dict[str, list[dict]], p: Problems) -> None:
    for name, docs in files.items():
        if name == KUSTOMIZATION:
            continue
        for doc in docs:
            what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(x) for x in e.path) or "(top)"
                    p.add(what, f"invalid for Kubernetes {e.version}: {path}: {e.message}")
                    break
                except kubernetes_validate.SchemaNotFoundError as e:
                    p.add(what, f"no schema: {e.message}")
                    break
                except (KeyError, TypeError) as e:
                    p.add(what, f"not a Kubernetes object (missing {e})")
                    break


def check_kustomization(directory: Path, files: dict[str, list[dict]], p: Problems) -> None:
    docs = files.get(KUSTOMIZATION)
    if not docs:
        p.add(KUSTOMIZATION, "missing")
        return
    for res in docs[0].get("resources", []):
        if res not in files:
            p.add(KUSTOMIZATION, f"resource {res} does not exist in {directory.name}/")


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def objects(files: dict[str, list[dict]]):
    for name, docs in files.items():
        if name != KUSTOMIZATION:
            for doc in docs:
                if isinstance(doc, dict) and "kind" in doc:
                    yield name, doc


def check_pod(where: str, dep: dict, uid: int | None, found: dict, p: Problems) -> None:
    spec = dep["spec"]
    tmpl = spec.get("template", {})
    labels = tmpl.get("metadata", {}).get("labels", {})
    if not matches(spec.get("selector", {}).get("matchLabels", {}), labels):
        p.add(where, "spec.selector.matchLabels does not select the pod template's labels")
    pod = tmpl.get("spec", {})
    psc = pod.get("securityContext", {})
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v and v["configMap"]["name"] not in found["ConfigMap"]:
            p.add(where, f"volume {v['name']}: ConfigMap {v['configMap']['name']} is not in the manifests")
        if "secret" in v and v["secret"]["secretName"] not in set(found["Secret"]) | EXTERNAL_SECRETS:
            p.add(where, f"volume {v['name']}: Secret {v['secret']['secretName']} is not in the manifests")
    accelerator = labels.get("osprey.dev/accelerator")
    for c in pod.get("containers", []):
        cw = f"{where} container {c['name']}"
        sc = {**psc, **c.get("securityContext", {})}
        for key, want in [("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)]:
            if sc.get(key) is not want:
                p.add(cw, f"securityContext.{key} must be {str(want).lower()}")
        if "ALL" not in c.get("securityContext", {}).get("capabilities", {}).get("drop", []):
            p.add(cw, "securityContext.capabilities.drop must hold ALL")
        if sc.get("privileged"):
            p.add(cw, "privileged")
        if uid is not None and sc.get("runAsUser") not in (None, uid):
            p.add(cw, f"runAsUser {sc.get('runAsUser')} is not the image's USER {uid}")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    p.add(cw, f"resources.{kind}.{r} is not set")
        gpu = res.get("limits", {}).get("nvidia.com/gpu")
        if accelerator == "gpu" and not gpu:
            p.add(cw, "a GPU node without resources.limits nvidia.com/gpu")
        if accelerator == "cpu" and gpu:
            p.add(cw, "a CPU node that asks for nvidia.com/gpu")
        ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports", [])}
        for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
            get = c.get(probe, {}).get("httpGet")
            if not get:
                p.add(cw, f"no {probe} (httpGet {path})")
                continue
            if get.get("path") != path:
                p.add(cw, f"{probe} asks {get.get('path')}, want {path}")
            if get.get("port") not in ports and get.get("port") not in ports.values():
                p.add(cw, f"{probe} port {get.get('port')} is not a container port")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        tmp = mounts.get("/tmp")
        if not tmp or "emptyDir" not in volumes.get(tmp["name"], {}):
            p.add(cw, "no emptyDir at /tmp (TMPDIR on a read-only root filesystem)")
        for m in mounts.values():
            if m["name"] not in volumes:
                p.add(cw, f"mounts volume {m['name']}, which the pod does not define")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] not in found["Secret"]:
                p.add(cw, f"env {e['name']}: Secret {ref['name']} is not in the manifests")
            elif ref and ref["key"] not in found["Secret"].get(ref["name"], set()):
                p.add(cw, f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
        args = c.get("args", [])
        if "--config" in args:
            cfg = args[args.index("--config") + 1]
            mount = mounts.get(posixpath.dirname(cfg))
            cm = volumes.get(mount["name"], {}).get("configMap") if mount else None
            if not cm:
                p.add(cw, f"--config {cfg}: no ConfigMap is mounted at {posixpath.dirname(cfg)}")
            else:
                found["pod_configs"].append((where, labels, cm["name"], posixpath.basename(cfg), ports))


def check_kubernetes(files: dict[str, list[dict]], image: Image, repo: Path, p: Problems) -> dict[str, str]:
    found = {"ConfigMap": {}, "Secret": {}, "Deployment": {}, "Service": {}, "pod_configs": []}
    for name, doc in objects(files):
        kind, meta = doc["kind"], doc.get("metadata", {})
        if kind != "Namespace" and meta.get("namespace") != NAMESPACE:
            p.add(f"{name}: {kind}/{meta.get('name')}", f"namespace {meta.get('namespace')!r}, want {NAMESPACE!r}")
        if kind == "ConfigMap":
            found["ConfigMap"][meta["name"]] = doc.get("data", {})
        elif kind == "Secret":
            found["Secret"][meta["name"]] = set(doc.get("stringData", {})) | set(doc.get("data", {}))
        elif kind in ("Deployment", "Service"):
            found[kind][meta["name"]] = (name, doc)

    for dname, (fname, dep) in found["Deployment"].items():
        check_pod(f"{fname}: Deployment/{dname}", dep, image.uid, found, p)
    pods = {d: dep["spec"]["template"]["metadata"].get("labels", {}) for d, (_, dep) in found["Deployment"].items()}

    for sname, (fname, svc) in found["Service"].items():
        where = f"{fname}: Service/{sname}"
        sel = svc["spec"].get("selector", {})
        selected = [d for d, labels in pods.items() if matches(sel, labels)]
        if not selected:
            p.add(where, f"selector {sel} selects no Deployment's pods")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for d in selected:
                cports = {pt.get("name"): pt["containerPort"]
                          for c in found["Deployment"][d][1]["spec"]["template"]["spec"]["containers"]
                          for pt in c.get("ports", [])}
                if target not in cports and target not in cports.values():
                    p.add(where, f"targetPort {target} is not a port of Deployment/{d}")

    for fname, doc in objects(files):
        where = f"{fname}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "PodDisruptionBudget":
            sel = doc["spec"].get("selector", {}).get("matchLabels", {})
            if not any(matches(sel, labels) for labels in pods.values()):
                p.add(where, f"selector {sel} selects no Deployment's pods")
        elif doc["kind"] == "HorizontalPodAutoscaler":
            check_hpa(where, doc, found, repo, p)
    return check_configs(found, image, repo, p)


def exported_metrics(repo: Path) -> set[str]:
    src = (repo / "host/src/metrics.rs").read_text()
    prefix = re.search(r'Registry::with_prefix\("(\w+)"\)', src).group(1)
    return {f"{prefix}_{m}" for m in re.findall(r'r\.register\(\s*"(\w+)"', src)}


def check_hpa(where: str, hpa: dict, found: dict, repo: Path, p: Problems) -> None:
    ref = hpa["spec"]["scaleTargetRef"]
    target = found["Deployment"].get(ref["name"]) if ref.get("kind") == "Deployment" else None
    if not target:
        p.add(where, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the manifests")
    elif "replicas" in target[1]["spec"]:
        p.add(where, f"Deployment/{ref['name']} sets replicas, which every apply would reset under the HPA")
    metrics = exported_metrics(repo)
    pods_metrics = [m for m in hpa["spec"].get("metrics", []) if m.get("type") == "Pods"]
    if not pods_metrics:
        p.add(where, "no Pods metric: the nodes scale on osprey's queue (osprey_queue_depth)")
    for m in pods_metrics:
        name = m["pods"]["metric"]["name"]
        if name not in metrics:
            p.add(where, f"metric {name} is not one osprey exports (host/src/metrics.rs: {', '.join(sorted(metrics))})")


def check_configs(found: dict, image: Image, repo: Path, p: Problems) -> dict[str, str]:
    """The TOML inside the ConfigMaps the pods load; returns name -> text."""
    texts, parsed = {}, {}
    for where, labels, cm, key, ports in found["pod_configs"]:
        text = found["ConfigMap"].get(cm, {}).get(key)
        if text is None:
            p.add(where, f"ConfigMap {cm} has no key {key}")
            continue
        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            p.add(f"ConfigMap/{cm} {key}", f"not TOML: {e}")
            continue
        texts[cm], parsed[cm] = text, cfg
        listens = [cfg.get("server", {}).get("listen"), cfg.get("tls", {}).get("http_listen")]
        for addr in filter(None, listens):
            if port_of(addr) not in ports.values():
                p.add(where, f"ConfigMap/{cm} listens on {addr}, not a container port ({sorted(ports.values())})")
            if not addr.startswith("0.0.0.0:") and not addr.startswith("[::]:"):
                p.add(f"ConfigMap/{cm}", f"listen {addr}: other pods cannot reach it (use 0.0.0.0)")
        for path in config_files(cfg, "/etc/osprey/config"):
            if not image.holds(path):
                p.add(f"ConfigMap/{cm}", f"names {path}, which the image does not hold (Dockerfile COPY)")
        parsed[cm + "/labels"] = labels

    with open(repo / "config/osprey.toml", "rb") as f:
        default_routes = {r["path"] for r in tomllib.load(f).get("routes", [])}
    node_routes: set[str] = set()
    gateways = []
    for cm, cfg in parsed.items():
        if cm.endswith("/labels"):
            continue
        if cfg.get("upstreams") or any("upstream" in r for r in cfg.get("routes", [])):
            gateways.append((cm, cfg))
        else:
            node_routes |= {r["path"] for r in cfg.get("routes", [])}
            for missing in sorted(default_routes - node_routes):
                p.add(f"ConfigMap/{cm}", f"lacks route {missing} of config/osprey.toml")
    headless = {n: svc for n, (_, svc) in found["Service"].items() if svc["spec"].get("clusterIP") == "None"}
    for cm, cfg in gateways:
        pools = cfg.get("upstreams", {})
        for r in cfg.get("routes", []):
            if "upstream" in r and r["upstream"] not in pools:
                p.add(f"ConfigMap/{cm}", f"route {r['path']}: upstream {r['upstream']!r} is not in [upstreams]")
            if "upstream" in r and "stages" in r:
                p.add(f"ConfigMap/{cm}", f"route {r['path']}: upstream and stages are either/or")
            if "upstream" in r and r["path"] not in node_routes:
                p.add(f"ConfigMap/{cm}", f"route {r['path']} forwards to a path no node serves")
        for missing in sorted(node_routes - {r["path"] for r in cfg.get("routes", [])}):
            p.add(f"ConfigMap/{cm}", f"does not forward the nodes' route {missing}")
        for pool, up in pools.items():
            for url in up.get("nodes", []):
                m = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", url)
                svc = headless.get(m.group(1)) if m and m.group(2) == NAMESPACE else None
                if not svc:
                    p.add(f"ConfigMap/{cm}", f"upstream {pool}: {url} is not a headless Service of the manifests "
                                             f"(want http://NAME.{NAMESPACE}.svc.cluster.local:PORT)")
                elif int(m.group(3)) not in {pt["port"] for pt in svc["spec"]["ports"]}:
                    p.add(f"ConfigMap/{cm}", f"upstream {pool}: port {m.group(3)} is not a port of Service/{m.group(1)}")
    return texts


# ---------------------------------------------------------------------------

def run_checks(repo: Path, kube_dir: Path, dockerfile: Path, use_hadolint: bool) -> tuple[list[str], dict[str, str]]:
    p = Problems()
    image = check_dockerfile(dockerfile.read_text(), repo, p)
    if use_hadolint:
        hadolint(dockerfile, repo / "deploy/hadolint.yaml", p)
    files = load_manifests(kube_dir, p)
    check_kustomization(kube_dir, files, p)
    check_schemas(files, p)
    texts = check_kubernetes(files, image, repo, p)
    return p.lines, texts


def main() -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=here.parent)
    ap.add_argument("--kubernetes", type=Path, default=here / "kubernetes")
    ap.add_argument("--dockerfile", type=Path)
    ap.add_argument("--no-hadolint", action="store_true")
    ap.add_argument("--write-configs", type=Path, help="write each pod config's TOML to DIR/<configmap>.toml")
    args = ap.parse_args()
    problems, texts = run_checks(args.repo, args.kubernetes, args.dockerfile or args.repo / "Dockerfile",
                                 not args.no_hadolint)
    if args.write_configs:
        args.write_configs.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (args.write_configs / f"{name}.toml").write_text(text)
    for line in problems:
        print(f"deploy-check: {line}")
    n = len(list(load_manifests(args.kubernetes, Problems()).values()))
    print(f"deploy-check: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'ok'} "
          f"({n} manifest files, Kubernetes {' and '.join(K8S_VERSIONS)}, Dockerfile)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
