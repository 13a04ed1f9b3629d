"""pipeline.process_batch and classifiers.load_classifier on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_image, to_uint8
from torch import nn

from adaptanon.classifiers import TorchClassifier, load_classifier
from adaptanon.io.codecs import Codec, to_image, to_pixels
from adaptanon.method.filters import Mask
from adaptanon.method.finish import encode_checked
from adaptanon.method.pipeline import Settings, process_batch
from adaptanon.method.solvers import GradientSolver
from adaptanon.preprocessing import Preprocess
from adaptanon.records import Status
from adaptanon.regions import ExplicitBoxes, SaliencyBox

CORRECTED, ERROR, FAILED, UNCHANGED = (
    Status.CORRECTED,
    Status.ERROR,
    Status.FAILED,
    Status.UNCHANGED,
)


def centre(img):
    h, w = img.shape[1:]
    return [w // 4, h // 4, 3 * w // 4, 3 * h // 4]


def test_process_batch_statuses_and_outputs(tiny, synth_batch):
    names = [f"img{i}.png" for i in range(len(synth_batch))]
    boxes = {n: [centre(img)] for n, img in zip(names, synth_batch, strict=True)}
    boxes[names[0]] = [[2, 2, 6, 6]]  # a small region: the class stays
    boxes[names[1]] = [[500, 500, 600, 600]]  # outside the image: error for this image only
    outs = process_batch(
        tiny, ExplicitBoxes(boxes), Settings(filter=Mask(1.0)), names, synth_batch, keep_images=True
    )
    assert [o.record.input for o in outs] == names
    assert outs[1].status == ERROR and "regions" in outs[1].record.error and outs[1].data is None
    assert outs[0].status == UNCHANGED and outs[0].record.steps == 0
    statuses = {o.status for o in outs[2:]}
    assert statuses <= {UNCHANGED, CORRECTED} and CORRECTED in statuses
    with torch.no_grad():
        original = tiny.logits(synth_batch).argmax(1)
    for i, o in enumerate(outs):
        if o.status == ERROR:
            continue
        assert o.record.original_class == int(original[i]) == o.record.final_class
        assert (o.status == CORRECTED) == (o.record.anonymized_class != o.record.original_class)
        assert o.record.final_margin > 0 and 0 < o.record.final_confidence <= 1
        written = Codec("png").decode(o.data)
        # Re-classify the written file: original class.
        with torch.no_grad():
            assert int(tiny.logits([to_image(written)]).argmax()) == o.record.original_class
        # Outside the regions the file is the input, bit for bit.
        outside = ~o.images.mask[0].numpy()
        assert np.array_equal(written[outside], to_pixels(synth_batch[i])[outside])
        assert np.array_equal(written, to_pixels(o.images.final))


def test_process_batch_failed_when_no_steps_allowed(tiny, synth_batch):
    names = [f"{i}.png" for i in range(len(synth_batch))]
    src = ExplicitBoxes({n: [centre(img)] for n, img in zip(names, synth_batch, strict=True)})
    outs = process_batch(
        tiny,
        src,
        Settings(filter=Mask(1.0), solver=GradientSolver(max_steps=0)),
        names,
        synth_batch,
    )
    failed = [o for o in outs if o.status == FAILED]
    assert failed, "masking the centre white should change the tiny model's class"
    for o in failed:
        assert o.record.final_class != o.record.original_class and o.record.steps == 0
        assert "not met" in o.record.error and o.data is not None


def test_process_batch_saliency_regions_lie_in_the_view(tiny, synth_batch):
    names = [f"{i}.png" for i in range(len(synth_batch))]
    outs = process_batch(tiny, SaliencyBox(8), Settings(), names, synth_batch)
    for o, img in zip(outs, synth_batch, strict=True):
        assert o.status in (UNCHANGED, CORRECTED)
        (box,) = o.record.regions
        g = tiny.preprocess.geometry(*img.shape[1:])
        full = g.view_box_to_input((0, 0, g.crop, g.crop))
        assert full[0] <= box[0] < box[2] <= full[2] and full[1] <= box[1] < box[3] <= full[3]
        assert box[2] - box[0] >= 8 * g.scale - 1


def test_process_batch_jpeg_output_keeps_class(tiny, synth_batch):
    names = [f"{i}.png" for i in range(len(synth_batch))]
    src = ExplicitBoxes({n: [centre(img)] for n, img in zip(names, synth_batch, strict=True)})
    codec = Codec("jpg", 75)
    outs = process_batch(tiny, src, Settings(filter=Mask(1.0), codec=codec), names, synth_batch)
    for o in outs:
        assert o.data[:2] == b"\xff\xd8"
        if o.status in (UNCHANGED, CORRECTED):
            with torch.no_grad():
                pred = tiny.logits([to_image(codec.decode(o.data))]).argmax()
            assert int(pred) == o.record.original_class


def test_saliency_without_view_geometry_is_a_per_image_error(synth_batch):
    """A classifier whose preprocessing is a plain callable has no view geometry: saliency
    regions cannot be placed, which is an `error` for each image, not a crash."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 5))
    clf = TorchClassifier(model.eval(), lambda img: img.to(torch.float32), name="plain")
    imgs = [synth_batch[2], synth_batch[2].flip(-1)]  # same size: the model stacks them
    outs = process_batch(clf, SaliencyBox(8), Settings(), ["a.png", "b.png"], imgs)
    assert [o.status for o in outs] == [ERROR, ERROR]
    assert all("saliency" in o.record.error for o in outs)


