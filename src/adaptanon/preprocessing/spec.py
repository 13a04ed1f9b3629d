"""Declared preprocessing: the user's image loader, described by a :class:`PreprocessSpec`
and reproduced exactly by :class:`SpecPreprocess`.

A spec says how the loader turns a decoded RGB file into the model input::

    resize (backend + interpolation; shorter side to N, or a fixed height x width)
    -> centre crop, no crop (squash), or letterbox padding
    -> channel order (RGB/BGR) -> pixel range (0-1 or 0-255) -> (x - mean) / std

Backends: ``pil`` (Pillow ``Image.resize``: nearest, box, bilinear, hamming, bicubic,
lanczos), ``opencv`` (``cv2.resize`` on uint8: nearest, linear, area) and ``torch``
(``F.interpolate`` on the float image ``to_tensor`` gives: bilinear, bicubic with or
without antialias, nearest, nearest-exact, area). The 8-bit backends are bit-exact; the
``torch`` backend calls ``F.interpolate`` itself, so it is exact on the device and dtype
the loader uses (float32 on the CPU) and within float rounding elsewhere (stated and
tested: 1e-5 before rounding). A spec that cannot be reproduced exactly is refused with a
``ValueError`` when it is made.

Specs come from :data:`PRESETS` by name, from JSON (inline or a file), or from Python;
:func:`parse_preprocess` accepts all three.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from adaptanon.preprocessing.geometry import ViewGeometry, check_resized
from adaptanon.preprocessing.opencv import check_cv_mode, cv_plan
from adaptanon.preprocessing.resample import (
    PIL_FILTERS,
    Plan,
    dense_weights,
    pil_plan,
    pil_round,
    run_plan,
    straight_through,
    to_8bit,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

BACKENDS = ("pil", "opencv", "torch")
INTERPOLATIONS = {
    "pil": ("nearest", *PIL_FILTERS),
    "opencv": ("nearest", "linear", "area"),
    "torch": ("bilinear", "bicubic", "nearest", "nearest-exact", "area"),
}
"""The interpolations each backend reproduces exactly."""

TORCH_TOLERANCE = 1e-5
"""Largest difference, in ``[0, 1]`` units, between the ``torch`` backend on another device
or dtype and ``F.interpolate`` in float32 on the CPU (before any 8-bit rounding)."""

Size = int | tuple[int, int]


def _pair(value: Size) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


@dataclass(frozen=True)
class SpecGeometry(ViewGeometry):
    """A :class:`ViewGeometry` for any spec: a ``view = (height, width)`` window, possibly
    not square, of the input resized to ``resized``, whose top-left corner is at
    ``(top, left)`` in resized pixels (negative: letterbox padding above and left).

    ``crop`` is ``min(view)``; :meth:`view_box_to_input` maps view boxes with the two axes'
    own scales; :attr:`scale` is their geometric mean (they differ when the loader
    squashes the image).
    """

    view: tuple[int, int] = (0, 0)

    @property
    def scale_y(self) -> float:
        """Input rows per resized row."""
        return self.input_size[0] / self.resized[0]

    @property
    def scale_x(self) -> float:
        """Input columns per resized column."""
        return self.input_size[1] / self.resized[1]

    @property
    def scale(self) -> float:
        """Input pixels per view pixel (geometric mean of the two axes)."""
        return math.sqrt(self.scale_y * self.scale_x)


@dataclass(frozen=True)
class PreprocessSpec:
    """What a loader does to a decoded RGB image before the model sees it.

    Attributes:
        backend: ``pil``, ``opencv`` or ``torch`` (see the module docstring).
        interpolation: one of :data:`INTERPOLATIONS` for the backend (OpenCV's may be
            written ``INTER_LINEAR``).
        resize: an int N (the shorter side becomes N) or ``(height, width)``.
        rounding: for a shorter-side resize, how the longer side is made whole: ``floor``
            (torchvision: ``int(N * long / short)``) or ``round``.
        crop: centre crop, an int or ``(height, width)`` (torchvision's offsets
            ``round((size - crop) / 2)``); None for no crop.
        letterbox: keep the aspect ratio, fit inside ``resize = (height, width)``
            (``round(side * min(H/h, W/w))``) and pad, centred (``pad // 2`` above and on
            the left), with ``fill``.
        fill: letterbox padding value per channel, in 0..255 pixel units and the model's
            channel order.
        antialias: ``torch`` only: ``F.interpolate(..., antialias=True)``.
        round8: ``torch`` only: round the resized image to 8 bits (as saving it would).
        channels: ``RGB`` or ``BGR``: the channel order the model expects.
        pixel_range: ``0-1`` (``to_tensor``) or ``0-255``: the units of ``mean`` and
            ``std``.
        mean, std: per channel, in the model's channel order and ``pixel_range`` units.
    """

    backend: str = "pil"
    interpolation: str = "bilinear"
    resize: Size = 256
    rounding: str = "floor"
    crop: Size | None = 224
    letterbox: bool = False
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
    antialias: bool = False
    round8: bool = False
    channels: str = "RGB"
    pixel_range: str = "0-1"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "interpolation", _interpolation_name(self.backend, self.interpolation))
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):
                set_(self, name, tuple(int(v) for v in value))
        for name in ("fill", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, int | float):
                value = (value,) * 3
            set_(self, name, tuple(float(v) for v in value))
        self._validate()

    def _validate(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"preprocessing: {message}")

        if self.backend not in BACKENDS:
            fail(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.backend == "opencv":
            check_cv_mode(self.interpolation)
        allowed = INTERPOLATIONS[self.backend]
        if self.interpolation not in allowed:
            fail(
                f"the {self.backend} backend does not reproduce {self.interpolation!r} "
                f"exactly; use one of {', '.join(allowed)}"
            )
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is None and name == "crop":
                continue
            ok = isinstance(value, int) or (isinstance(value, tuple) and len(value) == 2)
            if not ok or min(_pair(value)) < 1:
                fail(f"{name} must be a positive int or [height, width], got {value!r}")
        if self.rounding not in ("floor", "round"):
            fail(f"rounding must be floor or round, got {self.rounding!r}")
        if isinstance(self.resize, tuple) and self.rounding != "floor":
            fail("rounding applies to a shorter-side resize (an int), not to a fixed size")
        if self.letterbox:
            if not isinstance(self.resize, tuple):
                fail("letterbox needs a fixed resize [height, width] to fit and pad to")
            if self.crop is not None:
                fail("letterbox and crop together are not supported; set crop to null")
        elif isinstance(self.resize, int) and self.crop is None:
            fail(
                "a shorter-side resize without a crop gives every image its own input size; "
                "give a crop, or a fixed resize [height, width] (squash) or letterbox"
            )
        if any(not 0 <= v <= 255 for v in self.fill):
            fail(f"fill must be pixel values in 0..255, got {list(self.fill)}")
        if any(v != 0 for v in self.fill) and not self.letterbox:
            fail("fill applies to letterbox padding only")
        eight_bit = self.backend != "torch" or self.round8
        if self.letterbox and eight_bit and any(v != int(v) for v in self.fill):
            fail("fill must be whole 8-bit values for an 8-bit image")
        if self.backend != "torch" and (self.antialias or self.round8):
            fail(
                f"antialias and round8 are options of the torch backend; {self.backend} "
                "always works on 8-bit images (and antialiases by its filter)"
            )
        if self.antialias and self.interpolation not in ("bilinear", "bicubic"):
            fail("F.interpolate antialias works only with bilinear or bicubic")
        if self.channels not in ("RGB", "BGR"):
            fail(f"channels must be RGB or BGR, got {self.channels!r}")
        if self.pixel_range not in ("0-1", "0-255"):
            fail(f"pixel_range must be 0-1 or 0-255, got {self.pixel_range!r}")
        for name in ("fill", "mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                fail(f"{name} must be 3 finite numbers, got {list(value)}")
        if any(v == 0 for v in self.std):
            fail("std must be non-zero")

    # --- serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists) that :meth:`from_dict` reads back."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def to_json(self) -> str:
        """The spec as one line of JSON (:func:`parse_preprocess` reads it back)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """A spec from a dict; ``preset`` names a preset the other keys override."""
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing: a JSON object is needed, got {type(data).__name__}")
        data = dict(data)
        base = PreprocessSpec()
        if "preset" in data:
            base = preset(str(data.pop("preset")))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"preprocessing: unknown key(s) {', '.join(unknown)}; known: "
                f"preset, {', '.join(sorted(known))}"
            )
        try:
            return replace(base, **data)
        except TypeError as exc:
            raise ValueError(f"preprocessing: {exc}") from exc

    def describe(self) -> str:
        """One line for people (the JSON of :meth:`to_json` is what parses back)."""
        size = (
            f"shorter side {self.resize} ({self.rounding})"
            if isinstance(self.resize, int)
            else f"{self.resize[0]}x{self.resize[1]}"
        )
        if self.letterbox:
            fit = f"letterbox fill {[int(v) if v.is_integer() else v for v in self.fill]}"
        elif self.crop is None:
            fit = "squash"
        else:
            crop = _pair(self.crop)
            fit = f"centre crop {crop[0]}x{crop[1]}"
        extra = (" antialias" if self.antialias else "") + (" round8" if self.round8 else "")
        return (
            f"{self.backend} {self.interpolation}{extra}, {size}, {fit}, {self.channels} "
            f"{self.pixel_range}, mean {list(self.mean)} std {list(self.std)}"
        )

    def build(self) -> SpecPreprocess:
        """The differentiable preprocessing object for this spec."""
        return SpecPreprocess(self)


