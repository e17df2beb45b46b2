#!/usr/bin/env python3
"""Fetch, check and convert Osprey's models, test images and ONNX Runtime.

Run from the repository root:

    python3 models/fetch.py               # set everything up (idempotent)
    python3 models/fetch.py --check       # exit 0 if all is in place, else 1
    python3 models/fetch.py --print-cache # print the cache directory
    python3 models/fetch.py --with-venv   # also (re)build the venv verify.py runs in

Everything described in models/models.toml is downloaded with the registry's
own client (pip, npm, apt-get), checked against the SHA-256 pinned there and
kept under $OSPREY_CACHE (default ~/.cache/osprey):

    downloads/<package file>                    the verified registry artefacts
    onnxruntime/libonnxruntime.so.1.31.1        ONNX Runtime C library
    venv/                                       conversion venv (TF, tf2onnx, ORT): built only
                                                when a model must be converted or with
                                                --with-venv; may be deleted afterwards
    models/<name>/model.onnx, labels.txt        converted models
    images/                                     test photos + coco.names, and the 12 MP
                                                photos made from them (venv-images: Pillow)
    web/                                        files the page embeds (hls.js; host/build.rs)

Each of those directories carries a stamp (the manifest entry it was built
from and the SHA-256 of every output), so a second run only re-hashes the
outputs and finishes in about a second. The repository gets symlinks
models/<name>/{model.onnx,labels.txt} pointing into the cache.

This process uses only the Python standard library. Steps that need
TensorFlow/ONNX run in the venv as `venv/bin/python fetch.py --venv-step ...`
(see the "venv side" section at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent  # <repo>/models
MANIFEST = MODELS_DIR / "models.toml"
STAMP = ".osprey-stamp.json"
# Bump when the conversion logic below changes, so cached models are rebuilt.
CONVERTER_REVISION = 1


def log(msg: str) -> None:
    print(f"osprey-setup: {msg}", flush=True)


class SetupError(Exception):
    """A failure with a message meant for the person running setup."""


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get("OSPREY_CACHE") or "~/.cache/osprey").expanduser().absolute()


def load_manifest() -> dict:
    import tomllib  # Python >= 3.11

    with open(MANIFEST, "rb") as f:
        return tomllib.load(f)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_key(*parts) -> str:
    """Stable hash of the manifest pieces an output is built from."""
    blob = json.dumps([CONVERTER_REVISION, *parts], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def stamp_ok(directory: Path, key: str) -> bool:
    """True if `directory` was built from `key` and its files are intact."""
    try:
        stamp = json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp.get("key") != key:
        return False
    return all(
        (directory / name).is_file() and sha256_file(directory / name) == digest
        for name, digest in stamp.get("files", {}).items()
    )


def write_stamp(directory: Path, key: str, files: list[str]) -> None:
    stamp = {"key": key, "files": {n: sha256_file(directory / n) for n in files}}
    (directory / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")


def run(cmd: list, what: str, cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a command quietly; on failure raise with the tail of its output."""
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise SetupError(f"{what} failed (exit {proc.returncode}):\n  $ {' '.join(map(str, cmd))}\n{tail}")
    return proc.stdout


def replace_dir(src: Path, dest: Path) -> None:
    """Move a freshly built directory into place (old one removed)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)


@contextlib.contextmanager
def cache_lock(cache: Path):
    """Serialise concurrent setup runs sharing one cache."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------
# Archives: zip/wheel, tar(.gz), .deb (ar + data.tar.*), nested via lists
# ---------------------------------------------------------------------------

def _norm(name: str) -> str:
    return name[2:] if name.startswith("./") else name


