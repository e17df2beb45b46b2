#!/usr/bin/env python3
"""Check the converted Osprey models on real photos with ONNX Runtime.

Run after `python3 models/fetch.py --with-venv`, inside the conversion venv:

    $OSPREY_CACHE/venv/bin/python models/verify.py     # default ~/.cache/osprey

For each model it prints the inputs/outputs exactly as onnxruntime lists
them (and asserts they match models/models.toml), then runs the reference
preprocessing and asserts known results:
  * SSD-MobileNetV2: cat on chelsea.png, person on astronaut.png, cup on
    coffee.png; its dog box on dog.jpg overlaps YOLO's (proves the
    ymin,xmin,ymax,xmax order);
  * YOLOv5s: dog, bicycle and truck/car on dog.jpg (obj*cls, NMS), horses on
    horses.jpg, and a batch of 2 equal to two single runs;
  * EfficientNet-Lite3: a cat class first on chelsea.png, espresso on coffee.png.
Images are decoded and resized with TensorFlow (already in the venv).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402

import fetch  # noqa: E402  (cache location and manifest)

CACHE = fetch.cache_dir()
MANIFEST = fetch.load_manifest()
IMAGES = CACHE / "images"
TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}


def load_rgb(name: str) -> np.ndarray:
    """HxWx3 uint8 RGB."""
    data = tf.io.read_file(str(IMAGES / name))
    return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()


def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize (no antialias, like OpenCV INTER_LINEAR), float32 0..255."""
    return tf.image.resize(img, (h, w), method="bilinear").numpy()


def session(name: str):
    """Open a model, print its I/O as onnxruntime lists it, assert it matches the manifest."""
    spec = MANIFEST["models"][name]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(CACHE / "models" / name / "model.onnx"), opts)
    labels = (CACHE / "models" / name / "labels.txt").read_text().split("\n")[:-1]
    print(f"\n== {name} ({spec['role']}), {len(labels)} labels")
    for kind, values in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
        for v in values:
            print(f"  {kind:6} {v.name!r:36} shape={v.shape} dtype={TYPES[v.type]}")
    got = ([(v.name, v.shape, TYPES[v.type]) for v in sess.get_inputs()],
           [(v.name, v.shape, TYPES[v.type]) for v in sess.get_outputs()])
    want = ([(spec["input"]["name"], spec["input"]["shape"], spec["input"]["dtype"])],
            [(o["name"], o["shape"], o["dtype"]) for o in spec["outputs"]])
    assert got == want, f"{name}: I/O {got} != manifest {want}"
    return sess, labels


# ---------------------------------------------------------------------------
# SSD-MobileNetV2 (uint8 NHWC 300x300 RGB, stretched; NMS inside the model)
# ---------------------------------------------------------------------------

def ssd_detect(sess, labels, image: str, min_score=0.5):
    """[(label, score, (ymin, xmin, ymax, xmax) in 0..1)] above min_score."""
    img = load_rgb(image)
    x = np.round(resize(img, 300, 300)).clip(0, 255).astype(np.uint8)[None]
    boxes, classes, scores, count = sess.run(None, {sess.get_inputs()[0].name: x})
    dets = []
    for i in range(int(count[0])):
        if scores[0, i] >= min_score:
            # class output = labels.txt line index (COCO-91 id - 1), as a float
            dets.append((labels[int(classes[0, i])], float(scores[0, i]), tuple(boxes[0, i].tolist())))
    print(f"  {image}: " + ", ".join(f"{l} {s:.2f}" for l, s, _ in dets))
    return dets


# ---------------------------------------------------------------------------
# YOLOv5s (float32 NHWC 640x640 RGB/255, letterboxed with 114)
# ---------------------------------------------------------------------------

