"""`zones`: which detections lie in which zones of a camera's picture.

A post-processing stage, after a detector (yolo, ssd). It keeps the
detections whose box centre lies inside at least one of the zones (polygons
from the settings) and adds to the answer, per zone, how many it holds of
each label:

    "zones": {"door": {"total": 1, "labels": {"person": 1}}, "yard": {"total": 0, "labels": {}}}

Settings:

- `zones` (required): a table of zone name -> polygon, each polygon a list of
  at least 3 `[x, y]` points, in order around it;
- `units`: `"fraction"` (default: x and y are fractions 0..1 of the photo's
  width and height, so one route serves photos of any size) or `"pixels"`
  (of the photo as the client sent it, after EXIF orientation);
- `labels`: count only these labels (default: every label).

Osprey's one Python plugin, built by componentize-py (see README.md).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import ErrorKind, Frame, StageError

FIELDS = {"zones", "units", "labels"}
UNITS = ("fraction", "pixels")


class BadSettings(Exception):
    pass


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse(settings: str) -> dict:
    """The settings, each checked; BadSettings names what is wrong."""
    try:
        s = json.loads(settings) if settings.strip() else {}
    except ValueError as e:
        raise BadSettings(f"settings: not JSON: {e}")
    if not isinstance(s, dict):
        raise BadSettings("settings: must be a table")
    unknown = sorted(set(s) - FIELDS)
    if unknown:
        raise BadSettings(f"settings: unknown field `{unknown[0]}`, expected one of {sorted(FIELDS)}")
    units = s.get("units", "fraction")
    if units not in UNITS:
        raise BadSettings(f"settings: `units` = {units!r} must be one of {list(UNITS)}")
    zones = s.get("zones")
    if not isinstance(zones, dict) or not zones:
        raise BadSettings("settings: `zones` must be a table of name = [[x, y], ...] with at least one zone")
    for name, polygon in zones.items():
        if not isinstance(polygon, list) or len(polygon) < 3:
            raise BadSettings(f"settings: `zones.{name}` must be a list of at least 3 [x, y] points")
        for point in polygon:
            if not (isinstance(point, list) and len(point) == 2 and all(number(v) for v in point)):
                raise BadSettings(f"settings: `zones.{name}`: {point!r} is not an [x, y] point")
            if units == "fraction" and not all(0 <= v <= 1 for v in point):
                raise BadSettings(f"settings: `zones.{name}`: {point!r} lies outside 0..1 (units = \"fraction\")")
    labels = s.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(l, str) for l in labels):
        raise BadSettings("settings: `labels` must be a list of label names")
    return {"zones": zones, "units": units, "labels": set(labels)}


def inside(x: float, y: float, polygon: list) -> bool:
    """Whether (x, y) lies inside the polygon: a ray to the right crosses its edges an odd number of times."""
    crossings = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        (xi, yi), (xj, yj) = polygon[i], polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            crossings = not crossings
        j = i
    return crossings


def count(frame: Frame, s: dict) -> Frame:
    if frame.detections is None:
        raise Err(StageError(ErrorKind.BAD_INPUT, "no detections in the frame: put a detector (yolo, ssd) before zones"))
    if s["units"] == "fraction" and frame.source is None:
        raise Err(StageError(ErrorKind.BAD_INPUT, "the frame has no source size, which units = \"fraction\" needs"))
    w, h = (frame.source.width, frame.source.height) if s["units"] == "fraction" else (1, 1)
    zones = {name: [(x * w, y * h) for x, y in polygon] for name, polygon in s["zones"].items()}
    per_zone = {name: {} for name in zones}
    kept = []
    for d in frame.detections:
        if s["labels"] and d.label not in s["labels"]:
            continue
        cx, cy = (d.box.x1 + d.box.x2) / 2, (d.box.y1 + d.box.y2) / 2
        holding = [name for name, polygon in zones.items() if inside(cx, cy, polygon)]
        for name in holding:
            per_zone[name][d.label] = per_zone[name].get(d.label, 0) + 1
        if holding:
            kept.append(d)
    frame.detections = kept
    answer = {name: {"total": sum(c.values()), "labels": dict(sorted(c.items()))} for name, c in per_zone.items()}
    frame.report.append(("zones", json.dumps(answer)))
    # Everything else (model, source, the upload...) goes on as it came.
    return frame


class Settings(exports.Settings):
    def check(self, settings: str) -> None:
        # Asked by the host before it serves the route: a wrong zone fails
        # `osprey check` and the reload, with the config's line and column.
        try:
            parse(settings)
        except BadSettings as e:
            raise Err(str(e))


class Stage(exports.Stage):
    def run(self, input: Frame, settings: str) -> Frame:
        try:
            s = parse(settings)
        except BadSettings as e:
            raise Err(StageError(ErrorKind.BAD_SETTINGS, str(e)))
        return count(input, s)
