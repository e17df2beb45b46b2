#!/usr/bin/env python3
"""Reference answers of ensemble-boxes 1.0.9 `weighted_boxes_fusion`, for
plugins/fusion/tests/ensemble_boxes.rs, which runs this with the test venv's
interpreter (`make test-deps`) and checks the fusion plugin's WBF against it.

Prints one JSON document on stdout:

    {"ensemble_boxes": "1.0.9", "skipped_order_sensitive": 3,
     "cases": [{"name", "iou_thr", "skip_box_thr", "conf_type",
                "allows_overflow", "weights", "models", "expected"}]}

Every float (`iou_thr`, `skip_box_thr`, `weights`, each box's `score` and
`box`, in inputs and in `expected`) is written as the bits of its IEEE-754
double, so that both sides see exactly the same numbers: a decimal JSON
parser may be a unit in the last place off.

The cases are random but fixed (seeded): 1 to 5 models seeing a few objects
with jitter, misses, relabelled and duplicate boxes and false positives;
boxes reaching over the edges, with swapped corners or of zero area; ties of
scores; every conf_type, with and without weights; and boxes on a 1/8 grid
whose IoU equals `iou_thr` exactly. ensemble-boxes sorts equal scores with
numpy's unstable argsort, so the order of ties is the CPU's; a case whose
answer changes when the boxes are shuffled is left out (and counted).
"""

import json
import struct
import sys
import warnings
from importlib.metadata import version

import numpy as np

try:
    from ensemble_boxes import weighted_boxes_fusion
except ImportError as e:
    sys.exit(f"ensemble_boxes_ref.py: {e}: run `make test-deps` (installs ensemble-boxes==1.0.9)")

WANT = "1.0.9"
CONF_TYPES = ["avg", "max", "box_and_model_avg", "absent_model_aware_avg"]
IOU_THRS = [0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9]
SCORE_POOL = [0.25, 0.5, 0.75, 0.9, 1.0]
RANDOM_CASES = 400
GRID_CASES = 80


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def jittered(rng, obj, spread):
    cx, cy, w, h = obj["cx"], obj["cy"], obj["w"], obj["h"]
    j = rng.normal(0.0, spread, 4) * np.array([w, h, w, h])
    return [cx - w / 2 + j[0], cy - h / 2 + j[1], cx + w / 2 + j[2], cy + h / 2 + j[3]]


def odd_box(rng):
    """A box the prefilter has to fix or drop."""
    x, y = rng.uniform(0.0, 0.9, 2)
    kind = rng.integers(0, 4)
    if kind == 0:  # corners swapped
        return [x + 0.1, y + 0.1, x, y]
    if kind == 1:  # zero width
        return [x, y, x, y + 0.1]
    if kind == 2:  # wholly right of the image: zero width once clamped
        return [1.1, y, 1.3, y + 0.1]
    return [-0.2, -0.1, 0.15, 1.2]  # over three edges


def random_case(rng):
    n_models = int(rng.integers(1, 6))
    n_labels = int(rng.integers(1, 4))
    ties = rng.random() < 0.35
    objects = []
    for _ in range(int(rng.integers(0, 10))):
        w, h = rng.uniform(0.02, 0.5, 2)
        centre = (-0.05, 1.05) if rng.random() < 0.25 else (0.1, 0.9)
        cx, cy = rng.uniform(*centre, 2)
        objects.append({"cx": cx, "cy": cy, "w": w, "h": h, "label": int(rng.integers(0, n_labels))})
    spread = float(rng.choice([0.02, 0.06, 0.15]))

    def score():
        return float(rng.choice(SCORE_POOL)) if ties else float(rng.uniform(0.0, 1.0))

    def label(obj):
        return obj["label"] if rng.random() > 0.1 else int(rng.integers(0, n_labels))

    models = []
    for _ in range(n_models):
        boxes = []
        for obj in objects:
            if rng.random() < 0.2:
                continue  # missed
            for _ in range(2 if rng.random() < 0.15 else 1):
                boxes.append((label(obj), score(), jittered(rng, obj, spread)))
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0.0, 0.9, 2)
            w, h = rng.uniform(0.01, 0.3, 2)
            boxes.append((int(rng.integers(0, n_labels)), score(), [x, y, x + w, y + h]))
        if rng.random() < 0.2:
            boxes.append((int(rng.integers(0, n_labels)), score(), odd_box(rng)))
        models.append(boxes)
    # The same box, with the same score, from two models of equal weight.
    if ties and n_models > 1 and models[0]:
        for t in range(1, n_models):
            if rng.random() < 0.5:
                models[t].insert(int(rng.integers(0, len(models[t]) + 1)), models[0][int(rng.integers(0, len(models[0])))])
    return models, weights_for(rng, n_models, equal=ties), float(rng.choice(IOU_THRS))


def weights_for(rng, n_models, equal):
    pick = rng.integers(0, 3)
    if equal or pick == 0:
        return None
    if pick == 1:
        return [int(w) for w in rng.integers(1, 4, n_models)]
    return [float(w) for w in rng.uniform(0.5, 3.0, n_models)]


