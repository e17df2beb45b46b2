"""`{{name}}`: a post-processing stage. It keeps the detections whose box
centre lies inside a zone of the photo and puts in the answer how many of
each label it kept: `"{{name}}": {"kept": 1, "labels": {"dog": 1}}`.

Settings (each optional): `zone = [x1, y1, x2, y2]` in the photo's pixels
(default: the whole photo), `labels = ["dog", ...]` (default: every label).
Put it after a detector (see route.toml).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import ErrorKind, Frame, StageError

SETTINGS = {"zone", "labels"}


def fail(kind: ErrorKind, message: str) -> Err:
    return Err(StageError(kind, message))


def parse(settings: str) -> dict:
    s = json.loads(settings) if settings.strip() else {}
    # A misspelt setting is then an error naming it, not a silently ignored line.
    unknown = sorted(set(s) - SETTINGS)
    if unknown:
        raise fail(ErrorKind.BAD_SETTINGS, f"settings: unknown field `{unknown[0]}`, expected one of {sorted(SETTINGS)}")
    zone = s.get("zone")
    if zone is not None and (len(zone) != 4 or not all(isinstance(v, (int, float)) for v in zone)):
        raise fail(ErrorKind.BAD_SETTINGS, f"settings: `zone` must be [x1, y1, x2, y2], not {zone!r}")
    return s


class Settings(exports.Settings):
    def check(self, settings: str) -> None:
        # Asked by the host before it serves the route: a wrong setting fails
        # `osprey check` and the reload, with the config's line and column.
        try:
            parse(settings)
        except Err as e:
            raise Err(e.value.message)
        except ValueError as e:  # not JSON at all
            raise Err(f"settings: {e}")


class Stage(exports.Stage):
    def run(self, input: Frame, settings: str) -> Frame:
        s = parse(settings)
        if input.detections is None:
            raise fail(ErrorKind.BAD_INPUT, "no detections in the frame: put a detector (yolo, ssd) before {{name}}")
        zone, labels = s.get("zone"), s.get("labels") or []

        def keep(d) -> bool:
            cx, cy = (d.box.x1 + d.box.x2) / 2, (d.box.y1 + d.box.y2) / 2
            inside = zone is None or (zone[0] <= cx <= zone[2] and zone[1] <= cy <= zone[3])
            return inside and (not labels or d.label in labels)

        input.detections = [d for d in input.detections if keep(d)]
        per_label: dict[str, int] = {}
        for d in input.detections:
            per_label[d.label] = per_label.get(d.label, 0) + 1
        input.report.append(("{{name}}", json.dumps({"kept": len(input.detections), "labels": dict(sorted(per_label.items()))})))
        # Everything else (model, source, the upload...) goes on as it came.
        return input
