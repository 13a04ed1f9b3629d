"""Classifiers the method can only query (``--black-box``): a batch function from model
inputs to scores, with no gradient.

The function takes ``(B, C, H, W)`` float32 numpy model inputs, exactly what the declared
preprocessing computes from the stored pixels (in torch, as for a torch model), and returns
``(B, N)`` scores: logits, or probabilities (rows of non-negative values summing to 1,
detected and turned into log-probabilities, which have the same margins as the logits).
Three sources give one: an ONNX file run by onnxruntime (any op it supports), a user's
``module:function``, and an HTTP endpoint (:class:`HttpScores`, the JSON contract below).

HTTP contract: ``POST`` to the URL a JSON object ``{"shape": [B, C, H, W], "dtype":
"float32", "data": BASE64}`` (``data``: the inputs' little-endian float32 bytes in C
order), answered with ``{"scores": [[...N floats...], ...B rows]}`` (status 200,
``application/json``). Batches are split into requests of at most ``max_batch`` inputs
sent ``concurrency`` at a time; a request that times out, fails to connect or gets a 5xx,
408 or 429 answer is retried ``retries`` times with exponential backoff.

Every input scored counts as one query (:attr:`QueryClassifier.queries`). A function
that raises, an endpoint that fails for good, and an answer of the wrong shape or with
non-finite values raise :class:`QueryError` (a ``RuntimeError``: the engines turn it
into the images' status ``error``).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptanon.classifiers.base import TorchClassifier
from adaptanon.classifiers.formats import ONNX_SUFFIXES, PreprocessFn, _onnx_layout, fit_preprocess
from adaptanon.preprocessing import Preprocess
from adaptanon.user_code import import_function

ScoreFn = Callable[[np.ndarray], Any]
"""``(B, C, H, W)`` float32 model inputs -> ``(B, N)`` scores (array-like)."""

URL_PREFIXES = ("http://", "https://")
MAX_ANSWER_BYTES = 64 << 20
"""Largest endpoint answer read (a larger one is malformed)."""


class QueryError(RuntimeError):
    """A queried model that failed, or answered with something that is not scores."""


def as_logits(scores: Any, batch: int, source: str) -> Tensor:
    """``(B, N)`` float32 logits from a model's scores; probabilities (non-negative rows
    summing to 1 within 1e-3) become log-probabilities (same margins as the logits).

    Raises:
        QueryError: not a ``(batch, N)`` array of finite numbers.
    """
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"{source}: scores are not an array of numbers ({exc})") from exc
    if array.ndim != 2 or array.shape[0] != batch or array.shape[1] < 2:
        raise QueryError(
            f"{source}: expected scores of shape ({batch}, N) with N >= 2, got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise QueryError(f"{source}: scores contain NaN or infinity")
    if (array >= 0).all() and np.allclose(array.sum(1), 1.0, atol=1e-3):
        array = np.log(np.maximum(array, 1e-45))
    return torch.from_numpy(array.astype(np.float32))


class QueryModule(nn.Module):
    """A score function as a module: ``(B, C, H, W)`` inputs -> ``(B, N)`` logits, without
    gradient. Counts ``queries`` (inputs scored) and ``calls``."""

    def __init__(self, fn: ScoreFn, source: str) -> None:
        super().__init__()
        self.fn = fn
        self.source = source
        self.queries = 0
        self.calls = 0
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            scores = self.fn(array)
        except QueryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
            raise QueryError(f"{self.source}: {type(exc).__name__}: {exc}") from exc
        self.calls += 1
        self.queries += len(array)
        return as_logits(scores, len(array), self.source).to(x.device)


@dataclass
class QueryClassifier(TorchClassifier):
    """A :class:`TorchClassifier` whose model is a :class:`QueryModule`: the declared
    preprocessing runs in torch as for any model, the model is only queried.

    ``occlusion``: the saliency the region source ``saliency`` gets (there is no
    gradient): the drop of the original class's log-probability when a square of
    ``occlusion`` of the view's shorter side is set to 0 (the mean colour after
    normalisation), at half-square strides, averaged over the squares covering each pixel.
    """

    model: QueryModule
    occlusion: float = 0.25

    @property
    def queries(self) -> int:
        """Inputs scored so far."""
        return self.model.queries

    def query_saliency(self, inputs: Tensor, logits: Tensor) -> list[Tensor]:
        """Per-image ``(h, w)`` occlusion maps of ``(B, C, h, w)`` model inputs whose
        ``(B, N)`` logits are given; one batch call of ``B * P`` occluded inputs."""
        b, _, h, w = inputs.shape
        side = max(1, round(min(h, w) * self.occlusion))
        stride = max(1, side // 2)
        ys = sorted({*range(0, h - side + 1, stride), h - side})
        xs = sorted({*range(0, w - side + 1, stride), w - side})
        spots = [(y, x) for y in ys for x in xs]
        batch = inputs.detach().repeat_interleave(len(spots), 0)
        for k, (y, x) in enumerate(spots):
            batch[k :: len(spots), :, y : y + side, x : x + side] = 0
        target = logits.argmax(1)
        base = F.log_softmax(logits.float(), 1).gather(1, target[:, None])[:, 0]
        with torch.no_grad():
            occluded = F.log_softmax(self.forward(batch).float(), 1)
        rows = torch.arange(b).repeat_interleave(len(spots))
        drop = (base[rows] - occluded[rows, target[rows]]).clamp(min=0).reshape(b, len(spots))
        maps = []
        for i in range(b):
            total = torch.zeros(h, w)
            count = torch.zeros(h, w)
            for k, (y, x) in enumerate(spots):
                total[y : y + side, x : x + side] += float(drop[i, k])
                count[y : y + side, x : x + side] += 1
            maps.append(total / count.clamp(min=1))
        return maps


def onnx_scores(path: Path) -> tuple[ScoreFn, tuple[int | None, int | None]]:
    """The ONNX file run by onnxruntime (CUDA provider first when installed, else the CPU
    with torch's thread count) as a score function taking ``(B, 3, H, W)`` inputs, and its
    fixed input size (None where free). A ``(B, H, W, 3)`` input is fed transposed; a
    graph exported for batch 1 is run input by input.

    Raises:
        ValueError: the file is missing or onnxruntime cannot load it.
    """
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("ONNX models need onnxruntime: pip install 'adaptanon[onnx]'") from exc
    if not path.is_file():
        raise ValueError(f"model file not found: {path}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    available = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider",) if p in available]
    try:
        session = onnxruntime.InferenceSession(
            str(path), options, providers=[*providers, "CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
        raise ValueError(f"onnxruntime cannot load {path.name}: {exc}") from exc
    graph_input = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else None for d in graph_input.shape]
    channels_last, fixed = _onnx_layout(shape)
    name = graph_input.name

    def scores(x: np.ndarray) -> np.ndarray:
        feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if channels_last else x)
        if shape[0] == 1:
            return np.concatenate(
                [session.run(None, {name: feed[i : i + 1]})[0] for i in range(len(feed))]
            )
        out: np.ndarray = session.run(None, {name: feed})[0]
        return out

    return scores, fixed


def torch_scores(model: nn.Module) -> ScoreFn:
    """A torch model as a score function (forward pass only, no gradient)."""

    def scores(x: np.ndarray) -> np.ndarray:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            out: np.ndarray = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
        return out

    return scores


@dataclass
class HttpScores:
    """A classifier behind an HTTP endpoint, as a score function (contract in the module
    docstring). Standard library only.

    Attributes:
        url: the endpoint (``http://`` or ``https://``).
        timeout: seconds to wait for one request's answer.
        retries: further attempts after a failed request (timeouts, connection errors,
            5xx, 408, 429); waits ``backoff * 2**attempt`` seconds before each.
        max_batch: most inputs in one request.
        concurrency: most requests in flight at once.
    """

    url: str
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5
    max_batch: int = 32
    concurrency: int = 4

    def __post_init__(self) -> None:
        if not self.url.startswith(URL_PREFIXES):
            raise ValueError(f"an endpoint URL starts with http:// or https://, got {self.url!r}")
        if self.timeout <= 0 or self.retries < 0 or self.max_batch < 1 or self.concurrency < 1:
            raise ValueError("timeout must be > 0, retries >= 0, max_batch and concurrency >= 1")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` float32 inputs -> ``(B, N)`` scores."""
        chunks = [x[i : i + self.max_batch] for i in range(0, len(x), self.max_batch)]
        if len(chunks) == 1:
            return self.post(chunks[0])
        with ThreadPoolExecutor(min(self.concurrency, len(chunks))) as pool:
            return np.concatenate(list(pool.map(self.post, chunks)))

    def post(self, chunk: np.ndarray) -> np.ndarray:
        """One request: the scores of ``chunk``, or :class:`QueryError`."""
        body = json.dumps(
            {
                "shape": list(chunk.shape),
                "dtype": "float32",
                "data": base64.b64encode(chunk.astype("<f4").tobytes()).decode("ascii"),
            }
        ).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    payload = answer.read(MAX_ANSWER_BYTES + 1)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if exc.code < 500 and exc.code not in (408, 429):
                    raise QueryError(f"endpoint {self.url}: {last}") from exc
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = (
                    f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
                )
                continue
            return self._scores(payload, len(chunk))
        raise QueryError(
            f"endpoint {self.url}: no answer after {self.retries + 1} attempts ({last})"
        )

    def _scores(self, payload: bytes, batch: int) -> np.ndarray:
        where = f"endpoint {self.url}: malformed answer"
        if len(payload) > MAX_ANSWER_BYTES:
            raise QueryError(f"{where}: larger than {MAX_ANSWER_BYTES} bytes")
        try:
            scores = json.loads(payload)["scores"]
        except (ValueError, KeyError, TypeError) as exc:
            raise QueryError(
                f'{where}: expected JSON {{"scores": [[...], ...]}} ({exc!r})'
            ) from exc
        return as_logits(scores, batch, where).numpy()


def _function(spec: str) -> ScoreFn:
    return import_function(spec, "score function")


def load_query_classifier(
    spec: str | ScoreFn,
    preprocess: PreprocessFn | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    *,
    endpoint: Mapping[str, Any] | None = None,
) -> QueryClassifier:
    """A query-only classifier from what follows ``--model`` with ``--black-box``.

    Args:
        spec: an ONNX file (run by onnxruntime), an ``http(s)://`` endpoint
            (:class:`HttpScores`), ``package.module:function`` (the score function
            itself: importing and calling it runs its code), or a score function.
        preprocess: the declared preprocessing (default torchvision's ImageNet one; an
            ONNX input of fixed size S gets a crop of S).
        class_names: optional names of the classes.
        endpoint: :class:`HttpScores`'s settings for an endpoint (``timeout``,
            ``retries``, ``max_batch``, ``concurrency``).

    Raises:
        ValueError: a missing or unloadable file or function, a spec of no known form, or
            endpoint settings out of range.
    """
    fixed: tuple[int | None, int | None] = (None, None)
    fn: ScoreFn
    label: str
    if callable(spec):
        fn, label = spec, name or str(getattr(spec, "__name__", "function"))
    elif spec.startswith(URL_PREFIXES):
        fn, label = HttpScores(spec, **dict(endpoint or {})), spec
    elif Path(spec).suffix in ONNX_SUFFIXES:
        fn, fixed = onnx_scores(Path(spec))
        label = Path(spec).name
    elif ":" in spec:
        fn, label = _function(spec), spec
    else:
        raise ValueError(
            f"--black-box takes an ONNX file, an http(s):// endpoint or module:function "
            f"(a batch score function), got {spec!r}"
        )
    preprocess = fit_preprocess(preprocess, fixed, label) if fixed != (None, None) else preprocess
    return QueryClassifier(
        QueryModule(fn, label),
        preprocess or Preprocess(),
        name=name or label,
        class_names=class_names,
    )
