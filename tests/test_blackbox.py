"""Models that can only be queried (--black-box): a numpy classifier with no torch graph,
an ONNX file run by onnxruntime, and an HTTP endpoint on 127.0.0.1 (a thread in the test,
answering well or badly). Every written file is classified again from its bytes with a
plain PIL loader, independent of adaptanon's preprocessing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from numpy_model import PREPROCESS, SIZE, Endpoint, probabilities, scores
from PIL import Image

from adaptanon.classifiers.blackbox import HttpScores, QueryError, as_logits, load_query_classifier
from adaptanon.cli import main
from adaptanon.engines import process_loaded
from adaptanon.io import InputImage, read_image, to_image
from adaptanon.io.manifest import read_manifest
from adaptanon.method import Mask, Settings, process_batch
from adaptanon.method.solvers.query import QuerySolver
from adaptanon.preprocessing import parse_preprocess
from adaptanon.records import Status
from adaptanon.regions import parse_region_source

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
REGIONS = "saliency:40"
"""A 40x40 square of the 64x64 view: with the mask filter it changes the numpy model's
class on some of the photos."""


def plain_loader(path: Path) -> np.ndarray:
    """The declared loader written with Pillow and numpy only: bilinear resize of the
    shorter side to 73 (longer side floored), centre crop 64, ImageNet mean and std."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        size = (73, int(73 * h / w)) if w <= h else (int(73 * w / h), 73)
        img = img.resize(size, Image.BILINEAR)
        top, left = round((size[1] - SIZE) / 2), round((size[0] - SIZE) / 2)
        img = img.crop((left, top, left + SIZE, top + SIZE))
    x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    return ((x - MEAN) / STD)[None]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo_photos) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for p in demo_photos[:8]:
        shutil.copy(p, folder / p.name)
    return folder


def anonymize(photos: Path, out: Path, model: str, *extra: str) -> tuple[int, str, list[dict]]:
    args = ["anonymize", str(photos), "-o", str(out), "--model", model, "--preprocess",
            PREPROCESS, "--filter", "mask", "--regions", REGIONS, "-q", *extra]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    records = read_manifest(out / "manifest.jsonl") if (out / "manifest.jsonl").exists() else []
    return result.exit_code, result.output, records


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_numpy_model_keeps_its_decision_on_the_written_files(photos, tmp_path, fmt) -> None:
    code, output, records = anonymize(
        photos, tmp_path / "out", "numpy_model:scores", "--black-box", "--format", fmt
    )
    assert code == 0, output
    vulnerable = [r for r in records if r["anonymized_class"] != r["original_class"]]
    assert len(vulnerable) >= 2, "the test needs photos whose class the mask changes"
    assert all(r["status"] == "corrected" for r in vulnerable)
    for r in records:
        assert r["status"] in ("unchanged", "corrected")
        assert 1 <= r["queries"] <= QuerySolver().max_queries
        assert (r["queries"] == 1) == (r["status"] == "unchanged")
        original = int(scores(plain_loader(Path(r["input"]))).argmax())
        written = scores(plain_loader(Path(r["output"])))[0]
        assert original == r["original_class"]
        assert int(written.argmax()) == original, r["input"]
        # Privacy: the correction does not bring the region back toward the original.
        assert r["psnr_final"] <= r["psnr_plain"] + 1.0


def test_an_endpoint_answering_probabilities_gives_the_functions_results(photos, tmp_path) -> None:
    _, _, direct = anonymize(photos, tmp_path / "direct", "numpy_model:scores", "--black-box")
    with Endpoint("probabilities") as endpoint:
        code, output, served = anonymize(photos, tmp_path / "served", endpoint.url)
    assert code == 0, output
    assert endpoint.requests >= len(served)
    key = ("input", "status", "original_class", "anonymized_class", "final_class", "queries")
    assert [[r[k] for k in key] for r in served] == [[r[k] for k in key] for r in direct]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("garbage", "malformed answer"),
        ("no-scores", "malformed answer"),
        ("short", "expected scores of shape"),
        ("nan", "NaN"),
        ("refuse", "HTTP 400"),
    ],
)
def test_a_bad_endpoint_gives_each_image_an_error(photos, tmp_path, mode, message) -> None:
    with Endpoint(mode) as endpoint:
        code, output, records = anonymize(photos, tmp_path / "out", endpoint.url)
    assert code == 1
    assert "Traceback" not in output
    assert len(records) == len(list(photos.iterdir()))
    for r in records:
        assert r["status"] == "error"
        assert message in r["error"] and endpoint.url in r["error"]


