"""Drives Osprey's Open Inference Protocol with Triton's own HTTP client,
unchanged, and checks every answer against ONNX Runtime run here on the same
model file.

Run by tests/oip/main.rs in the venv that `make test-deps` builds:
    python triton_client.py --url 127.0.0.1:PORT --repo REPO --image chelsea.png
Exits non-zero, with what differed, on the first failed check.
"""

import argparse
import json
import sys
import urllib.error
import urllib.request

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

# name -> (input datatype, height, width); all NHWC, batch first.
MODELS = {
    "efficientnet_lite3": ("UINT8", 280, 280),
    "yolov5s": ("FP32", 640, 640),
    "ssd_mobilenet_v2": ("UINT8", 300, 300),
}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def image_input(path, dtype, h, w):
    rgb = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR))
    if dtype == "UINT8":
        return rgb[None].copy()
    # Multiples of 1/16: JSON writes them in a few digits, which keeps the
    # 1.2 M-number YOLO request in JSON mode under the body limit.
    return ((rgb // 16).astype(np.float32) / 16.0)[None]


def reference(session, x):
    name = session.get_inputs()[0].name
    outs = session.run(None, {name: x})
    return {o.name: v for o, v in zip(session.get_outputs(), outs)}


def compare(model, name, got, want, mode):
    check(got is not None, f"{model} {mode}: output {name} missing")
    check(got.shape == want.shape, f"{model} {mode}: {name} shape {got.shape} != {want.shape}")
    check(got.dtype == want.dtype, f"{model} {mode}: {name} dtype {got.dtype} != {want.dtype}")
    if want.dtype == np.uint8:
        diff = int(np.count_nonzero(got != want))
        check(diff == 0, f"{model} {mode}: {name}: {diff} of {want.size} bytes differ")
    else:
        worst = float(np.max(np.abs(got.astype(np.float64) - want)))
        check(np.allclose(got, want, rtol=1e-4, atol=1e-4), f"{model} {mode}: {name}: max abs diff {worst}")


def infer(client, model, x, datatype, outputs, binary, **kw):
    inp = httpclient.InferInput(INPUT_NAMES.get(model, "input"), list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=binary)
    asked = None if outputs is None else [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    return client.infer(model, [inp], outputs=asked, **kw)


# name -> its input's name, as the server's metadata gives it.
INPUT_NAMES = {}


def metadata(client, model, session):
    md = client.get_model_metadata(model)
    check(md["name"] == model and md["platform"] == "onnxruntime_onnx", f"metadata {md}")
    check("1" in md["versions"], f"{model} versions {md['versions']}")
    for port, want in zip(md["inputs"] + md["outputs"], session.get_inputs() + session.get_outputs()):
        check(port["name"] == want.name, f"{model}: port {port} vs {want.name}")
        dims = [d if isinstance(d, int) else -1 for d in want.shape]
        check(port["shape"] == dims, f"{model}: {port['name']} shape {port['shape']} != {dims}")
    check(client.get_model_metadata(model, model_version="1")["name"] == model, "version metadata")
    check(client.is_model_ready(model), f"{model} not ready")
    check(client.is_model_ready(model, model_version="1"), f"{model} version 1 not ready")
    INPUT_NAMES[model] = md["inputs"][0]["name"]
    check(md["inputs"][0]["datatype"] == MODELS[model][0], f"{model} input datatype {md['inputs'][0]}")


def run_model(client, repo, image, model):
    datatype, h, w = MODELS[model]
    session = ort.InferenceSession(f"{repo}/models/{model}/model.onnx", providers=["CPUExecutionProvider"])
    metadata(client, model, session)
    x = image_input(image, datatype, h, w)
    want = reference(session, x)
    names = list(want)
    for binary in (True, False):
        mode = "binary" if binary else "json"
        result = infer(client, model, x, datatype, names, binary, request_id=f"{model}-{mode}")
        resp = result.get_response()
        check(resp["model_name"] == model and resp["model_version"] == "1", f"{model}: {resp.get('model_name')}")
        check(resp.get("id") == f"{model}-{mode}", f"{model}: id {resp.get('id')}")
        for o in resp["outputs"]:
            check(("binary_data_size" in o.get("parameters", {})) == binary, f"{model} {mode}: output {o['name']} encoding")
        for name in names:
            compare(model, name, result.as_numpy(name), want[name], mode)
        print(f"ok  {model:20s} {mode:6s} {', '.join(f'{n}{list(want[n].shape)}' for n in names)}")
    return session, x, want


def variants(client, sessions):
    # No outputs asked: the client sets binary_data_output, all come back binary.
    session, x, want = sessions["ssd_mobilenet_v2"]
    result = infer(client, "ssd_mobilenet_v2", x, "UINT8", None, True)
    check(sorted(o["name"] for o in result.get_response()["outputs"]) == sorted(want), "all outputs by default")
    for name in want:
        compare("ssd_mobilenet_v2", name, result.as_numpy(name), want[name], "default outputs")
    # A subset of outputs, through the version path.
    only = "TFLite_Detection_PostProcess:2"
    result = infer(client, "ssd_mobilenet_v2", x, "UINT8", [only], False, model_version="1")
    check([o["name"] for o in result.get_response()["outputs"]] == [only], "output subset")
    compare("ssd_mobilenet_v2", only, result.as_numpy(only), want[only], "subset v1")
    print("ok  default outputs, output subset, version path")
    # A dynamic batch dimension: two images at once.
    session, x, _ = sessions["efficientnet_lite3"]
    batch = np.concatenate([x, x[:, ::-1]])
    want = reference(session, batch)
    result = infer(client, "efficientnet_lite3", batch, "UINT8", list(want), True)
    for name in want:
        compare("efficientnet_lite3", name, result.as_numpy(name), want[name], "batch 2")
    print("ok  efficientnet_lite3 batch of 2")


def expect_error(call, status, words, what):
    try:
        call()
    except InferenceServerException as e:
        check(e.status() == str(status), f"{what}: status {e.status()} != {status} ({e.message()})")
        for word in words:
            check(word in e.message(), f"{what}: '{word}' not in '{e.message()}'")
        print(f"ok  {what}: {status} {e.message()}")
        return
    raise AssertionError(f"{what}: no error")


def raw_status(url, path):
    try:
        with urllib.request.urlopen(f"http://{url}{path}") as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def errors(client, url, sessions):
    expect_error(lambda: client.get_model_metadata("no_such_model"), 404, ["no_such_model"], "unknown model")
    expect_error(lambda: client.get_model_metadata("yolov5s", model_version="7"), 404, ["'7'"], "unknown version")
    check(not client.is_model_ready("no_such_model"), "unknown model is not ready")
    _, x, _ = sessions["efficientnet_lite3"]
    small = x[:, :100, :100].copy()
    expect_error(lambda: infer(client, "efficientnet_lite3", small, "UINT8", None, True), 400, ["shape"], "wrong shape")
    expect_error(lambda: infer(client, "efficientnet_lite3", x.astype(np.float32), "FP32", None, False), 400, ["datatype"], "wrong datatype")
    expect_error(lambda: infer(client, "no_such_model", x, "UINT8", None, True), 404, ["no_such_model"], "infer on unknown model")
    status, body = raw_status(url, "/v2/models/no_such_model")
    check(status == 404 and isinstance(body.get("error"), str), f"raw 404 answer: {status} {body}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--image", required=True)
    args = ap.parse_args()
    client = httpclient.InferenceServerClient(args.url, connection_timeout=60.0, network_timeout=120.0)
    check(client.is_server_live(), "server not live")
    check(client.is_server_ready(), "server not ready")
    meta = client.get_server_metadata()
    check(meta["name"] == "osprey" and "binary_tensor_data" in meta["extensions"], f"server metadata {meta}")
    print(f"ok  server live, ready, {meta}")
    sessions = {m: run_model(client, args.repo, args.image, m) for m in MODELS}
    variants(client, sessions)
    errors(client, args.url, sessions)
    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
