"""One fault run with every harness error message reworded at construction (a test helper).

``python tests/faults/reworded_run.py FAULT`` patches :class:`harness.errors.HarnessError` so that no
message the harness writes survives (each becomes ``reworded <hash>``), runs the fault through
``run_once`` and prints the verdict's layer and cause as JSON: classification must not depend on
the wording of any message.
"""

from __future__ import annotations

import hashlib
import json
import sys

from harness.errors import HarnessError

_original_init = HarnessError.__init__


def _reworded_init(self, message, *args, **kwargs):
    reworded = "reworded " + hashlib.sha1(str(message).encode()).hexdigest()[:10]
    _original_init(self, reworded, *args, **kwargs)


HarnessError.__init__ = _reworded_init

from harness.runs.runner import run_once  # noqa: E402 - after the patch, on purpose

if __name__ == "__main__":
    result = run_once(faults=[sys.argv[1]], stream_duration=3.0)
    v = result.verdict
    print(json.dumps({"layer": v.layer if v else None, "cause": v.cause if v else None,
                      "message": v.message if v else None}))