def _interpolation_name(backend: str, name: str) -> str:
    name = str(name).lower()
    if backend == "opencv" and name.startswith("inter_"):
        name = name[len("inter_") :]
    if backend == "opencv" and name == "bilinear":
        name = "linear"
    return name.replace("_", "-") if backend == "torch" else name.replace("-", "_")


PRESETS: dict[str, PreprocessSpec] = {
    "torchvision-pil": PreprocessSpec(),
    "torchvision-pil-bicubic": PreprocessSpec(interpolation="bicubic"),
    "torchvision-tensor": PreprocessSpec(backend="torch", antialias=True),
    "opencv-squash": PreprocessSpec(
        backend="opencv", interpolation="linear", resize=(224, 224), crop=None
    ),
    "opencv-area-squash": PreprocessSpec(
        backend="opencv", interpolation="area", resize=(224, 224), crop=None
    ),
    "caffe-opencv": PreprocessSpec(
        backend="opencv",
        interpolation="linear",
        resize=(224, 224),
        crop=None,
        channels="BGR",
        pixel_range="0-255",
        mean=CAFFE_BGR_MEAN,
        std=(1.0, 1.0, 1.0),
    ),
    "yolo-letterbox": PreprocessSpec(
        backend="opencv",
        interpolation="linear",
        resize=(640, 640),
        crop=None,
        letterbox=True,
        fill=(114.0, 114.0, 114.0),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    ),
}
"""Named specs. ``torchvision-pil`` is the default, the loader adaptanon assumed before
specs: torchvision ``Resize(256)`` + ``CenterCrop(224)`` on a PIL image + ImageNet
``Normalize``; ``torchvision-pil-bicubic`` the same with bicubic (timm's evaluation
transform); ``torchvision-tensor`` the same on a tensor (``F.interpolate`` bilinear with
antialias, no rounding); ``opencv-squash``/``opencv-area-squash`` ``cv2.resize`` to
224x224 (INTER_LINEAR/INTER_AREA) of the RGB image with ImageNet normalisation;
``caffe-opencv`` the same in BGR, 0-255, minus the Caffe BGR means; ``yolo-letterbox``
``cv2.resize`` INTER_LINEAR into 640x640 keeping the aspect ratio, padded with 114, 0-1."""