def grid_case(rng):
    """Boxes on a 1/8 grid: IoUs are ratios such as 1/3 or 1/2, computed
    exactly, so some equal `iou_thr` and test its strict comparison."""
    n_models = int(rng.integers(2, 5))
    models = []
    for _ in range(n_models):
        boxes = []
        for _ in range(int(rng.integers(1, 6))):
            x1, y1 = rng.integers(0, 7, 2)
            x2 = rng.integers(x1 + 1, 9)
            y2 = rng.integers(y1 + 1, 9)
            boxes.append((int(rng.integers(0, 2)), float(rng.uniform(0.05, 1.0)), [x1 / 8, y1 / 8, x2 / 8, y2 / 8]))
        models.append(boxes)
    return models, weights_for(rng, n_models, equal=False), float(rng.choice([1 / 3, 0.5, 0.25, 2 / 3, 1 / 7]))


def run(models, weights, iou_thr, skip, conf_type, overflow):
    boxes, scores, labels = weighted_boxes_fusion(
        [[b for _, _, b in m] for m in models],
        [[s for _, s, _ in m] for m in models],
        [[lab for lab, _, _ in m] for m in models],
        weights=weights,
        iou_thr=iou_thr,
        skip_box_thr=skip,
        conf_type=conf_type,
        allows_overflow=overflow,
    )
    return [(int(lab), float(s), [float(v) for v in b]) for b, s, lab in zip(boxes, scores, labels)]


def same(a, b, tol=1e-9):
    """The same fused boxes, to `tol`, in any order."""
    if len(a) != len(b):
        return False
    left = list(b)
    for lab, s, box in a:
        hit = next(
            (i for i, (l2, s2, b2) in enumerate(left)
             if l2 == lab and abs(s2 - s) < tol and max(abs(p - q) for p, q in zip(box, b2)) < tol),
            None,
        )
        if hit is None:
            return False
        left.pop(hit)
    return True


def nudged(models, weights, forward):
    """The boxes with scores raised by a hair, so that boxes of equal weighted
    score are taken in input order (`forward`) or the reverse of it."""
    n = sum(len(m) for m in models)
    out, k = [], 0
    for t, m in enumerate(models):
        w = 1.0 if weights is None else float(weights[t])
        nm = []
        for lab, s, b in m:
            step = (n - k) if forward else (k + 1)
            nm.append((lab, s + step * 1e-10 / w, b))
            k += 1
        out.append(nm)
    return out


def order_sensitive(rng, models, answer, *args):
    """Whether the answer depends on the order in which boxes of equal score
    are taken: input order, its reverse, or two shuffles."""
    weights = args[0]
    variants = [nudged(models, weights, True), nudged(models, weights, False)]
    for _ in range(2):
        variants.append([[m[i] for i in rng.permutation(len(m))] for m in models])
    return any(not same(run(v, *args), answer, 1e-6) for v in variants)


def has_ties(models, weights, skip):
    """Whether two boxes of one label have equal weighted scores."""
    seen = set()
    for t, m in enumerate(models):
        w = 1.0 if weights is None else weights[t]
        for lab, s, _ in m:
            if s >= skip:
                key = (lab, s * w)
                if key in seen:
                    return True
                seen.add(key)
    return False


def encode(name, models, weights, iou_thr, skip, conf_type, overflow, answer):
    return {
        "name": name,
        "ties": has_ties(models, weights, skip),
        "iou_thr": bits(iou_thr),
        "skip_box_thr": bits(skip),
        "conf_type": conf_type,
        "allows_overflow": overflow,
        "weights": None if weights is None else [bits(w) for w in weights],
        "models": [[{"label": lab, "score": bits(s), "box": [bits(v) for v in b]} for lab, s, b in m] for m in models],
        "expected": [{"label": lab, "score": bits(s), "box": [bits(v) for v in b]} for lab, s, b in answer],
    }


def main():
    if version("ensemble-boxes") != WANT:
        sys.exit(f"ensemble_boxes_ref.py: ensemble-boxes {version('ensemble-boxes')} found, {WANT} wanted: run `make test-deps`")
    warnings.simplefilter("ignore")  # the prefilter warns about every odd box
    cases, skipped = [], 0
    for seed in range(RANDOM_CASES + GRID_CASES):
        rng = np.random.default_rng(seed)
        grid = seed >= RANDOM_CASES
        models, weights, iou_thr = grid_case(rng) if grid else random_case(rng)
        skip = float(rng.choice([0.0, 0.0, 0.05, 0.2, 0.5]))
        conf_type = CONF_TYPES[seed % len(CONF_TYPES)]
        overflow = bool(conf_type == "avg" and rng.random() < 0.3)
        args = (weights, iou_thr, skip, conf_type, overflow)
        answer = run(models, *args)
        if order_sensitive(rng, models, answer, *args):
            skipped += 1
            continue
        name = f"{'grid' if grid else 'random'}-{seed}"
        cases.append(encode(name, models, *args, answer))
    json.dump({"ensemble_boxes": WANT, "skipped_order_sensitive": skipped, "cases": cases}, sys.stdout)


if __name__ == "__main__":
    main()
