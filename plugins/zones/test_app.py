"""Native unit tests of `zones` (`python3 -m unittest test_app`, after
`componentize-py -d ../../wit -w osprey:plugin/plugin bindings .` made
`wit_world/`): frames built from the world's own types, called as the host would."""

import json
import unittest

from componentize_py_types import Err
from wit_world.imports.types import Bbox, Detection, ErrorKind, Frame, Size

from app import Settings, Stage, inside


def frame(*dets) -> Frame:
    return Frame(input=None, image=None, source=Size(768, 576), placement=None, tensors=[], model="yolov5s",
                 detections=[Detection(0, label, score, Bbox(*box), []) for label, score, box in dets],
                 classes=None, branches=[], report=[], output=None)


# dog.jpg as YOLO sees it: a dog (left), a bicycle (across the middle), a truck (top right).
PHOTO = [("dog", 0.9, (130, 220, 310, 540)), ("bicycle", 0.8, (120, 120, 570, 420)), ("truck", 0.6, (460, 70, 690, 170))]
LEFT = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]
TOP_RIGHT = [[0.5, 0], [1, 0], [1, 0.5], [0.5, 0.5]]


class Test(unittest.TestCase):
    def test_counts_per_zone_and_keeps_what_lies_in_one(self):
        out = Stage().run(frame(*PHOTO), json.dumps({"zones": {"left": LEFT, "top-right": TOP_RIGHT}}))
        self.assertEqual([d.label for d in out.detections], ["dog", "bicycle", "truck"])
        zones = json.loads(dict(out.report)["zones"])
        self.assertEqual(zones["left"], {"total": 2, "labels": {"bicycle": 1, "dog": 1}})
        self.assertEqual(zones["top-right"], {"total": 1, "labels": {"truck": 1}})

    def test_pixels_and_a_label_filter(self):
        settings = {"zones": {"door": [[0, 0], [300, 0], [300, 576], [0, 576]]}, "units": "pixels", "labels": ["dog"]}
        out = Stage().run(frame(*PHOTO), json.dumps(settings))
        self.assertEqual([d.label for d in out.detections], ["dog"])
        self.assertEqual(json.loads(dict(out.report)["zones"]), {"door": {"total": 1, "labels": {"dog": 1}}})

    def test_a_triangle_is_a_triangle(self):
        triangle = [(0, 0), (10, 0), (0, 10)]
        self.assertTrue(inside(2, 2, triangle))
        self.assertFalse(inside(8, 8, triangle))

    def test_bad_settings_are_refused_by_run_and_by_the_check_alike(self):
        for settings, says in [({}, "`zones`"), ({"zones": {"a": LEFT}, "unit": "px"}, "unknown field `unit`"),
                               ({"zones": {"a": [[0, 0], [1, 1]]}}, "at least 3"), ({"zones": {"a": [[0, 0], [2, 0], [0, 1]]}}, "outside 0..1"),
                               ({"zones": {"a": LEFT}, "units": "feet"}, "`units`")]:
            with self.assertRaises(Err) as ran:
                Stage().run(frame(*PHOTO), json.dumps(settings))
            self.assertEqual(ran.exception.value.kind, ErrorKind.BAD_SETTINGS)
            self.assertIn(says, ran.exception.value.message)
            with self.assertRaises(Err) as checked:
                Settings().check(json.dumps(settings))
            self.assertEqual(checked.exception.value, ran.exception.value.message)

    def test_without_a_detector_before_it_says_so(self):
        f = frame()
        f.detections = None
        with self.assertRaises(Err) as e:
            Stage().run(f, json.dumps({"zones": {"a": LEFT}}))
        self.assertEqual(e.exception.value.kind, ErrorKind.BAD_INPUT)


if __name__ == "__main__":
    unittest.main()