PRESET_DESCRIPTIONS = {name: spec.describe() for name, spec in PRESETS.items()}


def preset(name: str) -> PreprocessSpec:
    """The preset called ``name`` (a ``ValueError`` lists the presets otherwise)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"preprocessing: unknown preset {name!r}; presets: {', '.join(PRESETS)}"
        ) from None


def parse_spec(value: str | PreprocessSpec | dict[str, Any]) -> PreprocessSpec:
    """A spec from a preset name, a JSON file path, an inline JSON object, a dict or a spec."""
    if isinstance(value, PreprocessSpec):
        return value
    if isinstance(value, dict):
        return PreprocessSpec.from_dict(value)
    text = str(value).strip()
    if text in PRESETS:
        return PRESETS[text]
    if text.startswith("{"):
        source = "inline JSON"
    elif Path(text).is_file():
        source = f"file {text}"
        text = Path(text).read_text(encoding="utf-8")
    else:
        raise ValueError(
            f"preprocessing: {value!r} is neither a preset ({', '.join(PRESETS)}), a JSON "
            "file, nor an inline JSON object"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"preprocessing: {source} is not valid JSON: {exc}") from exc
    return PreprocessSpec.from_dict(data)


def parse_preprocess(value: str | PreprocessSpec | dict[str, Any]) -> SpecPreprocess:
    """The preprocessing object for a preset name, a JSON file path or an inline JSON
    object (or a dict or :class:`PreprocessSpec`), for ``TorchClassifier(preprocess=...)``.

    Raises:
        ValueError: unknown preset, bad JSON, unknown keys, or a spec that is not
            reproduced exactly.
    """
    return SpecPreprocess(parse_spec(value))


@lru_cache(maxsize=8)
def _many_operands(
    pre: SpecPreprocess,
    key: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...],
    pad_to: tuple[int, int] | None,
    device: torch.device,
) -> tuple[tuple[int, ...], tuple[int, int], Tensor, Tensor, Tensor, bool] | None:
    """What :meth:`SpecPreprocess.update_many` needs for a batch, made once per batch
    composition: the images with a band, the padded window size (``pad_to``, else the
    largest window's), the ``(b, 1, W, nc)`` horizontal and ``(b, 1, nr, H)`` vertical band
    matrices in window coordinates, each band pixel's flat index in its view (padding: one
    past the end) and the pass order."""
    which: list[int] = []
    parts = []
    orders = set()
    for i, (box, (top, left, height, width), (win_h, win_w)) in enumerate(key):
        g = pre.geometry(height, width)
        bands = pre._band(g, box)  # type: ignore[arg-type]
        if bands is None:
            continue
        rows, cols = bands
        tv, th, _, _, order = pre._plan(height, width, *g.resized)
        y0, y1 = tv.reads(rows.start, rows.stop)
        x0, x1 = th.reads(cols.start, cols.stop)
        if y0 < top or x0 < left or y1 > top + win_h or x1 > left + win_w:
            return None  # the window lacks pixels: update() says so image by image
        if max(win_h, win_w) * max(rows.stop - rows.start, cols.stop - cols.start) > (
            _MAX_BATCH_ENTRIES
        ):
            return None
        orders.add(order)
        which.append(i)
        v, h = dense_weights(tv, rows.start, rows.stop), dense_weights(th, cols.start, cols.stop)
        parts.append((g, rows, cols, v, h, y0 - top, x0 - left, win_h, win_w))
    if len(orders) > 1:
        return None
    if not which:
        return (), (0, 0), torch.zeros(0), torch.zeros(0), torch.zeros(0), False
    height, width = pad_to or (max(p[7] for p in parts), max(p[8] for p in parts))
    nr = max(p[3].shape[0] for p in parts)
    nc = max(p[4].shape[0] for p in parts)
    b = len(parts)
    mh_t = np.zeros((b, 1, width, nc))
    mv = np.zeros((b, 1, nr, height))
    vh, vw = parts[0][0].view
    index = np.full((b, 3, nr, nc), 3 * vh * vw, np.int64)
    channel = np.arange(3)[:, None, None] * vh * vw
    for j, (g, rows, cols, v, h, dy, dx, _, _) in enumerate(parts):
        mh_t[j, 0, dx : dx + h.shape[1], : h.shape[0]] = h.T
        mv[j, 0, : v.shape[0], dy : dy + v.shape[1]] = v
        r = np.arange(rows.start - g.top, rows.stop - g.top)[:, None]
        c = np.arange(cols.start - g.left, cols.stop - g.left)[None, :]
        index[j, :, : r.shape[0], : c.shape[1]] = channel + r * vw + c
    return (
        tuple(which),
        (height, width),
        torch.from_numpy(mh_t).to(device),
        torch.from_numpy(mv).to(device),
        torch.from_numpy(index.reshape(b, -1)).to(device),
        orders.pop(),
    )


_MAX_BATCH_ENTRIES = 1 << 20
"""Largest band matrix (entries, window side x band side) :meth:`SpecPreprocess.update_many`
batches; a larger window is computed image by image."""


@lru_cache(maxsize=64)
def _channels(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(3, 1, 1)`` per-channel constants on ``device``, made once (not at every call)."""
    return torch.tensor(values, dtype=dtype, device=device).view(3, 1, 1)


