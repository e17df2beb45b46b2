"""Native unit tests of `{{name}}` (`python3 -m unittest test_app`, after
`componentize-py ... bindings .` made `wit_world/`). Decoding and tensors are
the host's (`imaging`), which a native test does not have: these tests stop
before them; `osprey plugin run` tries the rest on a photo."""

import json
import unittest

from componentize_py_types import Err
from wit_world.imports.types import ErrorKind, Frame

from app import Stage


def empty() -> Frame:
    return Frame(input=None, image=None, source=None, placement=None, tensors=[], model=None, detections=None,
                 classes=None, branches=[], report=[], output=None)


class Test(unittest.TestCase):
    def test_without_an_upload_it_says_so(self):
        with self.assertRaises(Err) as e:
            Stage().run(empty(), "")
        self.assertEqual(e.exception.value.kind, ErrorKind.BAD_INPUT)
        self.assertIn("no upload", e.exception.value.message)

    def test_a_bad_setting_is_refused_by_name(self):
        for settings, name in [({"widht": 320}, "widht"), ({"width": 0}, "width"), ({"pad": 300}, "pad")]:
            with self.assertRaises(Err) as e:
                Stage().run(empty(), json.dumps(settings))
            self.assertEqual(e.exception.value.kind, ErrorKind.BAD_SETTINGS, settings)
            self.assertIn(name, e.exception.value.message)


if __name__ == "__main__":
    unittest.main()