def letterbox(img: np.ndarray, size=640, pad=114.0):
    """Resize keeping aspect ratio, pad evenly; returns (image, scale, (padx, pady))."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nh, nw = round(h * r), round(w * r)
    out = np.full((size, size, 3), pad, np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resize(img, nh, nw)
    return out, r, (left, top)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list:
    """Greedy NMS on x1,y1,x2,y2 boxes; returns kept indices."""
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        order = rest[inter / (area(boxes[i]) + area(boxes[rest]) - inter) <= iou_thr]
    return keep


def yolo_decode(pred: np.ndarray, labels, r, pad, conf=0.25, iou=0.45):
    """[(label, score, (x1,y1,x2,y2) in original pixels)] from one [25200,85] row set."""
    obj, cls = pred[:, 4], pred[:, 5:]
    cls_id = cls.argmax(1)
    score = obj * cls[np.arange(len(cls)), cls_id]
    m = score >= conf
    cx, cy, w, h = (pred[m, :4] * 640).T  # model gives 0..1 of the 640 input
    boxes = np.stack([cx - w / 2 - pad[0], cy - h / 2 - pad[1], cx + w / 2 - pad[0], cy + h / 2 - pad[1]], 1) / r
    score, cls_id = score[m], cls_id[m]
    # class-aware NMS: offset boxes per class so classes never suppress each other
    keep = nms(boxes + cls_id[:, None] * 10000.0, score, iou)
    return [(labels[cls_id[k]], float(score[k]), tuple(round(float(v), 1) for v in boxes[k])) for k in keep]


def yolo_input(image: str):
    lb, r, pad = letterbox(load_rgb(image))
    return (lb / 255.0).astype(np.float32)[None], r, pad


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---------------------------------------------------------------------------
# EfficientNet-Lite3 (uint8 NHWC 280x280 RGB, stretched; uint8 softmax / 256)
# ---------------------------------------------------------------------------

def classify(sess, labels, image: str, k=3):
    x = np.round(resize(load_rgb(image), 280, 280)).clip(0, 255).astype(np.uint8)[None]
    probs = sess.run(None, {"images": x})[0][0].astype(np.float32) / 256.0
    top = probs.argsort()[::-1][:k]
    print(f"  {image}: " + ", ".join(f"[{i}] {labels[i]!r} {probs[i]:.2f}" for i in top))
    return [(int(i), labels[i], float(probs[i])) for i in top]


def main() -> None:
    print(f"onnxruntime {ort.__version__}, cache {CACHE}")

    # --- SSD -------------------------------------------------------------
    ssd, ssd_labels = session("ssd_mobilenet_v2")
    assert ssd_detect(ssd, ssd_labels, "chelsea.png")[0][0] == "cat"
    assert "person" in [d[0] for d in ssd_detect(ssd, ssd_labels, "astronaut.png")]
    assert "cup" in [d[0] for d in ssd_detect(ssd, ssd_labels, "coffee.png")]
    ssd_dog = ssd_detect(ssd, ssd_labels, "dog.jpg", min_score=0.3)

    # --- YOLOv5s ---------------------------------------------------------
    yolo, yolo_labels = session("yolov5s")
    x, r, pad = yolo_input("dog.jpg")
    dets = yolo_decode(yolo.run(None, {"input_1": x})[0][0], yolo_labels, r, pad)
    print("  dog.jpg: " + ", ".join(f"{l} {s:.2f} {b}" for l, s, b in dets))
    found = {d[0] for d in dets}
    assert {"dog", "bicycle"} <= found and found & {"truck", "car"}, found

    x2, r2, pad2 = yolo_input("horses.jpg")
    horses = yolo_decode(yolo.run(None, {"input_1": x2})[0][0], yolo_labels, r2, pad2)
    print("  horses.jpg: " + ", ".join(f"{l} {s:.2f}" for l, s, _ in horses))
    assert sum(d[0] == "horse" for d in horses) >= 2

    # dynamic batch: [dog, horses] in one run equals the two single runs
    both = yolo.run(None, {"input_1": np.concatenate([x, x2])})[0]
    assert both.shape == (2, 25200, 85)
    assert np.allclose(both[0], yolo.run(None, {"input_1": x})[0][0], atol=1e-4)
    assert np.allclose(both[1], yolo.run(None, {"input_1": x2})[0][0], atol=1e-4)
    print("  batch of 2: same as two single runs")

    # SSD box order check: SSD's (ymin,xmin,ymax,xmax) dog box, in pixels as
    # x1,y1,x2,y2, must overlap YOLO's dog box.
    h, w = load_rgb("dog.jpg").shape[:2]
    ssd_box = next(b for l, _, b in ssd_dog if l == "dog")
    ssd_xyxy = (ssd_box[1] * w, ssd_box[0] * h, ssd_box[3] * w, ssd_box[2] * h)
    yolo_box = next(b for l, _, b in dets if l == "dog")
    overlap = iou(ssd_xyxy, yolo_box)
    print(f"  SSD dog box as ymin,xmin,ymax,xmax vs YOLO dog box: IoU {overlap:.2f}")
    assert overlap > 0.5

    # --- EfficientNet-Lite3 ------------------------------------------------
    eff, eff_labels = session("efficientnet_lite3")
    top = classify(eff, eff_labels, "chelsea.png")
    assert 281 <= top[0][0] <= 285 and "cat" in top[0][1], top  # ImageNet 281-285: domestic cats
    top = classify(eff, eff_labels, "coffee.png")
    assert top[0][1] == "espresso", top
    b2 = eff.run(None, {"images": np.zeros((2, 280, 280, 3), np.uint8)})[0]
    assert b2.shape == (2, 1000)

    print("\nall checks passed")


if __name__ == "__main__":
    main()