@dataclass(frozen=True)
class SpecPreprocess:
    """A :class:`PreprocessSpec` as the differentiable preprocessing a
    :class:`~adaptanon.classifiers.TorchClassifier` calls: ``(3, H, W)`` image in
    ``[0, 1]`` -> ``(3, h, w)`` float32 model input, with :meth:`geometry` and
    :meth:`update`."""

    spec: PreprocessSpec = field(default_factory=PreprocessSpec)

    # --- geometry ----------------------------------------------------------------------

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` the resize produces for an input of that size."""
        s = self.spec
        if isinstance(s.resize, int):
            n = s.resize
            make = (lambda v: int(v)) if s.rounding == "floor" else (lambda v: int(round(v)))
            if width <= height:
                return make(n * height / width), n
            return n, make(n * width / height)
        if s.letterbox:
            box_h, box_w = s.resize
            r = min(box_h / height, box_w / width)
            return max(1, int(round(height * r))), max(1, int(round(width * r)))
        return s.resize

    def geometry(self, height: int, width: int) -> SpecGeometry:
        """Where the model's view lies in a ``height x width`` input."""
        s = self.spec
        new_h, new_w = self.resized_size(height, width)
        check_resized(height, width, (new_h, new_w))
        if s.letterbox:
            box_h, box_w = _pair(s.resize)
            top, left = -((box_h - new_h) // 2), -((box_w - new_w) // 2)
            view = (box_h, box_w)
        elif s.crop is None:
            top, left, view = 0, 0, (new_h, new_w)
        else:
            view = _pair(s.crop)
            if new_h < view[0] or new_w < view[1]:
                raise ValueError(
                    f"preprocessing: the {height}x{width} image resized to {new_h}x{new_w} is "
                    f"smaller than the crop {view[0]}x{view[1]} (torchvision would pad it; "
                    "adaptanon does not reproduce that)"
                )
            top = int(round((new_h - view[0]) / 2.0))
            left = int(round((new_w - view[1]) / 2.0))
        return SpecGeometry((height, width), (new_h, new_w), top, left, min(view), view)

    # --- computation -------------------------------------------------------------------

    def _plan(self, height: int, width: int, new_h: int, new_w: int) -> Plan:
        if self.spec.backend == "pil":
            return pil_plan(height, width, new_h, new_w, self.spec.interpolation)
        return cv_plan(height, width, new_h, new_w, self.spec.interpolation)

    def _computed(self, g: SpecGeometry) -> tuple[slice, slice]:
        """The resized rows and columns that the view shows."""
        rows = slice(max(0, g.top), min(g.resized[0], g.top + g.view[0]))
        cols = slice(max(0, g.left), min(g.resized[1], g.left + g.view[1]))
        return rows, cols

    def __call__(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` in ``[0, 1]`` -> ``(3, h, w)`` float32 model input."""
        g = self.geometry(image.shape[-2], image.shape[-1])
        rows, cols = self._computed(g)
        if self.spec.backend == "torch":
            pixels = self._interpolate(image, g.resized)[:, rows, cols]
        else:
            plan = self._plan(image.shape[-2], image.shape[-1], *g.resized)
            pixels = run_plan(image, plan, rows, cols)
        if self.spec.channels == "BGR":
            pixels = pixels.flip(0)
        if self.spec.letterbox:
            pixels = self._pad(pixels, g)
        return self._normalize(pixels)

    def from_pixels(self, pixels: np.ndarray) -> Tensor | None:
        """The model input of an ``(H, W, 3)`` uint8 image resized by the library the
        backend reproduces (Pillow's ``Image.resize``, ``cv2.resize``): the same values
        as ``self(to_image(pixels))``, in a fraction of the time, without a gradient to
        the pixels. None for the ``torch`` backend, or ``opencv`` without OpenCV."""
        s = self.spec
        g = self.geometry(pixels.shape[0], pixels.shape[1])
        rows, cols = self._computed(g)
        new_h, new_w = g.resized
        if s.backend == "pil":
            how = (
                PIL_FILTERS[s.interpolation][2]
                if s.interpolation in PIL_FILTERS
                else Image.Resampling.NEAREST
            )
            image = Image.fromarray(np.ascontiguousarray(pixels))
            resized = np.asarray(image.resize((new_w, new_h), how))
        elif s.backend == "opencv":
            try:
                import cv2
            except ImportError:
                return None
            flags = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
                     "area": cv2.INTER_AREA}  # fmt: skip
            resized = cv2.resize(pixels, (new_w, new_h), interpolation=flags[s.interpolation])
        else:
            return None
        view = torch.from_numpy(np.ascontiguousarray(resized[rows, cols].transpose(2, 0, 1)))
        view = view.to(torch.float64)
        if s.channels == "BGR":
            view = view.flip(0)
        if s.letterbox:
            view = self._pad(view, g)
        return self._normalize(view)

    def _eight_bit(self) -> bool:
        return self.spec.backend != "torch" or self.spec.round8

    def _interpolate(self, image: Tensor, size: tuple[int, int]) -> Tensor:
        """``F.interpolate`` as a tensor loader runs it (float32, unless given float64);
        8-bit values (float64) with ``round8``, else ``[0, 1]`` floats."""
        s = self.spec
        x = image if image.dtype == torch.float64 else image.to(torch.float32)
        kwargs: dict[str, Any] = {"mode": s.interpolation, "antialias": s.antialias}
        if s.interpolation in ("bilinear", "bicubic"):
            kwargs["align_corners"] = False
        out = F.interpolate(x[None], size=size, **kwargs)[0]
        if not s.round8:
            return out
        linear = out.to(torch.float64) * 255.0
        with torch.no_grad():
            exact = (out * 255.0).round().clamp(0.0, 255.0).to(torch.float64)
        return straight_through(linear, exact)

    def _pad(self, pixels: Tensor, g: SpecGeometry) -> Tensor:
        top, left = -g.top, -g.left
        bottom = g.view[0] - top - pixels.shape[-2]
        right = g.view[1] - left - pixels.shape[-1]
        unit = 1.0 if self._eight_bit() else 1.0 / 255.0
        return torch.stack(
            [
                F.pad(pixels[c], (left, right, top, bottom), value=self.spec.fill[c] * unit)
                for c in range(pixels.shape[0])
            ]
        )

    def _normalize(self, pixels: Tensor) -> Tensor:
        """8-bit values (float64) or ``[0, 1]`` floats -> normalised float32.

        8-bit values are normalised in float64 and then rounded to float32 (as
        the usual ImageNet loader does); float images in their own dtype, as ``Normalize`` does.
        """
        s = self.spec
        if self._eight_bit():
            x = pixels if s.pixel_range == "0-255" else pixels / 255.0
            dtype = torch.float64
        else:
            x = pixels * 255.0 if s.pixel_range == "0-255" else pixels
            dtype = pixels.dtype
        mean, std = _channels(s.mean, dtype, x.device), _channels(s.std, dtype, x.device)
        return ((x - mean) / std).to(torch.float32)

    def update(
        self,
        image: Tensor,
        base: Tensor,
        box: tuple[int, int, int, int],
        offset: tuple[int, int] = (0, 0),
        full_size: tuple[int, int] | None = None,
    ) -> Tensor:
        """``self(image)`` given ``base = self(reference)`` for an image equal to ``image``
        outside the half-open input box ``(x0, y0, x1, y1)``: only the view pixels whose
        taps read the box are recomputed (same arithmetic, identical result). The ``torch``
        backend recomputes everything.

        Args:
            image: ``(3, H, W)``, or the crop at ``offset = (y0, x0)`` of an input of
                ``full_size = (H, W)`` holding :meth:`window` of the box (``box``, the
                geometry and the result refer to the whole input; ``ValueError`` when the
                crop lacks pixels the taps read).
            base: ``(3, h, w)`` from :meth:`__call__`.
        """
        height, width = full_size or (image.shape[-2], image.shape[-1])
        if self.spec.backend == "torch":
            if (image.shape[-2], image.shape[-1]) != (height, width):
                raise ValueError("the torch backend recomputes the whole view: pass the image")
            return self(image)
        g = self.geometry(height, width)
        bands = self._band(g, box)
        if bands is None:
            return base
        band_rows, band_cols = bands
        plan = self._plan(height, width, *g.resized)
        pixels = run_plan(image, plan, band_rows, band_cols, offset)
        if self.spec.channels == "BGR":
            pixels = pixels.flip(0)
        band = self._normalize(pixels)
        out = base.detach().clone()
        r0, c0 = band_rows.start - g.top, band_cols.start - g.left
        out[:, r0 : r0 + band.shape[-2], c0 : c0 + band.shape[-1]] = band
        return out

    def update_many(
        self,
        images: Sequence[Tensor] | Tensor,
        bases: Sequence[Tensor],
        boxes: Sequence[tuple[int, int, int, int]],
        frames: Sequence[tuple[int, int, int, int]],
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Tensor | None:
        """``stack([update(x, base, box, (top, left), (h, w)) ...])`` for ``B`` window
        crops (``frames``: ``(top, left, h, w)`` each), computed for the whole batch at
        once: the windows, padded at the bottom and right into one ``(B, 3, H, W)``
        tensor, go through two batched products with the band matrices (zero-padded,
        cached per batch), so a step costs a few kernels, not a few per image. The values
        are :meth:`update`'s (exact sums); the gradient sums the same terms in another
        order.

        Args:
            images: ``B`` windows, or a ``(B, 3, H, W)`` tensor holding them padded, with
                their ``sizes`` ``(h, w)``.

        Returns:
            ``(B, 3, h, w)`` model inputs, or None when this spec cannot (backend other
            than ``pil``, Pillow's pass order differing within the batch, a band too
            large): then call :meth:`update` per image.
        """
        if self.spec.backend != "pil" or len(images) == 0:
            return None
        if sizes is None:
            sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in images]
        pad_to = None
        if isinstance(images, Tensor):
            pad_to = (int(images.shape[-2]), int(images.shape[-1]))
        key = tuple(
            (tuple(box), tuple(frame), tuple(size))
            for box, frame, size in zip(boxes, frames, sizes, strict=True)
        )
        ops = _many_operands(self, key, pad_to, bases[0].device)
        if ops is None:
            return None
        which, (height, width), mh_t, mv, index, vertical_first = ops
        out = torch.stack([b.detach() for b in bases])
        if not which:
            return out
        if isinstance(images, Tensor):
            windows = images if len(which) == len(images) else images[list(which)]
        else:
            windows = torch.stack(
                [F.pad(images[i], (0, width - sizes[i][1], 0, height - sizes[i][0])) for i in which]
            )
        x = to_8bit(windows)
        if vertical_first:
            pixels = pil_round(pil_round(mv @ x) @ mh_t)
        else:
            pixels = pil_round(mv @ pil_round(x @ mh_t))
        if self.spec.channels == "BGR":
            pixels = pixels.flip(1)
        band = self._normalize(pixels)
        b = len(which)
        flat = torch.cat([out[list(which)].flatten(1), out.new_zeros(b, 1)], 1)
        flat = flat.scatter(1, index, band.flatten(1))
        out = out.clone()
        out[list(which)] = flat[:, :-1].reshape(b, *out.shape[1:])
        return out

    def _band(self, g: SpecGeometry, box: tuple[int, int, int, int]) -> tuple[slice, slice] | None:
        """The resized rows and columns of the view whose taps read ``box`` (None: none)."""
        rows, cols = self._computed(g)
        tv, th, *_ = self._plan(*g.input_size, *g.resized)
        band_rows = tv.affected(box[1], box[3], rows.start, rows.stop)
        band_cols = th.affected(box[0], box[2], cols.start, cols.stop)
        if band_rows is None or band_cols is None:
            return None
        return band_rows, band_cols

    def window(
        self, height: int, width: int, box: tuple[int, int, int, int]
    ) -> tuple[int, int, int, int]:
        """The input box ``(x0, y0, x1, y1)`` that :meth:`update` reads for ``box`` in a
        ``height x width`` input, joined with ``box`` (the whole input for the ``torch``
        backend, which recomputes everything)."""
        if self.spec.backend == "torch":
            return 0, 0, width, height
        g = self.geometry(height, width)
        bands = self._band(g, box)
        if bands is None:
            return box
        tv, th, *_ = self._plan(height, width, *g.resized)
        y0, y1 = tv.reads(bands[0].start, bands[0].stop)
        x0, x1 = th.reads(bands[1].start, bands[1].stop)
        return min(box[0], x0), min(box[1], y0), max(box[2], x1), max(box[3], y1)

    def describe(self) -> str:
        """The spec in one line."""
        return self.spec.describe()
