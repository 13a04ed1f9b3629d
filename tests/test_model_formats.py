"""Models in deployed formats: ONNX (converted to torch, checked against onnxruntime), torch.export
programs (.pt2), class-name files, and the user's own check of written files (--verify-with).
The ONNX models are exported here from small torch modules; nothing needs the network."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import make_image, save_png
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx_user  # noqa: E402
import tiny_factory  # noqa: E402

import adaptanon.classifiers.onnx_torch as onnx_torch  # noqa: E402
from adaptanon.classifiers import UntrustedModel, load_classifier, read_class_names  # noqa: E402
from adaptanon.classifiers.formats import OneByOne, load_onnx  # noqa: E402
from adaptanon.cli import main  # noqa: E402
from adaptanon.engines.verify import FileCheck  # noqa: E402
from adaptanon.io.manifest import read_manifest  # noqa: E402
from adaptanon.preprocessing import Preprocess  # noqa: E402
from adaptanon.records import ImageRecord, Status  # noqa: E402


def export_onnx(module: nn.Module, path: Path, shape=(1, 3, 32, 32), dynamic: bool = True) -> Path:
    """The legacy (TorchScript-based) exporter: no onnxscript needed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.rand(*shape),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}} if dynamic else None,
        )
    return path


class Mixed(nn.Module):
    """Many of the ops image classifiers use: BN, ReLU6, HardSwish, a squeeze-excite gate
    (sigmoid, mul), depthwise and asymmetric-padded convolutions, max and average pooling,
    bilinear upsampling, concat, layer norm + GELU + attention-style matmuls, softmax."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 8, 1), nn.Sigmoid())
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.down = nn.Conv2d(8, 8, 2, 2)
        self.norm = nn.LayerNorm(16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16 * 8 + 16, 10)
        for bn in self.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # 16x16
        x = F.hardswish(self.dw(x)) * self.se(x)
        a = F.max_pool2d(x, 2)  # 8x8
        b = F.avg_pool2d(self.down(self.pad(x)), 1)  # 8x8
        y = F.interpolate(torch.cat([a, b], 1)[:, :8], scale_factor=0.5, mode="bilinear")
        tokens = y.flatten(2)  # (B, 8, 16)
        t = F.gelu(self.proj(self.norm(tokens)))
        attn = torch.softmax(t @ t.transpose(1, 2) / 4.0, dim=-1)
        z = (attn @ t).reshape(x.shape[0], -1)
        pooled = y.mean(dim=(2, 3)).repeat(1, 2)
        return torch.softmax(self.head(torch.cat([z, pooled], 1)), dim=-1)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """The tests' tiny conv net (10 classes, 32x32 input) as ONNX, dynamic batch."""
    return export_onnx(tiny_factory.tiny_net(), tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_onnx_conversion_matches_torch_and_onnxruntime(tiny_onnx):
    clf = load_classifier(str(tiny_onnx))
    assert clf.name == "tiny.onnx"
    assert clf.preprocess == Preprocess(resize=37, crop=32)  # the model's fixed 32x32 input
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(clf.forward(x), tiny_factory.tiny_net()(x), atol=1e-5)
    # Gradients reach the input pixels (what the correction needs).
    image = make_image(48, 64).requires_grad_(True)
    clf.logits([image])[0, 3].backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in clf.model.parameters())


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_op_coverage_and_final_softmax(tmp_path, dynamo):
    module = Mixed().eval()
    path = tmp_path / "mixed.onnx"
    if dynamo:
        pytest.importorskip("onnxscript")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (torch.rand(2, 3, 32, 32),),
                str(path),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    else:
        export_onnx(module, path)
    clf = load_onnx(path)
    assert clf.model.stripped_softmax  # the final softmax is left out: logits
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = module(x)
        got = clf.forward(x)
    assert torch.allclose(got.softmax(-1), expected, atol=1e-5)


def test_onnx_channels_last_input_and_batch_of_one(tmp_path):
    class NHWC(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_factory.tiny_net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.permute(0, 3, 1, 2))

    module = NHWC().eval()
    path = export_onnx(module, tmp_path / "nhwc.onnx", shape=(1, 32, 32, 3), dynamic=False)
    clf = load_classifier(str(path))
    assert isinstance(clf.model, OneByOne)  # exported for one image: run one by one
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(clf.forward(x), module(x.permute(0, 2, 3, 1)), atol=1e-5)


