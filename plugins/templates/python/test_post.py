"""Native unit tests of `{{name}}` (`python3 -m unittest test_app`, after
`componentize-py ... bindings .` made `wit_world/`): frames built from the
world's own types, `run` called as the host would."""

import json
import unittest

from componentize_py_types import Err
from wit_world.imports.types import Bbox, Detection, ErrorKind, Frame, Size

from app import Settings, Stage


def frame(*dets) -> Frame:
    return Frame(input=None, image=None, source=Size(768, 576), placement=None, tensors=[], model="yolov5s",
                 detections=[Detection(0, label, score, Bbox(*box), []) for label, score, box in dets],
                 classes=None, branches=[], report=[], output=None)


PHOTO = [("dog", 0.9, (130, 220, 310, 540)), ("truck", 0.6, (460, 70, 690, 170))]


class Test(unittest.TestCase):
    def test_keeps_what_lies_in_the_zone_and_counts_it(self):
        out = Stage().run(frame(*PHOTO), json.dumps({"zone": [0, 0, 384, 576]}))
        self.assertEqual([d.label for d in out.detections], ["dog"])
        self.assertEqual(json.loads(dict(out.report)["{{name}}"]), {"kept": 1, "labels": {"dog": 1}})

    def test_without_settings_it_keeps_everything(self):
        out = Stage().run(frame(*PHOTO), "")
        self.assertEqual([d.label for d in out.detections], ["dog", "truck"])

    def test_a_misspelt_setting_is_refused_by_name(self):
        with self.assertRaises(Err) as e:
            Stage().run(frame(*PHOTO), json.dumps({"zones": [0, 0, 1, 1]}))
        self.assertEqual(e.exception.value.kind, ErrorKind.BAD_SETTINGS)
        self.assertIn("zones", e.exception.value.message)
        # The host's check before serving says the same.
        with self.assertRaises(Err) as c:
            Settings().check(json.dumps({"zones": [0, 0, 1, 1]}))
        self.assertEqual(c.exception.value, e.exception.value.message)


if __name__ == "__main__":
    unittest.main()
