"""The three vision pipelines of osprey's default config, the way a Python
service usually does them: Pillow to decode and resize, numpy for the
tensors and the post-processing, one ONNX Runtime CPU session per model,
loaded once per worker process. `flask_app.py` and `fastapi_app.py` serve it.

Same work as osprey's routes (config/osprey.toml, models/models.toml):

- /v1/detect       YOLOv5s: letterbox to 640x640 (pad 114), RGB / 255, fp32
                   NHWC; score = objectness x best class score >= 0.25,
                   class-aware NMS at IoU 0.45, max 300, back to source pixels.
- /v1/detect/fast  SSD-MobileNetV2: stretch to 300x300, uint8 NHWC; NMS is in
                   the model; rows of its valid count scoring >= 0.4, max 100.
- /v1/classify     EfficientNet-Lite3: stretch to 280x280, uint8 NHWC; uint8
                   softmax / 256, top 5.

Decoding is Pillow's (as in the seeds' Flask code, whose letterbox is the
keras-yolo `letterbox_image`: resize, paste on a grey canvas), with EXIF
orientation applied as osprey does. A JPEG much larger than the model input
is decoded by libjpeg at 1/2, 1/4 or 1/8 scale through Pillow's `draft()`,
never below the size it is resized to: what a Python engineer does with
phone photos, and what osprey does too; sizes and boxes stay in the photo's
own pixels. Resizing is Pillow's BILINEAR, which like osprey's
`fast_image_resize` bilinear convolution widens its filter when shrinking
(antialiased).

Environment:
  OSPREY_MODELS           folder of <name>/model.onnx + labels.txt (default: the repo's models/)
  PEERS_ORT_THREADS       intra-op threads per session (default 2 = osprey's default `threads` on 2 cores)
  OSPREY_PEER_READY_DIR   when set, each worker touches <dir>/<pid> once its models are loaded and warm
"""

import io
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("OSPREY_MODELS", REPO / "models"))
THREADS = int(os.environ.get("PEERS_ORT_THREADS", "2"))
MAX_PIXELS = 40_000_000  # osprey's image-prep default
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class BadRequest(Exception):
    """An upload we cannot work on: the apps answer it with a 400."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Model:
    """One ONNX Runtime session and its labels."""

    def __init__(self, name):
        self.name = name
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        # osprey's session options: no busy-waiting between ops, which on a
        # 2-core box would steal the other worker's CPU.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = MODELS / name / "model.onnx"
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        with open(MODELS / name / "labels.txt", encoding="utf-8") as f:
            self.labels = [line.strip() for line in f]
        # The first run allocates the session's buffers: pay it now (osprey
        # also runs each session once on zeros at load).
        shape = [d if isinstance(d, int) else 1 for d in self.input.shape]
        dtype = np.uint8 if self.input.type == "tensor(uint8)" else np.float32
        self.run(np.zeros(shape, dtype))

    def run(self, x):
        """Outputs in the model's order, and the milliseconds the run took."""
        t = time.perf_counter()
        outputs = self.session.run(None, {self.input.name: x})
        return outputs, (time.perf_counter() - t) * 1e3

    def label(self, class_id):
        if class_id < len(self.labels) and self.labels[class_id]:
            return self.labels[class_id]
        return f"class_{class_id}"


# EXIF orientations that turn the photo a quarter: width and height swap.
TURNED = (5, 6, 7, 8)


def decode(data, need):
    """The upload as RGB, maybe at a reduced scale, and the photo's full
    size (both after EXIF orientation). `need(w, h)` is the smallest size a
    w x h photo is used at: a JPEG is decoded no smaller than that."""
    if not data:
        raise BadRequest("empty_body", "no image in the request")
    try:
        img = Image.open(io.BytesIO(data))
        turned = img.format == "JPEG" and img.getexif().get(0x0112, 1) in TURNED
        w, h = img.size[::-1] if turned else img.size
        if img.format == "JPEG":
            nw, nh = need(w, h)
            img.draft("RGB", (nh, nw) if turned else (nw, nh))
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB"), (w, h)
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise BadRequest("unsupported_media_type", str(e)) from e
    except OSError as e:  # truncated or corrupt
        raise BadRequest("bad_image", f"cannot decode image: {e}") from e


def placed(w, h, size):
    """Scale and size of a w x h photo letterboxed into size x size."""
    scale = min(size / w, size / h)
    return scale, max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))