def test_onnx_conversion_that_disagrees_is_refused(tiny_onnx, monkeypatch):
    monkeypatch.setitem(onnx_torch.OPS, "Relu", onnx_torch.OPS["Identity"])  # a wrong op
    with pytest.raises(
        ValueError, match=r"disagrees with onnxruntime: largest difference [0-9.e-]+"
    ):
        load_classifier(str(tiny_onnx))
    res = CliRunner().invoke(
        main,
        ["anonymize", str(tiny_onnx), "-o", str(tiny_onnx.parent / "o"), "--model", str(tiny_onnx)],
    )
    assert res.exit_code == 2 and "disagrees with onnxruntime" in res.output


def test_onnx_unsupported_op_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Hardmax", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 8, 8])],
    )
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="does not support: Hardmax"):
        load_classifier(str(path))


def test_onnx_preprocess_that_does_not_fit_is_refused(tiny_onnx):
    with pytest.raises(ValueError, match="takes 32x32 inputs, the preprocessing gives 224x224"):
        load_onnx(tiny_onnx, Preprocess())


def test_exported_program_pt2(tmp_path):
    net = tiny_factory.tiny_net()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(net, (torch.rand(1, 3, 32, 32),)), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "training mode" warning
        clf = load_classifier(str(path), class_names=[f"c{i}" for i in range(10)], trust_model=True)
    assert clf.preprocess == Preprocess(resize=37, crop=32)
    assert clf.class_name(3) == "c3"
    x = torch.randn(3, 3, 32, 32)  # exported for batch 1: run one by one
    with torch.no_grad():
        assert torch.allclose(clf.forward(x), net(x), atol=1e-5)
    image = make_image(40, 40).requires_grad_(True)
    clf.logits([image])[0, 0].backward()
    assert image.grad.abs().sum() > 0


def test_class_names_files(tmp_path, tiny_onnx):
    lines = tmp_path / "names.txt"
    lines.write_text("".join(f"thing {i}\n" for i in range(10)) + "\n")
    listed = tmp_path / "names.json"
    listed.write_text(json.dumps([f"json{i}" for i in range(10)]))
    assert read_class_names(lines)[9] == "thing 9"
    assert load_classifier(str(tiny_onnx), class_names=listed).class_name(2) == "json2"
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 class names given, but the model tiny.onnx has 10"):
        load_classifier(str(tiny_onnx), class_names=short)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list of strings"):
        read_class_names(bad)


@pytest.fixture
def onnx_inputs(tmp_path) -> tuple[Path, Path]:
    """Synthetic images and a boxes file masking their centres."""
    root = tmp_path / "in"
    boxes = {}
    for i, (h, w) in enumerate([(48, 64), (60, 50), (64, 64), (50, 70), (56, 48), (72, 54)]):
        save_png(make_image(h, w, seed=i), root / f"im{i}.png")
        boxes[f"im{i}.png"] = [[w // 4, h // 4, 3 * w // 4, 3 * h // 4]]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    return root, tmp_path / "boxes.json"


def anonymize_onnx(model: Path, inputs: tuple[Path, Path], out: Path, *extra: str):
    root, boxes = inputs
    args = ["anonymize", str(root), "-o", str(out), "--model", str(model), "--device", "cpu"]
    args += ["--regions", f"boxes={boxes}", "--filter", "mask", "--mask-value", "0", "-q", *extra]
    return CliRunner().invoke(main, args)


def test_onnx_end_to_end_from_the_cli(tiny_onnx, onnx_inputs, tmp_path, monkeypatch):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"kind{i}" for i in range(10)))
    monkeypatch.setenv("ADAPTANON_TEST_ONNX", str(tiny_onnx))
    out = tmp_path / "out"
    res = anonymize_onnx(
        tiny_onnx,
        onnx_inputs,
        out,
        "--class-names",
        str(names),
        "--verify-with",
        "onnx_user:classify",
    )
    assert res.exit_code == 0, res.output
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 6 and not (out / "_failed").exists()
    statuses = {r["status"] for r in recs}
    assert statuses <= {"unchanged", "corrected"} and "corrected" in statuses
    for r in recs:
        assert r["settings"]["model"] == "tiny.onnx"
        assert r["original_name"] == f"kind{r['original_class']}" == r["final_name"]
        # The written file, read by plain PIL + numpy and classified by onnxruntime itself.
        ort_scores = onnx_user.scores(r["output"], str(tiny_onnx))
        assert int(np.argmax(ort_scores)) == r["original_class"]
        original = onnx_user.scores(str(onnx_inputs[0] / Path(r["input"]).name), str(tiny_onnx))
        assert int(np.argmax(original)) == r["original_class"]