class Archive:
    """Read-only view of a zip, tar or deb archive, opened from a file or bytes."""

    def __init__(self, name: str, fileobj):
        self.name = name
        if name.endswith((".zip", ".whl")):
            self._zip = zipfile.ZipFile(fileobj)
            self._tar = None
        elif name.endswith(".deb"):
            self._zip = None
            self._tar = self._deb_data(fileobj)
        else:  # .tgz, .tar.gz, .tar.xz, ...
            self._zip = None
            self._tar = tarfile.open(fileobj=fileobj)

    @staticmethod
    def _deb_data(fileobj) -> tarfile.TarFile:
        """A .deb is an `ar` archive; its payload is the data.tar.* member."""
        if fileobj.read(8) != b"!<arch>\n":
            raise SetupError("not a Debian package (bad ar magic)")
        while header := fileobj.read(60):
            member = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data = fileobj.read(size)
            fileobj.read(size % 2)  # members are 2-byte aligned
            if member.startswith("data.tar"):
                if member.endswith(".zst"):
                    raise SetupError("zstd-compressed .deb: extract it with `dpkg-deb -x` instead")
                return tarfile.open(fileobj=io.BytesIO(data))
        raise SetupError("no data.tar member in the Debian package")

    def names(self) -> list[str]:
        if self._zip:
            return [i.filename for i in self._zip.infolist() if not i.is_dir()]
        return [_norm(m.name) for m in self._tar.getmembers() if m.isfile()]

    def read(self, member: str) -> bytes:
        member = _norm(member)
        try:
            if self._zip:
                return self._zip.read(member)
            for m in self._tar.getmembers():
                if m.isfile() and _norm(m.name) == member:
                    return self._tar.extractfile(m).read()
        except KeyError:
            pass
        raise SetupError(f"{member!r} not found in {self.name}")


def open_member_archive(archive: Path, path: list[str]) -> Archive:
    """Open `archive`, then descend through nested archives named in `path`."""
    arc = Archive(archive.name, open(archive, "rb"))
    for inner in path:
        arc = Archive(inner, io.BytesIO(arc.read(inner)))
    return arc


def read_member(archive: Path, member) -> bytes:
    """Bytes of `member` (a path, or a list of paths through nested archives)."""
    path = [member] if isinstance(member, str) else list(member)
    return open_member_archive(archive, path[:-1]).read(path[-1])


def extract_tree(archive: Path, prefix: str, dest: Path) -> None:
    """Extract every file under directory `prefix` of `archive` into `dest`."""
    arc = Archive(archive.name, open(archive, "rb"))
    prefix = _norm(prefix).rstrip("/") + "/"
    found = False
    for name in arc.names():
        if name.startswith(prefix):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(arc.read(name))
            found = True
    if not found:
        raise SetupError(f"no files under {prefix!r} in {archive.name}")


# ---------------------------------------------------------------------------
# Downloads (registry clients, then SHA-256 check against the pin)
# ---------------------------------------------------------------------------

_apt_updated = False


