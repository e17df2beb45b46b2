"""`{{name}}`: a reporting stage. It leaves the detections as they are and
adds a field to the answer: how many there are in all and of each label,
above a score, and the photo's size:
`"{{name}}": {"total": 2, "labels": {"dog": 1, "truck": 1}, "width": 768, "height": 576}`.

Settings (optional): `min_score = 0.5` (default 0: count them all).
Put it after a detector (see route.toml).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import ErrorKind, Frame, StageError

SETTINGS = {"min_score"}


def fail(kind: ErrorKind, message: str) -> Err:
    return Err(StageError(kind, message))


def parse(settings: str) -> dict:
    s = json.loads(settings) if settings.strip() else {}
    # A misspelt setting is then an error naming it, not a silently ignored line.
    unknown = sorted(set(s) - SETTINGS)
    if unknown:
        raise fail(ErrorKind.BAD_SETTINGS, f"settings: unknown field `{unknown[0]}`, expected one of {sorted(SETTINGS)}")
    min_score = s.get("min_score", 0.0)
    if not isinstance(min_score, (int, float)) or not 0.0 <= min_score <= 1.0:
        raise fail(ErrorKind.BAD_SETTINGS, f"settings: `min_score` = {min_score!r} is out of range 0..=1")
    return {"min_score": min_score}


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
        per_label: dict[str, int] = {}
        for d in input.detections:
            if d.score >= s["min_score"]:
                per_label[d.label] = per_label.get(d.label, 0) + 1
        answer = {"total": sum(per_label.values()), "labels": dict(sorted(per_label.items()))}
        if input.source is not None:
            answer["width"], answer["height"] = input.source.width, input.source.height
        input.report.append(("{{name}}", json.dumps(answer)))
        return input