def test_verify_with_a_disagreeing_check_sends_images_to_failed(
    tiny_onnx, onnx_inputs, tmp_path, monkeypatch
):
    monkeypatch.setenv("ADAPTANON_TEST_ONNX", str(tiny_onnx))
    out = tmp_path / "out"
    res = anonymize_onnx(
        tiny_onnx, onnx_inputs, out, "--verify-with", "onnx_user:always_class_zero_plus_one"
    )
    assert res.exit_code == 1, res.output
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 6
    for r in recs:
        assert r["status"] == "failed"
        assert Path(r["output"]).parent == out / "_failed" and Path(r["output"]).is_file()
        assert "--verify-with onnx_user:always_class_zero_plus_one gives class" in r["error"]
        assert f"not the original class {r['original_class']}" in r["error"]
    assert not list(out.glob("*.png"))


def test_verify_with_errors(tiny_onnx, onnx_inputs, tmp_path):
    res = anonymize_onnx(tiny_onnx, onnx_inputs, tmp_path / "o1", "--verify-with", "onnx_user:nope")
    assert res.exit_code == 2 and "--verify-with" in res.output
    res = anonymize_onnx(
        tiny_onnx, onnx_inputs, tmp_path / "o2", "--verify-with", "onnx_user:broken"
    )
    assert res.exit_code == 1
    for r in read_manifest(tmp_path / "o2" / "manifest.jsonl"):
        assert r["status"] == "failed" and "raised RuntimeError: inference server" in r["error"]


def test_file_check_sees_the_bytes_with_the_extension():
    seen = []

    def check(path: str) -> int:
        seen.append((Path(path).suffix, Path(path).read_bytes()))
        return 4

    verify = FileCheck(check, "mine")
    rec = ImageRecord(input="x", status=Status.CORRECTED, original_class=4)
    verify(rec, b"encoded", ".webp")
    assert rec.status == Status.CORRECTED and seen == [(".webp", b"encoded")]
    rec = ImageRecord(input="y", status=Status.UNCHANGED, original_class=2)
    verify(rec, b"other", ".png")
    assert rec.status == Status.FAILED and "mine gives class 4" in rec.error
    assert (verify.checked, verify.disagreed) == (2, 1)


SPEC = {
    "backend": "opencv",
    "interpolation": "linear",
    "resize": [32, 32],
    "crop": None,
    "channels": "BGR",
    "pixel_range": "0-255",
    "mean": [104.0, 117.0, 123.0],
    "std": [58.0, 57.0, 57.0],
}


