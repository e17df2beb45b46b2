"""`{{name}}`: a preparing stage. It decodes the upload (natively, in the
host), letterboxes it into the model's input tensor and records where the
photo landed, so the detector after it can map its boxes back.

Settings (each optional): `width`, `height` (default 640x640), `pad` (gray
of the bars, default 114), `max_pixels` (larger photos are refused with 413,
default 40 million). The defaults fit `yolov5s`: FP32, NHWC, RGB, pixels /
255. Put it before a detector (see route.toml).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import imaging
from wit_world.imports.imaging import Channels, DecodeLimits, Fit, Layout, TensorSpec
from wit_world.imports.tensor import TensorType
from wit_world.imports.types import ErrorKind, Frame, NamedTensor, Size, StageError

DEFAULTS = {"width": 640, "height": 640, "pad": 114, "max_pixels": 40_000_000}
LIMITS = {"width": (1, 4096), "height": (1, 4096), "pad": (0, 255), "max_pixels": (1, 1 << 40)}


def fail(kind: ErrorKind, message: str) -> Err:
    return Err(StageError(kind, message))


def parse(settings: str) -> dict:
    s = json.loads(settings) if settings.strip() else {}
    # A misspelt setting is then an error naming it, not a silently ignored line.
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise fail(ErrorKind.BAD_SETTINGS, f"settings: unknown field `{unknown[0]}`, expected one of {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **s}
    for field, (lo, hi) in LIMITS.items():
        v = s[field]
        # Whole numbers may come written as floats (`640.0`), as a route's TOML may hold them.
        if not isinstance(v, (int, float)) or v != int(v) or not lo <= v <= hi:
            raise fail(ErrorKind.BAD_SETTINGS, f"settings: `{field}` = {v!r} must be a whole number in {lo}..={hi}")
        s[field] = int(v)
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
        kept = input.image is not None
        if kept:
            image = input.image
        elif input.input is not None:
            # Errors of the host's decode (bad-image, too-large...) are answers as they are.
            image = imaging.decode(input.input, DecodeLimits(s["max_pixels"]))
        else:
            raise fail(ErrorKind.BAD_INPUT, "no upload in the frame: {{name}} reads the request body, put it first")
        spec = TensorSpec(width=s["width"], height=s["height"], fit=Fit.LETTERBOX, pad=s["pad"], layout=Layout.NHWC,
                          channels=Channels.RGB, ty=TensorType.FP32, mean=[], std=[255.0, 255.0, 255.0])
        tensor, placement = imaging.to_tensor(image, spec)
        input.source = Size(image.width(), image.height())
        input.placement = placement
        input.tensors.append(NamedTensor("input", tensor))
        return input
