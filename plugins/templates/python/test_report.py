"""Native unit tests of `{{name}}` (`python3 -m unittest test_app`, after
`componentize-py ... bindings .` made `wit_world/`): frames built from the
world's own types, `run` called as the host would."""

import json
import unittest

from componentize_py_types import Err
from wit_world.imports.types import Bbox, Detection, ErrorKind, Frame, Size

from app import Stage


def frame(*dets) -> Frame:
    return Frame(input=None, image=None, source=Size(768, 576), placement=None, tensors=[], model="yolov5s",
                 detections=[Detection(0, label, score, Bbox(*box), []) for label, score, box in dets],
                 classes=None, branches=[], report=[], output=None)


PHOTO = [("dog", 0.9, (130, 220, 310, 540)), ("dog", 0.3, (20, 20, 60, 60)), ("truck", 0.6, (460, 70, 690, 170))]


class Test(unittest.TestCase):
    def test_counts_above_the_score_and_keeps_the_detections(self):
        out = Stage().run(frame(*PHOTO), json.dumps({"min_score": 0.5}))
        want = {"total": 2, "labels": {"dog": 1, "truck": 1}, "width": 768, "height": 576}
        self.assertEqual(json.loads(dict(out.report)["{{name}}"]), want)
        self.assertEqual([d.label for d in out.detections], ["dog", "dog", "truck"])

    def test_a_score_out_of_range_is_refused_by_name(self):
        with self.assertRaises(Err) as e:
            Stage().run(frame(*PHOTO), json.dumps({"min_score": 2}))
        self.assertEqual(e.exception.value.kind, ErrorKind.BAD_SETTINGS)
        self.assertIn("min_score", e.exception.value.message)


if __name__ == "__main__":
    unittest.main()