def test_encode_checked_detects_a_mismatch():
    img = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(0))
    codec = Codec("png")
    data, problem = encode_checked(codec, to_pixels(img), to_pixels(codec.roundtrip(img)))
    assert problem is None and np.array_equal(codec.decode(data), to_pixels(img))
    other = (img + 3 / 255).clamp(0, 1)
    _, problem = encode_checked(codec, to_pixels(img), to_pixels(other))
    assert problem and "does not decode" in problem


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_load_classifier_forms(tiny, tmp_path):
    assert load_classifier(tiny) is tiny
    made = load_classifier("tiny_factory:make")
    assert isinstance(made, TorchClassifier) and made.name == "tiny"
    assert made.class_name(3) == "class3" and made.class_name(99) == "99"
    bare = load_classifier("tiny_factory:tiny_net", preprocess=Preprocess(40, 32))
    assert isinstance(bare, TorchClassifier) and bare.preprocess == Preprocess(40, 32)
    # TorchScript file: a tiny linear model over a 4x4 view.
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    ts = load_classifier(str(path), preprocess=Preprocess(4, 4), trust_model=True)
    x = torch.rand(3, 6, 6)
    assert ts.logits([x]).shape == (1, 3) and ts.name == "m.pt"
    for bad in ("no_such_model", "tiny_factory:nope", "no_such_module_xyz:make", "missing.pt"):
        with pytest.raises(ValueError):
            load_classifier(bad)


def test_load_classifier_non_callable_factory_is_a_value_error():
    """`--model module:attr` naming something that is not a function must give a clean
    ValueError (a usage error in the CLI), not a TypeError traceback."""
    with pytest.raises(ValueError):
        load_classifier("tiny_factory:NUM_CLASSES")


def test_classifier_inputs_batch_images_of_different_sizes(tiny, synth_batch):
    x = tiny.inputs(synth_batch)
    assert x.shape == (len(synth_batch), 3, 32, 32)
    assert tiny.logits(synth_batch).shape == (len(synth_batch), 10)
    assert tiny.device == torch.device("cpu")
    assert not tiny.model.training


def test_only_the_window_is_converted_when_nothing_else_changed(tiny, monkeypatch):
    from adaptanon.method import pipeline

    original = make_image(60, 80, seed=3)
    inside, outside = original.clone(), original.clone()
    inside[:, 20:30, 30:50] = 0.5
    outside[:, 59, 0] = 0.5
    window = (30, 20, 50, 30)
    assert pipeline._same_outside(original, [inside, original], window)
    assert not pipeline._same_outside(original, [inside, outside], window)
    for corner in [(0, 0), (59, 79), (25, 0), (25, 79), (0, 40), (59, 40)]:
        moved = original.clone()
        moved[:, corner[0], corner[1]] = 1 - moved[:, corner[0], corner[1]]
        assert not pipeline._same_outside(original, [moved], window), corner
    # The whole-image engine path converts the window alone, to the same file.
    monkeypatch.setattr(pipeline, "WINDOW_PATH_PIXELS", 0)  # as if the photo were large
    sizes = []
    real = pipeline.to_pixels
    monkeypatch.setattr(pipeline, "to_pixels", lambda t: sizes.append(t.shape) or real(t))
    px = to_uint8(original)
    box = ExplicitBoxes({"a": [(30, 20, 50, 30)]})
    (fast,) = pipeline.compute_batch(tiny, box, Settings(), ["a"], [original], originals_8bit=[px])
    assert sizes and all(shape[-2:] == (10, 20) for shape in sizes)
    (slow,) = pipeline.compute_batch(tiny, box, Settings(), ["a"], [original])
    assert fast.job is not None and slow.job is not None
    assert np.array_equal(fast.job.pixels, slow.job.pixels)


def test_eight_bit_images_are_classified_from_their_pixels(tiny, synth_batch, monkeypatch):
    """Images that are exactly 8-bit values get their originals' inputs from the pixels
    (Pillow), with the same records as the differentiable resize gives."""
    from adaptanon.method import pipeline

    assert pipeline.eight_bit_sources([synth_batch[0], synth_batch[0] * 0.999]) is None
    found = pipeline.eight_bit_sources(synth_batch)
    assert found is not None
    assert all(
        np.array_equal(px, to_pixels(img)) for px, img in zip(found, synth_batch, strict=True)
    )
    names = [f"img{i}.png" for i in range(len(synth_batch))]
    boxes = ExplicitBoxes({n: [centre(img)] for n, img in zip(names, synth_batch, strict=True)})
    settings = Settings(filter=Mask(1.0))
    calls: list[bool] = []
    pixel_inputs = type(tiny).pixel_inputs
    monkeypatch.setattr(
        type(tiny), "pixel_inputs", lambda self, px: calls.append(True) or pixel_inputs(self, px)
    )
    fast = process_batch(tiny, boxes, settings, names, synth_batch)
    assert calls
    monkeypatch.setattr(pipeline, "eight_bit_sources", lambda images: None)
    slow = process_batch(tiny, boxes, settings, names, synth_batch)
    assert len(calls) == 1
    for a, b in zip(fast, slow, strict=True):
        assert a.record.to_dict() == b.record.to_dict() and a.data == b.data
