"""``--verify-with``: the user's own inference code checks every file before it is written.

The function (``package.module:function``) takes the path of an image file and returns
the class index the user's pipeline gives it. It gets a temporary file holding exactly the
bytes that are then written (same extension), so it checks the file as stored. An image
on which it does not give the original class (or on which it raises) becomes ``failed``:
it is written under ``OUT/_failed/``, with the reason in the manifest's ``error``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptanon.records import ImageRecord, Status
from adaptanon.user_code import import_function

Verify = Callable[[ImageRecord, bytes, str], None]
"""What :func:`adaptanon.engines.run` calls on each image it is about to write as done:
``(record, encoded bytes, extension)``; it may set the record's status to failed."""


@dataclass
class FileCheck:
    """Checks encoded files with ``function(path) -> class index``; a :data:`Verify`.

    Attributes:
        function: the user's inference on a file path (a ``str``).
        name: how the check is named in messages (the spec given).
        checked, disagreed: counts so far (``disagreed`` includes the function raising).
    """

    function: Callable[[str], Any]
    name: str = "verify"
    checked: int = 0
    disagreed: int = 0

    @classmethod
    def load(cls, spec: str) -> FileCheck:
        """The check named by ``package.module:function``."""
        return cls(import_function(spec, "check"), spec)

    def classify(self, data: bytes, extension: str) -> int:
        """The function's class for a file holding ``data``.

        Raises:
            ValueError: the function's answer is not a class index.
        """
        with tempfile.TemporaryDirectory(prefix="adaptanon-verify-") as folder:
            path = Path(folder) / f"image{extension}"
            path.write_bytes(data)
            answer = self.function(str(path))
        try:
            return int(answer)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"returned {answer!r}, not a class index") from exc

    def __call__(self, rec: ImageRecord, data: bytes, extension: str) -> None:
        """Check one image about to be written; on disagreement mark ``rec`` failed."""
        if rec.original_class is None:
            return
        self.checked += 1
        try:
            got = self.classify(data, extension)
        except Exception as exc:  # noqa: BLE001 - the user's code failing is this image's failure
            reason = f"raised {type(exc).__name__}: {exc}"
        else:
            if got == rec.original_class:
                return
            reason = f"gives class {got} on the written file, not the original class {rec.original_class}"
        self.disagreed += 1
        rec.status = Status.FAILED
        note = f"--verify-with {self.name} {reason}"
        rec.error = f"{rec.error}; {note}" if rec.error else note