def _download_pypi(pkg: dict, tmp: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--disable-pip-version-check", "-d", tmp, f"{pkg['name']}=={pkg['version']}"]
    if "platform" in pkg:  # pin the exact wheel, whatever Python runs us
        cmd += ["--only-binary=:all:", "--platform", pkg["platform"],
                "--python-version", pkg["python_version"]]
    run(cmd, f"pip download {pkg['name']}")


def _download_npm(pkg: dict, tmp: Path) -> None:
    spec = f"{pkg['name']}@{pkg['version']}"
    if shutil.which("npm"):
        run(["npm", "pack", "--silent", spec], f"npm pack {spec}", cwd=tmp)
    else:  # no Node here: the registry's tarball URL, same bytes (checked below)
        base = pkg["name"].split("/")[-1]
        url = f"https://registry.npmjs.org/{pkg['name']}/-/{base}-{pkg['version']}.tgz"
        _download_url(url, tmp / pkg["file"])


def _download_debian(pkg: dict, tmp: Path) -> None:
    global _apt_updated
    spec = f"{pkg['name']}={pkg['version']}"
    if not shutil.which("apt-get"):
        _download_url(pkg["url"], tmp / pkg["file"])
        return
    try:
        run(["apt-get", "download", spec], f"apt-get download {spec}", cwd=tmp)
    except SetupError:
        if _apt_updated:
            raise
        log("apt-get download failed; running apt-get update once and retrying")
        run(["apt-get", "update"], "apt-get update")
        _apt_updated = True
        run(["apt-get", "download", spec], f"apt-get download {spec}", cwd=tmp)


def _download_url(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=120) as r, open(dest, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise SetupError(f"download of {url} failed: {e}") from e


DOWNLOADERS = {"pypi": _download_pypi, "npm": _download_npm, "debian": _download_debian}


def download(pkg: dict, tmp: Path) -> None:
    """Download one package; a registry failure is often transient, so it is
    tried once more after a pause (apt's own retry, after an update, is in
    _download_debian)."""
    try:
        DOWNLOADERS[pkg["registry"]](pkg, tmp)
    except SetupError as e:
        if pkg["registry"] == "debian":
            raise
        log(f"{pkg['registry']} download of {pkg['name']} failed; trying once more in 10 s:\n{e}")
        time.sleep(10)
        try:
            DOWNLOADERS[pkg["registry"]](pkg, tmp)
        except SetupError as again:
            raise SetupError(f"{again}\n(failed twice, 10 s apart: check the network or proxy; "
                             f"the {pkg['registry']} registry may be down)") from again


def fetch_package(cache: Path, manifest: dict, pkg_id: str) -> Path:
    """Path of the verified package file, downloading it if needed."""
    pkg = manifest["packages"][pkg_id]
    downloads = cache / "downloads"
    dest = downloads / pkg["file"]
    if dest.is_file() and sha256_file(dest) == pkg["sha256"]:
        return dest
    log(f"downloading {pkg['registry']} {pkg['name']} {pkg['version']}")
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".dl-") as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)  # lets apt's _apt user see it (no warning)
        download(pkg, tmp)
        got = tmp / pkg["file"]
        if not got.is_file():
            files = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
            raise SetupError(f"{pkg['name']} {pkg['version']}: expected {pkg['file']}, got {files}")
        digest = sha256_file(got)
        if not pkg.get("sha256"):
            raise SetupError(f"no sha256 pinned for [packages.{pkg_id}] in {MANIFEST}; "
                             f"the downloaded {pkg['file']} has sha256 = \"{digest}\"")
        if digest != pkg["sha256"]:
            raise SetupError(
                f"SHA-256 MISMATCH for {pkg['file']} ({pkg['registry']} {pkg['name']} {pkg['version']}):\n"
                f"  pinned   {pkg['sha256']}\n  received {digest}\n"
                f"The registry served different bytes than the ones pinned in {MANIFEST}. "
                f"Do not use them; if you changed the version on purpose, update the pin.")
        os.replace(got, dest)
    return dest


# ---------------------------------------------------------------------------
# The pieces: ONNX Runtime library, test images, venv, models, repo links
# ---------------------------------------------------------------------------

def ort_key(m: dict) -> str:
    return config_key(m["onnxruntime"], m["packages"][m["onnxruntime"]["package"]])


def ensure_onnxruntime(cache: Path, m: dict) -> None:
    cfg = m["onnxruntime"]
    out = cache / cfg["output"]
    if stamp_ok(out.parent, ort_key(m)):
        return
    wheel = fetch_package(cache, m, cfg["package"])
    log(f"extracting {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(read_member(wheel, cfg["member"]))
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    write_stamp(out.parent, ort_key(m), [out.name])


def images_key(m: dict) -> str:
    pkgs = sorted({f["package"] for f in m["images"]["files"]})
    return config_key(m["images"], [m["packages"][p] for p in pkgs])


def ensure_images(cache: Path, m: dict) -> None:
    dest = cache / "images"
    if stamp_ok(dest, images_key(m)):
        return
    log("extracting test images")
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for item in m["images"]["files"]:
        archive = fetch_package(cache, m, item["package"])
        name = Path(item["member"]).name
        (dest / name).write_bytes(read_member(archive, item["member"]))
        names.append(name)
    names += make_photos(cache, m["images"]["photos"], dest)
    write_stamp(dest, images_key(m), names)


def web_key(m: dict) -> str:
    pkgs = sorted({f["package"] for f in m["web"]["files"]})
    return config_key(m["web"], [m["packages"][p] for p in pkgs])


def ensure_web(cache: Path, m: dict) -> None:
    """The page's third-party files, which host/build.rs compiles in."""
    dest = cache / "web"
    if stamp_ok(dest, web_key(m)):
        return
    log("extracting the page's files (hls.js)")
    dest.mkdir(parents=True, exist_ok=True)
    for item in m["web"]["files"]:
        archive = fetch_package(cache, m, item["package"])
        (dest / item["name"]).write_bytes(read_member(archive, item["member"]))
    write_stamp(dest, web_key(m), [item["name"] for item in m["web"]["files"]])


def make_photos(cache: Path, photos: dict, dest: Path) -> list[str]:
    """The 12 MP photos of [images.photos], made with Pillow in its own venv."""
    vdir = cache / "venv-images"
    py = vdir / "bin" / "python"
    if not ((vdir / STAMP).is_file() and json.loads((vdir / STAMP).read_text()).get("key") == config_key(photos["venv"])):
        log("creating the venv that makes the big test photos (Pillow, ~15 MB)")
        if vdir.exists():
            shutil.rmtree(vdir)
        run([sys.executable, "-m", "venv", vdir], "creating the images venv")
        run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *photos["venv"]],
            "pip install (Pillow)")
        write_stamp(vdir, config_key(photos["venv"]), [])
    for spec in photos["files"]:
        log(f"making {spec['name']} from {spec['from']}")
        run([py, __file__, "--photo-step", json.dumps(spec), dest], f"making {spec['name']}")
    return [spec["name"] for spec in photos["files"]]