def opencv_user_scores(path: Path, model: Path) -> np.ndarray:
    """A production pipeline written out without adaptanon: cv2 reads BGR, squashes to
    32x32 with INTER_LINEAR, 0-255 floats minus mean over std, onnxruntime runs it."""
    import cv2
    import onnxruntime

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    x = cv2.resize(bgr, (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (x - np.float32(SPEC["mean"])) / np.float32(SPEC["std"])
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.transpose(2, 0, 1)[None].astype(np.float32)}
    return session.run(None, feed)[0][0]


def test_onnx_with_a_json_preprocessing_spec_keeps_the_production_decision(
    tiny_onnx, onnx_inputs, tmp_path
):
    """An ONNX classifier and a JSON spec (OpenCV resize, squash, BGR, 0-255, own mean and
    std), no Python written: every file adaptanon writes gets the original's class from the
    user's own OpenCV + onnxruntime pipeline."""
    pytest.importorskip("cv2")
    spec = tmp_path / "loader.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "out"
    res = anonymize_onnx(tiny_onnx, onnx_inputs, out, "--preprocess", str(spec))
    assert res.exit_code == 0, res.output
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 6 and {r["status"] for r in recs} <= {"unchanged", "corrected"}
    assert any(r["status"] == "corrected" for r in recs), "the black mask should flip some"
    root = onnx_inputs[0]
    for r in recs:
        original = int(np.argmax(opencv_user_scores(root / Path(r["input"]).name, tiny_onnx)))
        written = int(np.argmax(opencv_user_scores(Path(r["output"]), tiny_onnx)))
        assert original == r["original_class"] == written == r["final_class"]


class _Writes(nn.Module):
    """A TorchScript model that overwrites a file of the user's whenever it runs: what an
    untrusted model file can do."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim
        self.head = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.victim, shared=True, size=4, dtype=torch.uint8).fill_(0)
        return self.head(x.mean((2, 3))) + written.sum()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_code_model_files_need_trust_model(tmp_path, monkeypatch):
    """TorchScript and .pt2 files are code: refused, before they are opened, without the
    opt-in, from Python and from the CLI (a usage error naming the safe formats)."""
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"keep")
    evil = tmp_path / "evil.pt"
    torch.jit.save(torch.jit.script(_Writes(str(victim))), str(evil))
    program = tmp_path / "tiny.pt2"
    net = tiny_factory.tiny_net()
    torch.export.save(torch.export.export(net, (torch.rand(1, 3, 32, 32),)), str(program))
    for path, kind in ((evil, "TorchScript file"), (program, "torch.export program")):
        with pytest.raises(UntrustedModel, match=f"is a {kind}.*--trust-model.*ONNX file"):
            load_classifier(str(path))
    photos = tmp_path / "in"
    photos.mkdir()
    save_png(make_image(40, 48), photos / "a.png")
    args = ["anonymize", str(photos), "-o", str(tmp_path / "out"), "--model", str(evil)]
    res = CliRunner().invoke(main, [*args, "--regions", "saliency:4", "-q"])
    assert res.exit_code == 2 and "--trust-model" in res.output
    assert victim.read_bytes() == b"keep" and not (tmp_path / "out").exists()
    # With the opt-in the file loads and runs: here it does what it was written to do.
    trusted = load_classifier(str(evil), trust_model=True)
    with torch.no_grad():
        trusted.logits([torch.rand(3, 40, 48)])
    assert victim.read_bytes() == bytes(4)


def test_onnx_shape_chains_run_on_the_host_once_per_input_shape(tmp_path, monkeypatch):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains (a dynamic batch) and small
    constants (Reshape shapes, Clip bounds, Slice ends) never ask the device for a value:
    the graph runs on the meta device, where any such read raises. The chains run once per
    input shape; the outputs are the module's."""
    from collections import Counter

    import onnx

    from adaptanon.classifiers.onnx_torch import OPS, OnnxModule

    module = Mixed().eval()
    graph = OnnxModule(onnx.load(str(export_onnx(module, tmp_path / "mixed.onnx"))))
    on_host = {op for op, _, outs, _ in graph.nodes if outs[0] in graph.shaped}
    assert {"Shape", "Gather", "Unsqueeze", "Concat"} <= on_host
    calls: Counter[str] = Counter()
    for op in on_host:
        monkeypatch.setitem(
            OPS, op, lambda i, a, o, op=op, fn=OPS[op]: calls.update([op]) or fn(i, a, o)
        )
    batches = [torch.randn(n, 3, 32, 32) for n in (2, 3, 2, 3, 2)]
    with torch.no_grad():
        for x in batches:
            torch.testing.assert_close(graph(x).softmax(-1), module(x), atol=1e-5, rtol=0)
    assert calls["Shape"] == 2 * sum(op == "Shape" for op, *_ in graph.nodes)  # two shapes
    graph.to("meta")
    with torch.no_grad():
        for n in (4, 2):
            assert graph(torch.empty(n, 3, 32, 32, device="meta")).shape == (n, 10)
