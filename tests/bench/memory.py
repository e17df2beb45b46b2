#!/usr/bin/env python3
"""Where a running osprey's resident memory goes, from /proc/<pid>/smaps.

    python3 tests/bench/memory.py --pid PID
    python3 tests/bench/memory.py --serve config/osprey.toml [--requests 20]

`--serve` starts `target/release/osprey serve` on a free port, prints the
breakdown once the models are loaded, sends each default route
(/v1/detect, /v1/detect/fast, /v1/classify) `--requests` photos,
`--concurrency` at a time, prints it again, then stops the server. Figures
are RSS in MiB; turn the result cache off in the config (`[cache] ttl_s = 0`)
or every request after the first is answered from it.

Mappings are classed by what smaps can tell: the file they map, or for
anonymous memory its shape. glibc's thread arenas are 64 MiB-aligned heaps
(a rw part followed by a reserved ---p rest); wasmtime's pooling allocator is
reservations of GiBs per slot, so the RSS in them is the plugin linear
memories (and tables) kept resident; thread stacks are 8 MiB rw regions
behind a guard page. ONNX Runtime's weights and arenas come from malloc, so
they show up under the main heap, the thread arenas or, for blocks above the
mmap threshold, "anonymous mmap".
"""

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
ARENA = 64 << 20


def mappings(pid):
    """Yields dicts: start, end, perms, path, rss (kB), anon (kB)."""
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                if cur:
                    yield cur
                cur = {"start": int(m[1], 16), "end": int(m[2], 16), "perms": m[3], "path": m[4].strip(), "rss": 0, "anon": 0}
            elif line.startswith("Rss:"):
                cur["rss"] = int(line.split()[1])
            elif line.startswith("Anonymous:"):
                cur["anon"] = int(line.split()[1])
    if cur:
        yield cur


def pool_spans(maps):
    """Runs of adjacent anonymous mappings spanning 1 GiB or more: wasmtime's
    pooling allocator (its slots are reservations of GiBs; nothing else in the
    process maps that much)."""
    spans, cur = [], None
    for m in maps:
        if m["path"]:
            cur = None
            continue
        if cur and cur[1] == m["start"]:
            cur[1] = m["end"]
        else:
            cur = [m["start"], m["end"]]
            spans.append(cur)
    return [(a, b) for a, b in spans if b - a >= (1 << 30)]


def classify(maps, exe):
    maps = sorted(maps, key=lambda m: m["start"])
    pools = pool_spans(maps)
    out = {}

    def add(k, kb):
        out[k] = out.get(k, 0) + kb

    for i, m in enumerate(maps):
        size, path = m["end"] - m["start"], m["path"]
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        prv = maps[i - 1] if i else None
        if path == exe or path.endswith("/osprey"):
            add("osprey binary (code, data)", m["rss"])
        elif "libonnxruntime" in path:
            add("libonnxruntime.so (code, data)", m["rss"])
        elif path.endswith(".onnx"):
            add("model files (mmap)", m["rss"])
        elif path.startswith("/"):
            add("other shared libraries and files", m["rss"])
        elif path == "[heap]":
            add("malloc: main heap", m["rss"])
        elif path == "[stack]":
            add("thread stacks", m["rss"])
        elif path.startswith("["):
            add("vdso/vvar", m["rss"])
        elif any(a <= m["start"] < b for a, b in pools):
            add("wasmtime: pooled plugin memories and tables (resident)", m["rss"])
        elif "x" in m["perms"]:
            add("wasmtime: compiled plugin code", m["rss"])
        elif m["start"] % ARENA == 0 and "rw" in m["perms"] and nxt and nxt["start"] == m["end"] and nxt["perms"].startswith("---") \
                and (nxt["end"] - m["start"]) == ARENA:
            add("malloc: thread arenas", m["rss"])
        elif m["start"] % ARENA == 0 and "rw" in m["perms"] and size == ARENA:
            add("malloc: thread arenas", m["rss"])
        elif "rw" in m["perms"] and prv and prv["end"] == m["start"] and prv["perms"].startswith("---") \
                and (prv["end"] - prv["start"]) <= (64 << 10) and size in (8 << 20, (8 << 20) - 4096, 2 << 20):
            add("thread stacks", m["rss"])
        else:
            add("anonymous mmap (large malloc blocks: weights, arenas, tensors, images)", m["rss"])
    return out


def rollup(pid):
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                vals[parts[0][:-1]] = int(parts[1])
    return vals


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "Threads"):
                out[k] = v.strip()
    return out


def report(pid, title):
    exe = os.readlink(f"/proc/{pid}/exe")
    parts = classify(list(mappings(pid)), exe)
    r, s = rollup(pid), status(pid)
    print(f"\n## {title} (pid {pid})")
    print(f"RSS {r['Rss'] / 1024:.1f} MiB (anonymous {r.get('Anonymous', 0) / 1024:.1f}, file-backed {(r['Rss'] - r.get('Anonymous', 0)) / 1024:.1f}); "
          f"peak {s.get('VmHWM')}; threads {s.get('Threads')}")
    print("| where | MiB |\n|---|---|")
    for k, kb in sorted(parts.items(), key=lambda kv: -kv[1]):
        if kb >= 512:
            print(f"| {k} | {kb / 1024:.1f} |")
    small = sum(kb for kb in parts.values() if kb < 512)
    print(f"| (each under 0.5 MiB, together) | {small / 1024:.1f} |")
    return r["Rss"]


def post(base, path, image):
    data = open(image, "rb").read()
    req = urllib.request.Request(base + path, data=data, headers={"content-type": "image/jpeg"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        resp.read()
        return resp.status


def serve(exe, config, requests, concurrency, image, env_extra):
    env = dict(os.environ, **env_extra)
    p = subprocess.Popen([exe, "serve", "--config", config, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env)
    base = None
    try:
        t0 = time.time()
        for line in p.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                base = m[1]
                break
        if base is None:
            sys.exit(f"osprey did not start: exit {p.wait()}")
        print(f"loaded in {time.time() - t0:.1f} s")
        report(p.pid, "models loaded, no request yet")
        with ThreadPoolExecutor(concurrency) as pool:
            for path in ("/v1/detect", "/v1/detect/fast", "/v1/classify"):
                list(pool.map(lambda _: post(base, path, image), range(requests)))
        time.sleep(1)
        report(p.pid, f"after {requests} requests on each of the three routes, {concurrency} at a time")
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--serve", metavar="CONFIG")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (with --serve)")
    ap.add_argument("--image", default=os.path.expanduser("~/.cache/osprey/images/dog.jpg"))
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server (with --serve)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "osprey"), help="the osprey binary (with --serve)")
    a = ap.parse_args()
    if a.pid:
        report(a.pid, "now")
    elif a.serve:
        serve(a.bin, a.serve, a.requests, a.concurrency, a.image, dict(kv.split("=", 1) for kv in a.env))
    else:
        ap.error("give --pid or --serve")


if __name__ == "__main__":
    main()