def venv_python_base() -> str:
    """A Python that tensorflow-cpu 2.15 supports (3.9-3.11) to build the venv."""
    if os.environ.get("OSPREY_PYTHON"):
        return os.environ["OSPREY_PYTHON"]
    if (3, 9) <= sys.version_info[:2] <= (3, 11):
        return sys.executable
    for cand in ("python3.11", "python3.10", "python3.9"):
        if shutil.which(cand):
            return shutil.which(cand)
    raise SetupError("tensorflow-cpu 2.15 needs Python 3.9-3.11 for the conversion venv; "
                     "install python3.11 or point OSPREY_PYTHON at one")


def venv_key(m: dict) -> str:
    return config_key(m["venv"])


def ensure_venv(cache: Path, m: dict) -> Path:
    vdir = cache / "venv"
    py = vdir / "bin" / "python"
    if (vdir / STAMP).is_file() and json.loads((vdir / STAMP).read_text()).get("key") == venv_key(m):
        return py
    log("creating the conversion venv (once, ~600 MB download, ~1.4 GB on disk, a few minutes)")
    if vdir.exists():
        shutil.rmtree(vdir)
    run([venv_python_base(), "-m", "venv", vdir], "creating the venv")
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(pip + m["venv"]["requirements"], "pip install (conversion tools)")
    # onnxruntime pins protobuf>=4.25.8, tf2onnx protobuf~=3.20: see models.toml.
    run(pip + ["--no-deps"] + m["venv"]["no_deps"], "pip install (onnxruntime)")
    write_stamp(vdir, venv_key(m), [])
    return py


def model_key(m: dict, name: str) -> str:
    spec = m["models"][name]
    pkgs = sorted({spec["package"], spec["labels"]["package"]})
    return config_key(spec, [m["packages"][p] for p in pkgs], m["venv"])