def letterbox(img, source, size, pad):
    """Resize keeping the aspect ratio, centred on a grey square; returns the
    canvas, the scale and the top-left offset of the photo in it. `img` may
    be a reduced decode of a photo of `source` size: the scale is the photo's."""
    scale, nw, nh = placed(*source, size)
    canvas = Image.new("RGB", (size, size), (pad, pad, pad))
    dx, dy = (size - nw) // 2, (size - nh) // 2
    canvas.paste(img.resize((nw, nh), Image.BILINEAR), (dx, dy))
    return canvas, scale, dx, dy


def nms(boxes, scores, iou):
    """Greedy NMS; indexes of the kept boxes, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


def detection(model, class_id, score, box):
    return {
        "label": model.label(int(class_id)),
        "class_id": int(class_id),
        "score": round(float(score), 4),
        "box": [round(float(v), 1) for v in box],
    }


def answer(model, source, key, results, total_start, inference_ms):
    return {
        "model": model.name,
        "model_version": "1",
        "image": {"width": source[0], "height": source[1]},
        key: results,
        "timing_ms": {
            "total": round((time.perf_counter() - total_start) * 1e3, 2),
            "inference": round(inference_ms, 2),
        },
    }


class Pipelines:
    """The three models of one worker process and what each route does."""

    def __init__(self):
        self.yolo = Model("yolov5s")
        self.ssd = Model("ssd_mobilenet_v2")
        self.classifier = Model("efficientnet_lite3")
        ready = os.environ.get("OSPREY_PEER_READY_DIR")
        if ready:
            Path(ready, str(os.getpid())).touch()

    def detect(self, data, conf=0.25, iou=0.45, max_det=300):
        start = time.perf_counter()
        img, (w, h) = decode(data, lambda w, h: placed(w, h, 640)[1:])
        canvas, scale, dx, dy = letterbox(img, (w, h), 640, 114)
        x = np.asarray(canvas, dtype=np.float32)[None] / 255.0
        (pred,), ms = self.yolo.run(x)
        p = pred[0]
        p = p[p[:, 4] >= conf]  # class scores are <= 1: objectness alone rules most rows out
        cls = p[:, 5:].argmax(1)
        score = p[:, 4] * p[np.arange(len(p)), 5 + cls]
        p, cls, score = p[score >= conf], cls[score >= conf], score[score >= conf]
        centre, half = p[:, 0:2] * 640, p[:, 2:4] * 320
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        # Class-aware NMS in one pass: each class's boxes moved far apart.
        keep = nms(boxes + cls[:, None] * 4096.0, score, iou)[:max_det]
        boxes = (boxes[keep] - [dx, dy, dx, dy]) / scale
        boxes = boxes.clip(0, [w, h, w, h])
        dets = [detection(self.yolo, c, s, b) for c, s, b in zip(cls[keep], score[keep], boxes)]
        return answer(self.yolo, (w, h), "detections", dets, start, ms)

    def detect_fast(self, data, conf=0.4, max_det=100):
        start = time.perf_counter()
        img, (w, h) = decode(data, lambda w, h: (300, 300))
        x = np.asarray(img.resize((300, 300), Image.BILINEAR), dtype=np.uint8)[None]
        (boxes, classes, scores, count), ms = self.ssd.run(x)
        n = min(int(max(count[0], 0)), boxes.shape[1])
        boxes, classes, scores = boxes[0, :n], classes[0, :n], scores[0, :n]
        keep = np.flatnonzero(scores >= conf)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
        # ymin, xmin, ymax, xmax of the stretched input = fractions of the photo.
        xyxy = boxes[keep][:, [1, 0, 3, 2]] * [w, h, w, h]
        dets = [
            detection(self.ssd, round(float(c)), s, b)
            for c, s, b in zip(classes[keep], scores[keep], xyxy.clip(0, [w, h] * 2))
        ]
        return answer(self.ssd, (w, h), "detections", dets, start, ms)

    def classify(self, data, top=5):
        start = time.perf_counter()
        img, source = decode(data, lambda w, h: (280, 280))
        x = np.asarray(img.resize((280, 280), Image.BILINEAR), dtype=np.uint8)[None]
        (out,), ms = self.classifier.run(x)
        probs = out[0].astype(np.float32) / 256.0
        best = np.argsort(-probs, kind="stable")[:top]
        results = [
            {"label": self.classifier.label(int(i)), "class_id": int(i), "score": round(float(probs[i]), 4)}
            for i in best
        ]
        return answer(self.classifier, source, "top", results, start, ms)