def test_a_spent_budget_fails_the_image_with_its_count(photos, tmp_path) -> None:
    code, output, records = anonymize(
        photos, tmp_path / "out", "numpy_model:scores", "--black-box", "--max-queries", "15"
    )
    assert code == 1, output
    failed = [r for r in records if r["status"] == "failed"]
    assert failed
    for r in failed:
        assert r["error"] == f"query budget spent after {r['queries']} queries"
        assert r["queries"] <= 15
        assert r["output"] is not None and "_failed" in r["output"]
    assert all(r["status"] in ("unchanged", "failed") for r in records)


def test_timeouts_are_retried_then_reported(tmp_path) -> None:
    x = np.zeros((3, 3, SIZE, SIZE), np.float32)
    with Endpoint("slow") as endpoint:
        client = HttpScores(endpoint.url, timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(QueryError, match="no answer after 2 attempts"):
            client(x)
    with Endpoint("flaky") as endpoint:
        client = HttpScores(endpoint.url, retries=2, backoff=0.01, max_batch=2, concurrency=2)
        got = client(x)
    np.testing.assert_allclose(got, scores(x), rtol=1e-5, atol=1e-5)
    assert endpoint.requests == 4  # each of the two requests failed once (503), then passed


def test_an_endpoint_timeout_in_a_run_is_an_image_error(photos) -> None:
    with Endpoint("slow") as endpoint:
        classifier = load_query_classifier(
            HttpScores(endpoint.url, timeout=0.2, retries=0),
            parse_preprocess(PREPROCESS),
            name="slow",
        )
        items = [InputImage(p, Path(p.name)) for p in sorted(photos.iterdir())[:2]]
        loaded = [(item, read_image(item.path)) for item in items]
        settings = Settings(filter=Mask(), solver=QuerySolver())
        outcomes = process_loaded(classifier, parse_region_source(REGIONS), settings, loaded)
    for _, out in outcomes:
        assert out.status == Status.ERROR
        assert "no answer after 1 attempts" in (out.record.error or "")


def test_endpoint_options_reach_the_client(photos, tmp_path) -> None:
    """``--endpoint-timeout/-retries`` turn a slow endpoint into per-image errors after the
    attempts asked for; ``--endpoint-batch`` splits a batch into requests of that size."""
    with Endpoint("slow") as endpoint:
        code, output, records = anonymize(photos, tmp_path / "slow", endpoint.url,
                                          "--endpoint-timeout", "0.2", "--endpoint-retries", "1")  # fmt: skip
    assert code == 1 and "Traceback" not in output
    assert records and all("no answer after 2 attempts" in r["error"] for r in records)
    requests = []
    for extra in ([], ["--endpoint-batch", "1"]):
        with Endpoint("ok") as endpoint:
            out = tmp_path / f"ok{len(extra)}"
            code, output, records = anonymize(photos, out, endpoint.url, "--batch-size", "4",
                                              "--max-queries", "1", *extra)  # fmt: skip
        assert code in (0, 1) and len(records) == len(list(photos.iterdir())), output
        requests.append(endpoint.requests)
    assert requests[1] > requests[0]


def test_probabilities_become_logits_with_the_same_margins() -> None:
    x = np.random.default_rng(1).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    logits = torch.from_numpy(scores(x))
    from_probs = as_logits(probabilities(x), 4, "test")
    top2 = logits.topk(2).values
    top2p = from_probs.topk(2).values
    assert torch.equal(logits.argmax(1), from_probs.argmax(1))
    torch.testing.assert_close(
        top2[:, 0] - top2[:, 1], top2p[:, 0] - top2p[:, 1], atol=1e-4, rtol=0
    )
    with pytest.raises(QueryError, match=r"shape \(3, N\)"):
        as_logits(scores(x), 3, "test")


def test_delta_bound_and_untouched_pixels(demo_photo) -> None:
    classifier = load_query_classifier(scores, parse_preprocess(PREPROCESS))
    image = to_image(read_image(demo_photo("chelsea.png")))
    source = parse_region_source(REGIONS)
    settings = Settings(filter=Mask(), solver=QuerySolver(delta=0.05))
    (out,) = process_batch(classifier, source, settings, ["cat"], [image], keep_images=True)
    assert out.record.anonymized_class != out.record.original_class
    assert out.status == Status.CORRECTED
    assert out.images is not None
    change = (out.images.final - out.images.anonymized).abs()
    assert float(change.max()) <= 0.05 + 0.5 / 255
    assert float(change[:, ~out.images.mask[0]].max()) == 0
    assert out.record.queries is not None and out.record.queries > 1
    assert classifier.queries >= out.record.queries


def test_an_images_search_does_not_depend_on_its_batch(demo_photo) -> None:
    classifier = load_query_classifier(scores, parse_preprocess(PREPROCESS))
    cat = to_image(read_image(demo_photo("chelsea.png")))
    other = to_image(read_image(demo_photo("coffee.png")))
    source = parse_region_source(REGIONS)
    settings = Settings(filter=Mask(), solver=QuerySolver())
    (alone,) = process_batch(classifier, source, settings, ["cat"], [cat], keep_images=True)
    both = process_batch(
        classifier, source, settings, ["other", "cat"], [other, cat], keep_images=True
    )
    assert alone.status == Status.CORRECTED
    assert both[1].record.queries == alone.record.queries
    assert alone.images is not None and both[1].images is not None
    assert torch.equal(both[1].images.final, alone.images.final)


def test_a_flat_neighbourhood_widens_the_search(demo_photo) -> None:
    """On a fill of 128/255 (an 8-bit level), directions below half a level are rounded
    away and every pair scores alike. A search that may not widen spends its budget; one
    that doubles its scale corrects the image."""
    classifier = load_query_classifier(scores, parse_preprocess(PREPROCESS))
    image = to_image(read_image(demo_photo("chelsea.png")))
    source = parse_region_source(REGIONS)
    fill = Mask(value=128 / 255)
    stuck = QuerySolver(sigma=1e-4, max_sigma=1e-4, max_queries=400)
    widening = QuerySolver(sigma=1e-4, max_queries=2000)
    (out,) = process_batch(classifier, source, Settings(filter=fill, solver=stuck), ["c"], [image])
    assert out.status == Status.FAILED and out.record.steps == 0
    (out,) = process_batch(
        classifier, source, Settings(filter=fill, solver=widening), ["c"], [image]
    )
    assert out.status == Status.CORRECTED


def test_onnx_file_runs_in_onnxruntime(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from test_model_formats import export_onnx
    from tiny_factory import TINY_PREPROCESS, tiny_net

    net = torch.nn.Sequential(tiny_net(), torch.nn.Softmax(1)).eval()
    path = export_onnx(net, tmp_path / "tiny.onnx", shape=(1, 3, 32, 32), dynamic=False)
    classifier = load_query_classifier(str(path), TINY_PREPROCESS)
    images = [torch.rand(3, 48, 60, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    got = classifier.logits(images)
    with torch.no_grad():
        expected = torch.log_softmax(tiny_net()(classifier.inputs(images)), 1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert classifier.queries == 3 and classifier.model.calls == 1
    assert json.dumps(QuerySolver().describe())  # recorded in manifests
    assert got.shape == (3, 10)


def test_evaluate_black_box_reports_concordance_and_queries(photos, tmp_path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(photos), "--out", str(out), "--model", "numpy_model:scores",
            "--black-box", "--preprocess", PREPROCESS, "--filter", "mask,blur", "--regions",
            REGIONS, "-q", "--examples", "0"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["filter"]: r for r in json.loads((out / "results.json").read_text())}
    mask = rows["mask"]
    assert mask["changed_after_anonymization"] >= 2
    assert mask["concordance_pct"] == 100.0 and mask["concordance_vulnerable_pct"] == 100.0
    assert mask["queries_median"] > 1 and mask["queries_mean_all"] >= 1
    assert mask["corrected"] == mask["changed_after_anonymization"]
    assert "Class concordance and queries" in (out / "results.md").read_text()