def make_labels(spec: dict, raw: bytes) -> str:
    """labels.txt text: line i = label of class index i as the model outputs it."""
    lines = raw.decode("utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    count = spec["count"]
    if spec["format"] == "indexed":  # "<index> <label>" lines, gaps allowed
        labels = [""] * count
        for line in lines:
            index, label = line.strip().split(maxsplit=1)
            if not 0 <= int(index) < count:
                raise SetupError(f"label index {index} outside 0..{count - 1}")
            labels[int(index)] = label.strip()
    elif spec["format"] == "indexed-compact":  # same file, gaps dropped, in index order
        pairs = sorted((int(i), label.strip()) for i, label in (ln.strip().split(maxsplit=1) for ln in lines))
        labels = [label for _, label in pairs]
        if len(labels) != count:
            raise SetupError(f"expected {count} labels, found {len(labels)}")
    elif spec["format"] == "plain":  # one label per line; drop "12: " style prefixes if any
        labels = [line.strip() for line in lines]
        if labels and all(re.match(r"^\d+[:\s]", s) for s in labels):
            labels = [re.sub(r"^\d+:?\s*", "", s) for s in labels]
        if len(labels) != count:
            raise SetupError(f"expected {count} labels, found {len(labels)}")
    else:
        raise SetupError(f"unknown label format {spec['format']!r}")
    return "\n".join(labels) + "\n"


def build_model(cache: Path, m: dict, name: str, py: Path) -> None:
    spec = m["models"][name]
    log(f"converting {name} (once, ~30 s)")
    archive = fetch_package(cache, m, spec["package"])
    labels_archive = fetch_package(cache, m, spec["labels"]["package"])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    (cache / "models").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache / "models", prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        raw_onnx = tmp / "raw.onnx"
        convert = [py, "-m", "tf2onnx.convert", "--opset", spec["opset"], "--output", raw_onnx]
        if spec["convert"] == "tflite":
            src = tmp / "model.tflite"
            src.write_bytes(read_member(archive, spec["member"]))
            convert += ["--tflite", src]
        elif spec["convert"] == "tfjs":
            extract_tree(archive, spec["member"], tmp / "tfjs")
            run([py, __file__, "--venv-step", "fix-tfjs", tmp / "tfjs" / "model.json"],
                f"{name}: filling TF.js op attributes", env=env)
            convert += ["--tfjs", tmp / "tfjs" / "model.json"]
        else:
            raise SetupError(f"{name}: unknown conversion {spec['convert']!r}")
        run(convert, f"{name}: tf2onnx", env=env)

        out = tmp / "out"
        out.mkdir()
        step = [py, __file__, "--venv-step", "finish", raw_onnx, out / "model.onnx"]
        if spec.get("dynamic_batch"):
            step.append("--dynamic-batch")
        io_info = json.loads(run(step, f"{name}: finishing the ONNX model", env=env).strip().splitlines()[-1])
        check_io(name, spec, io_info)

        labels = make_labels(spec["labels"], read_member(labels_archive, spec["labels"]["member"]))
        (out / "labels.txt").write_text(labels)
        write_stamp(out, model_key(m, name), ["model.onnx", "labels.txt"])
        replace_dir(out, cache / "models" / name)


def check_io(name: str, spec: dict, io_info: dict) -> None:
    """The converted model must have exactly the inputs/outputs the manifest documents."""
    want = {
        "inputs": [[spec["input"]["name"], spec["input"]["shape"], spec["input"]["dtype"]]],
        "outputs": [[o["name"], o["shape"], o["dtype"]] for o in spec["outputs"]],
    }
    if want != io_info:
        raise SetupError(f"{name}: converted model does not match models.toml:\n"
                         f"  manifest  {json.dumps(want)}\n  converted {json.dumps(io_info)}")


def link_into_repo(cache: Path, m: dict) -> None:
    """models/<name>/{model.onnx,labels.txt} -> the cached files."""
    for name in m["models"]:
        (MODELS_DIR / name).mkdir(exist_ok=True)
        for fname in ("model.onnx", "labels.txt"):
            link, target = MODELS_DIR / name / fname, cache / "models" / name / fname
            if link.is_symlink():
                if os.readlink(link) == str(target):
                    continue
                link.unlink()
            elif link.exists():
                log(f"warning: {link} is a real file, not replacing it")
                continue
            link.symlink_to(target)


def links_ok(cache: Path, m: dict) -> bool:
    return all(
        (MODELS_DIR / n / f).is_symlink()
        and os.readlink(MODELS_DIR / n / f) == str(cache / "models" / n / f)
        for n in m["models"] for f in ("model.onnx", "labels.txt")
    )


def missing_parts(cache: Path, m: dict, with_venv: bool) -> list[str]:
    """What is absent or stale (empty list: everything is in place)."""
    missing = []
    if not stamp_ok((cache / m["onnxruntime"]["output"]).parent, ort_key(m)):
        missing.append("onnxruntime library")
    if not stamp_ok(cache / "images", images_key(m)):
        missing.append("test images")
    if not stamp_ok(cache / "web", web_key(m)):
        missing.append("the page's files (hls.js)")
    if with_venv and not stamp_ok(cache / "venv", venv_key(m)):
        missing.append("conversion venv")
    missing += [f"model {n}" for n in m["models"] if not stamp_ok(cache / "models" / n, model_key(m, n))]
    if not links_ok(cache, m):
        missing.append("repo symlinks models/<name>/*")
    return missing


def setup(cache: Path, m: dict, with_venv: bool) -> None:
    start = time.monotonic()
    with cache_lock(cache):
        ensure_onnxruntime(cache, m)
        ensure_images(cache, m)
        ensure_web(cache, m)
        todo = [n for n in m["models"] if not stamp_ok(cache / "models" / n, model_key(m, n))]
        # The venv is only needed to convert (and for verify.py): once the
        # models exist it may be deleted to save 1.4 GB.
        if todo or with_venv:
            py = ensure_venv(cache, m)
        for name in todo:
            build_model(cache, m, name, py)
        link_into_repo(cache, m)
    log(f"ready in {time.monotonic() - start:.1f} s: cache {cache}")
    log(f"ORT_DYLIB_PATH={cache / m['onnxruntime']['output']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 0 if everything is present, else 1 (no downloads)")
    ap.add_argument("--print-cache", action="store_true", help="print the cache directory and exit")
    ap.add_argument("--with-venv", action="store_true",
                    help="also keep the conversion venv in place (needed by verify.py); "
                         "otherwise it is only built when a model must be converted")
    ap.add_argument("--venv-step", nargs="+", help=argparse.SUPPRESS)  # internal, runs inside the venv
    ap.add_argument("--dynamic-batch", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--photo-step", nargs=2, help=argparse.SUPPRESS)  # internal, runs in venv-images
    args = ap.parse_args()

    if args.venv_step:
        return venv_step(args.venv_step, args.dynamic_batch)
    if args.photo_step:
        return photo_step(json.loads(args.photo_step[0]), Path(args.photo_step[1]))
    cache = cache_dir()
    if args.print_cache:
        print(cache)
        return 0
    try:
        m = load_manifest()
        if args.check:
            missing = missing_parts(cache, m, args.with_venv)
            for part in missing:
                log(f"missing or stale: {part}")
            return 1 if missing else 0
        setup(cache, m, args.with_venv)
    except SetupError as e:
        print(f"osprey-setup: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


def photo_step(spec: dict, images: Path) -> int:
    """Runs in venv-images: one photo of [images.photos] (see models.toml)."""
    from PIL import Image

    with Image.open(images / spec["from"]) as src:
        img = src.convert("RGB").resize(tuple(spec["size"]), Image.Resampling.LANCZOS)
    exif = Image.Exif()
    if "orientation" in spec:
        # Stored so that applying the tag gives back the upright photo.
        undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
        img = img.transpose(undo[spec["orientation"]])
        exif[0x0112] = spec["orientation"]
    img.save(images / spec["name"], "JPEG", quality=spec["quality"], exif=exif.tobytes())
    return 0


# ---------------------------------------------------------------------------
# Venv side: these run as `venv/bin/python fetch.py --venv-step ...` and may
# import tensorflow / onnx / onnxruntime / numpy.
# ---------------------------------------------------------------------------

def venv_step(argv: list[str], dynamic_batch: bool) -> int:
    step, *paths = argv
    if step == "fix-tfjs":
        fix_tfjs_attrs(Path(paths[0]))
    elif step == "finish":
        finish_onnx(Path(paths[0]), Path(paths[1]), dynamic_batch)
    else:
        raise SystemExit(f"unknown venv step {step}")
    return 0


def fix_tfjs_attrs(model_json: Path) -> None:
    """Fill op attributes that old TF.js exports omit but TF 2.15 requires.

    Every attribute missing from a node gets its op-registry default; the
    `TArgs` type list of `_FusedConv2D` has no default and is `num_args` x
    DT_FLOAT (the fused bias/extra args are float32 tensors here).
    """
    from google.protobuf import json_format
    from tensorflow.python.framework import op_def_registry

    model = json.loads(model_json.read_text())
    added = {}
    for node in model["modelTopology"]["node"]:
        op_def = op_def_registry.get(node["op"])
        if op_def is None:
            raise SystemExit(f"op {node['op']} unknown to TensorFlow")
        attrs = node.setdefault("attr", {})
        for a in op_def.attr:
            if a.name in attrs:
                continue
            if node["op"] == "_FusedConv2D" and a.name == "TArgs":
                n = int(attrs.get("num_args", {}).get("i", "0"))
                attrs["TArgs"] = {"list": {"type": ["DT_FLOAT"] * n}}
            elif a.HasField("default_value"):
                attrs[a.name] = json_format.MessageToDict(a.default_value)
            else:
                raise SystemExit(f"{node['name']}: attribute {a.name} missing and has no default")
            added[f"{node['op']}.{a.name}"] = added.get(f"{node['op']}.{a.name}", 0) + 1
    model_json.write_text(json.dumps(model))
    print(f"filled attributes: {added}")


def finish_onnx(src: Path, dest: Path, dynamic_batch: bool) -> None:
    """Post-process a tf2onnx output and prove the result still computes the same.

    1. Resize nodes using the deprecated `tf_half_pixel_for_nn` mode with
       nearest/floor and integer scales become `asymmetric`: floor((x+0.5)/s)
       == floor(x/s) for integer x and integer s, so outputs are identical.
    2. With dynamic_batch, the first dim of inputs/outputs becomes "batch" and
       Reshape constants of the form [1, ...] become [-1, ...]; checked by
       comparing a batch of 2 against two batch-1 runs of the original.
    Prints one JSON line: the inputs/outputs as onnxruntime reports them.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}

    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: a for a in node.attribute}
        if attrs.get("coordinate_transformation_mode", None) is None:
            continue
        if attrs["coordinate_transformation_mode"].s != b"tf_half_pixel_for_nn":
            continue
        scales = inits.get(node.input[2]) if len(node.input) > 2 else None
        ok = (attrs.get("mode") and attrs["mode"].s == b"nearest"
              and attrs.get("nearest_mode") and attrs["nearest_mode"].s == b"floor"
              and scales is not None)
        if ok:
            s = numpy_helper.to_array(scales)
            ok = bool(np.all(s == np.round(s)) and np.all(s >= 1))
        if not ok:
            raise SystemExit(f"{node.name}: tf_half_pixel_for_nn with non-integer scales, not rewritten")
        attrs["coordinate_transformation_mode"].s = b"asymmetric"

    if dynamic_batch:
        for value in list(model.graph.input) + list(model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        del model.graph.value_info[:]  # stale batch-1 shapes
        reshape_shapes = {n.input[1] for n in model.graph.node if n.op_type == "Reshape"}
        other_uses = {i for n in model.graph.node if n.op_type != "Reshape" for i in n.input}
        for name in reshape_shapes - other_uses:
            if name in inits:
                shape = numpy_helper.to_array(inits[name])
                if shape.ndim == 1 and len(shape) > 1 and shape[0] == 1 and -1 not in shape:
                    shape = shape.copy()
                    shape[0] = -1
                    inits[name].CopyFrom(numpy_helper.from_array(shape, name))

    onnx.checker.check_model(model)
    onnx.save(model, str(dest))

    # Same results as the unmodified conversion, on random input.
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the original still has the deprecated Resize mode
    before = ort.InferenceSession(str(src), opts)
    after = ort.InferenceSession(str(dest), opts)
    inp = before.get_inputs()[0]
    rng = np.random.default_rng(0)
    shape = [2 if dynamic_batch else 1] + list(inp.shape[1:])
    x = rng.integers(0, 256, size=shape).astype(np.uint8)
    if inp.type == "tensor(float)":
        x = x.astype(np.float32) / 255.0
    got = after.run(None, {inp.name: x})
    for b in range(shape[0]):
        ref = before.run(None, {inp.name: x[b:b + 1]})
        for g, r in zip(got, ref):
            # Exact, except float outputs of a batched run (other conv kernels).
            close = (np.allclose(g[b:b + 1], r, rtol=1e-4, atol=1e-5)
                     if dynamic_batch and g.dtype == np.float32 else np.array_equal(g[b:b + 1], r))
            if not close:
                raise SystemExit(f"post-processed model differs from the conversion (batch item {b}); "
                                 "set dynamic_batch = false in models.toml?")

    def desc(v):
        return [v.name, [d if isinstance(d, int) else str(d) for d in v.shape],
                {"tensor(float)": "float32", "tensor(uint8)": "uint8"}.get(v.type, v.type)]

    print(json.dumps({"inputs": [desc(v) for v in after.get_inputs()],
                      "outputs": [desc(v) for v in after.get_outputs()]}))


if __name__ == "__main__":
    sys.exit(main())
