"""``adaptanon evaluate``: metrics on hand-made rows, an end-to-end run on a model whose
decisions are known by construction, resuming, and the command line."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import adaptanon.evaluate.sweep as sweep
from adaptanon.classifiers import TorchClassifier
from adaptanon.cli import main
from adaptanon.evaluate import (
    TIMING_KEYS,
    Config,
    ImageRow,
    accuracy,
    count_changed,
    count_not_corrected,
    evaluate,
    find_labels,
    mean_finite,
    mean_steps,
    outcome_row,
    percent,
    read_labels,
    region_psnr,
    run_sweep,
    steps_histogram,
    summarize,
    timing,
)
from adaptanon.io.images import InputImage, collect_inputs
from adaptanon.method.filters import Blur, Mask
from adaptanon.method.metrics import StrengthLimits
from adaptanon.method.pipeline import Outcome, Settings
from adaptanon.method.solvers import GradientSolver
from adaptanon.preprocessing import Preprocess
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import ExplicitBoxes, SaliencyBox

# --------------------------------------------------------------------------- tiny models


def means_classifier() -> TorchClassifier:
    """Three classes (red, green, blue): the logits are the normalised channel means, so
    the class is the channel with the largest mean. 32x32 inputs pass unchanged."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pre = Preprocess(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    return TorchClassifier(model.eval(), pre, name="means", class_names=("red", "green", "blue"))


def tiny_classifier() -> TorchClassifier:
    """A seeded random convnet with 10 classes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    pre = Preprocess(resize=40, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    return TorchClassifier(model.eval(), pre, name="tiny")


# --------------------------------------------------------------------------- metrics


def row(name: str, status: str, orig: int, anon: int, final: int, steps: int = 0) -> ImageRow:
    return ImageRow(
        path=f"/data/{name}",
        input=name,
        status=status,
        original_class=orig,
        anonymized_class=anon,
        final_class=final,
        steps=steps,
        seconds=0.5,
    )


def hand_rows() -> list[ImageRow]:
    """10 evaluated images and 1 error: 6 unchanged, 3 corrected (1, 1 and 3 steps),
    1 changed and failed; plus 1 whose class never changed but failed (margin criterion)."""
    rows = [row(f"u{i}.png", "unchanged", 1, 1, 1) for i in range(5)]
    rows += [
        row("m.png", "failed", 2, 2, 2, steps=100),
        row("c1.png", "corrected", 1, 3, 1, steps=1),
        row("c2.png", "corrected", 2, 4, 2, steps=1),
        row("c3.png", "corrected", 3, 1, 3, steps=3),
        row("f.png", "failed", 1, 5, 6, steps=100),
        ImageRow(path="/data/bad.png", input="bad.png", status="error", error="unreadable"),
    ]
    return rows


def test_counts_and_percentages() -> None:
    rows = hand_rows()
    assert count_changed(rows) == 4
    assert count_not_corrected(rows) == 2  # f.png (other class) and m.png (failed)
    assert percent(1, 4) == 25.0
    assert percent(3, 0) is None
    assert steps_histogram(rows) == {1: 2, 3: 1}
    assert mean_steps(rows) == pytest.approx(5 / 3)
    assert mean_steps([row("u.png", "unchanged", 1, 1, 1)]) is None
    seconds, rate = timing(rows)
    assert seconds == pytest.approx(0.5) and rate == pytest.approx(2.0)


def test_summarize_matches_the_papers_columns() -> None:
    config = Config("m", "blur", Settings(filter=Blur(), solver=GradientSolver(alpha=0.25)))
    s = summarize(config, hand_rows())
    assert (s["model"], s["filter"], s["alpha"]) == ("m", "blur", 0.25)
    assert s["images"] == 10 and s["errors"] == 1
    assert (s["unchanged"], s["corrected"], s["failed"]) == (5, 3, 2)
    assert s["changed_after_anonymization"] == 4
    assert s["not_corrected"] == 2
    assert s["not_corrected_pct"] == pytest.approx(50.0)
    assert s["vulnerable_initial_pct"] == pytest.approx(40.0)
    assert s["vulnerable_final_pct"] == pytest.approx(20.0)
    assert s["mean_steps"] == pytest.approx(5 / 3)
    assert s["steps_histogram"] == {1: 2, 3: 1}
    assert s["accuracy_original"] is None and s["labelled"] == 0
    assert s["psnr_plain_db"] is None


def test_accuracy_against_labels() -> None:
    rows = hand_rows()
    labels = {"/data/c1.png": 1, "/data/c2.png": 4, "/data/f.png": 1, "/data/bad.png": 0}
    # c1: orig 1, anon 3, final 1; c2: 2, 4, 2; f: 1, 5, 6. The error row is not counted.
    assert accuracy(rows, labels, "original_class") == pytest.approx(200 / 3)
    assert accuracy(rows, labels, "anonymized_class") == pytest.approx(100 / 3)
    assert accuracy(rows, labels, "final_class") == pytest.approx(100 / 3)
    assert accuracy(rows, {}, "final_class") is None
    s = summarize(Config("m", "blur", Settings()), rows, labels)
    assert s["labelled"] == 3


def test_region_psnr_of_known_arrays() -> None:
    a = torch.zeros(3, 8, 8)
    b = a.clone()
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 2:4, 2:6] = True
    b[:, 2:4, 2:6] = 0.1  # MSE 0.01 inside the mask: 20 dB
    b[:, 6:, :] = 1.0  # outside the mask: ignored
    assert region_psnr(a, b, mask) == pytest.approx(20.0)
    b[0, 2:4, 2:6] = 0.0  # two channels of three differ: MSE 0.01 * 2 / 3
    assert region_psnr(a, b, mask) == pytest.approx(10 * math.log10(1 / (0.01 * 2 / 3)))
    assert region_psnr(a, a, mask) == math.inf
    assert region_psnr(a, b, torch.zeros(8, 8, dtype=torch.bool)) is None
    assert mean_finite([10.0, None, math.inf, 20.0]) == 15.0
    assert mean_finite([None]) is None


def test_outcome_row_from_a_hand_made_outcome(tmp_path: Path) -> None:
    rec = ImageRecord(
        input="ignored",
        status="corrected",
        regions=[[0, 0, 2, 2]],
        steps=2,
        original_class=0,
        anonymized_class=1,
        final_class=0,
        original_name="red",
        anonymized_name="green",
        final_name="red",
        psnr_plain=20.0,
        psnr_final=40.0,
    )
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 7)
    item = InputImage(path, Path("a.png"))
    r = outcome_row(item, Outcome(rec), 0.25)
    assert (r.original_name, r.anonymized_name, r.final_name) == ("red", "green", "red")
    assert r.psnr_plain == 20.0 and r.psnr_final == 40.0 and r.status == Status.CORRECTED
    assert r.regions == [[0, 0, 2, 2]] and r.seconds == 0.25 and r.path == str(path.resolve())
    assert r.name == "a.png" and r.content.startswith("7:")
    assert ImageRow.from_dict(json.loads(r.to_json())) == r


def test_labels_csv_with_extra_columns(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "sub/b.png", "sub/c.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text(
        "file,note,class_index\na.png,x,3\nsub/b.png,,7\nc.png,,1\n"
    )
    assert read_labels(tmp_path / "labels.csv") == {"a.png": 3, "sub/b.png": 7, "c.png": 1}
    labels = find_labels(collect_inputs([str(tmp_path)]))
    assert labels == {
        str((tmp_path / "a.png").resolve()): 3,
        str((tmp_path / "sub/b.png").resolve()): 7,
        str((tmp_path / "sub/c.png").resolve()): 1,  # by bare file name
    }
    (tmp_path / "labels.csv").write_text("file,class_index\na.png,cat\n")
    with pytest.raises(ValueError, match="class_index"):
        read_labels(tmp_path / "labels.csv")


def test_config_key_tracks_what_changes_results() -> None:
    base = Config("m", "blur", Settings(solver=GradientSolver(alpha=0.1)))
    assert base.key == Config("m", "blur", Settings(solver=GradientSolver(alpha=0.1))).key
    assert base.key != Config("m", "blur", Settings(solver=GradientSolver(alpha=0.2))).key
    assert (
        base.key
        != Config("m", "mask", Settings(filter=Mask(), solver=GradientSolver(alpha=0.1))).key
    )
    assert (
        base.key
        != Config("m", "blur", Settings(solver=GradientSolver(alpha=0.1)), regions="boxes:ab").key
    )


# --------------------------------------------------------------------------- end to end


def solid_images(folder: Path) -> dict[str, list[list[int]]]:
    """Two 32x32 images for :func:`means_classifier` and their boxes (a quarter each).

    ``keep.png`` is (204, 51, 51): red, and still red with its box masked to grey.
    ``flip.png`` is (128, 133, 0) with a (255, 128, 0) box: red (R mean 159.75 > G 131.75);
    the grey mask (128) makes R 128 < G 131.75, so it turns green; one step of alpha 1
    puts the box's red back to 255 and the class back to red.
    """
    folder.mkdir(parents=True, exist_ok=True)
    keep = np.zeros((32, 32, 3), np.uint8)
    keep[:] = (204, 51, 51)
    flip = np.zeros((32, 32, 3), np.uint8)
    flip[:] = (128, 133, 0)
    flip[16:, 16:] = (255, 128, 0)
    Image.fromarray(keep).save(folder / "keep.png")
    Image.fromarray(flip).save(folder / "flip.png")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "labels.csv").write_text("file,class_index\nkeep.png,0\nflip.png,0\n")
    return {"keep.png": [[8, 8, 24, 24]], "flip.png": [[16, 16, 32, 32]]}


def expected_psnr(original: tuple[int, ...], anonymized: tuple[int, ...]) -> float:
    diff = (np.array(original) - np.array(anonymized)) / 255.0
    return 10 * math.log10(1 / float(np.mean(diff**2)))


def test_end_to_end_numbers_known_by_construction(tmp_path: Path, monkeypatch) -> None:
    # The batch's time, from a clock that moves 1 s per reading: one batch, two images read.
    clock = iter(range(100, 200))
    monkeypatch.setattr(sweep, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    boxes = solid_images(tmp_path / "images")
    items = collect_inputs([str(tmp_path / "images")])
    # The correction of flip.png restores the box's red channel (that is how it was built),
    # which the correction bound forbids by default (tests/test_privacy_floor.py): lifted
    # here, where the paper's counts are checked.
    loose = StrengthLimits(ssim_tolerance=1.0, psnr_tolerance=1000.0)
    settings = Settings(filter=Mask(0.5), solver=GradientSolver(alpha=1.0), strength=loose)
    config = Config("means", "mask", settings, "boxes:test")
    rows = evaluate(
        items, tmp_path / "out", [config], ExplicitBoxes(boxes), lambda _: means_classifier()
    )
    (s,) = rows
    assert s["images"] == 2 and s["errors"] == 1
    assert s["changed_after_anonymization"] == 1
    assert s["not_corrected"] == 0 and s["not_corrected_pct"] == 0.0
    assert s["vulnerable_initial_pct"] == 50.0 and s["vulnerable_final_pct"] == 0.0
    assert s["steps_histogram"] == {1: 1} and s["mean_steps"] == 1.0
    assert s["labelled"] == 2
    assert s["accuracy_original"] == 100.0
    assert s["accuracy_anonymized"] == 50.0
    assert s["accuracy_corrected"] == 100.0
    # The mask value 0.5 is stored as 128/255.
    plain = expected_psnr((204, 51, 51), (128,) * 3) + expected_psnr((255, 128, 0), (128,) * 3)
    assert s["psnr_plain_db"] == pytest.approx(plain / 2, abs=1e-3)
    assert s["psnr_corrected_db"] is not None
    assert s["seconds_per_image"] == 0.5 and s["images_per_second"] == 2.0
    out = tmp_path / "out"
    for name in ("results.json", "results.csv", "results.md", "report.html"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved[0]["steps_histogram"] == {"1": 1}
    # The flipped image was kept as an example, with the anonymized class's confidence.
    cached = [json.loads(line) for line in (out / "cache" / f"{config.key}.jsonl").open()]
    flip = next(r for r in cached if r["input"] == "flip.png")
    assert flip["example"] and flip["anonymized_name"] == "green"
    assert 0 < flip["anonymized_confidence"] < 1


def noise_images(folder: Path, n: int) -> list[InputImage]:
    """``n`` noisy images of coloured rectangles (sizes vary), as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        px = np.zeros((36 + i % 3, 44, 3), np.uint8)
        px[:] = rng.integers(0, 256, 3)
        for _ in range(4):
            y, x = rng.integers(0, 30, 2)
            h, w = rng.integers(6, 20, 2)
            px[y : y + h, x : x + w] = rng.integers(0, 256, 3)
        noise = rng.integers(-20, 21, px.shape)
        Image.fromarray(np.clip(px.astype(int) + noise, 0, 255).astype(np.uint8)).save(
            folder / f"img{i:02d}.png"
        )
    return collect_inputs([str(folder)])


def sweep_configs() -> list[Config]:
    return [
        Config(
            "tiny",
            name,
            Settings(filter=f, solver=GradientSolver(alpha=alpha, max_steps=3)),
            "saliency:12",
        )
        for name, f in (("blur", Blur(5, 3.0)), ("mask", Mask(0.5)))
        for alpha in (0.05, 0.5)
    ]


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_resume_skips_done_images_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    items = noise_images(tmp_path / "images", 8)
    configs = sweep_configs()
    source = SaliencyBox(12)
    loads: list[str] = []

    def load(spec: str) -> TorchClassifier:
        loads.append(spec)
        return tiny_classifier()

    # Resume mechanics with every image computed (no sharing across step sizes).
    full = evaluate(
        items, tmp_path / "full", configs, source, load, batch_size=2, share_unchanged=False
    )
    total = len(items) * len(configs)
    # The sweep covers every outcome: mask changes one class, corrected in 1 step at
    # alpha 0.5, not within 3 steps at alpha 0.05.
    assert [r["changed_after_anonymization"] for r in full] == [0, 0, 1, 1]
    assert [r["not_corrected"] for r in full] == [0, 0, 1, 0]
    assert sum(r["corrected"] for r in full) >= 1 and full[2]["failed"] == 1

    out = tmp_path / "resumed"
    computed: list[tuple[str, str]] = []

    def record(config: Config, r: ImageRow) -> None:
        computed.append((config.key, r.path))

    # Stop after 10 images (mid second configuration; a multiple of the batch size).
    partial = evaluate(
        items, out, configs, source, load, batch_size=2, limit=10, on_row=record,
        share_unchanged=False,
    )  # fmt: skip
    assert len(computed) == 10
    assert [r["complete"] for r in partial] == [True, False, False, False]
    first = set(computed)

    # A torn last line (a crash mid-write) is ignored.
    with open(out / "cache" / f"{configs[1].key}.jsonl", "a") as f:
        f.write('{"path": "/trunc')

    # Interrupt from a callback: the batch in flight is already cached.
    def interrupt(config: Config, r: ImageRow) -> None:
        record(config, r)
        if len(computed) == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            items, out / "cache", configs, source, load, batch_size=2, on_row=interrupt,
            share_unchanged=False,
        )  # fmt: skip
    cached_after_interrupt = 14  # 10 + two batches of 2

    computed.clear()
    resumed = evaluate(
        items, out, configs, source, load, batch_size=2, on_row=record, share_unchanged=False
    )
    assert len(computed) == total - cached_after_interrupt
    assert not first & set(computed)
    assert comparable(resumed) == comparable(full)
    assert all(r["complete"] for r in resumed)

    # Everything cached: a rerun computes nothing and does not even load the model.
    computed.clear()
    loads.clear()
    again = evaluate(
        items, out, configs, source, load, batch_size=2, on_row=record, share_unchanged=False
    )
    assert computed == [] and loads == []
    assert comparable(again) == comparable(full)


def test_unchanged_images_are_shared_across_step_sizes(tmp_path: Path) -> None:
    """Configurations that differ only in alpha anonymize identically: an image left
    unchanged by one is copied to the others, and the results stay the same."""
    items = noise_images(tmp_path / "images", 8)
    configs = sweep_configs()  # (blur, mask) x (alpha 0.05, 0.5)
    source = SaliencyBox(12)
    alone = run_sweep(
        items, tmp_path / "alone", configs, source, lambda _: tiny_classifier(), batch_size=2,
        share_unchanged=False,
    )  # fmt: skip
    computed: list[str] = []
    shared = run_sweep(
        items, tmp_path / "shared", configs, source, lambda _: tiny_classifier(), batch_size=2,
        on_row=lambda config, r: computed.append(config.key),
    )  # fmt: skip

    def strip(r: ImageRow) -> dict:
        # Timing differs, and confidences by float noise between batch compositions.
        conf = {
            k: round(getattr(r, k) or 0, 5) for k in ("anonymized_confidence", "final_confidence")
        }
        return {**asdict(r), "seconds": 0, **conf}

    for a, b in zip(alone, shared, strict=True):
        assert [strip(r) for r in a.rows] == [strip(r) for r in b.rows]
        assert b.complete
    # The second alpha of each filter computes only what the first did not leave unchanged.
    for first, second in ((0, 1), (2, 3)):
        kept = sum(r.status == "unchanged" for r in alone[first].rows)
        assert kept > 0
        assert computed.count(configs[first].key) == len(items)
        assert computed.count(configs[second].key) == len(items) - kept


def test_unreadable_images_are_retried_and_counted_as_errors(tmp_path: Path) -> None:
    boxes = solid_images(tmp_path / "images")
    items = collect_inputs([str(tmp_path / "images")])
    config = Config("means", "mask", Settings(filter=Mask(0.5), solver=GradientSolver(alpha=1.0)))
    seen: list[str] = []
    source = ExplicitBoxes(boxes)
    for _ in range(2):
        evaluate(
            items,
            tmp_path / "out",
            [config],
            source,
            lambda _: means_classifier(),
            on_row=lambda c, r: seen.append(r.name),
        )
    assert sorted(seen) == ["broken.png", "broken.png", "flip.png", "keep.png"]


# --------------------------------------------------------------------------- command line


def test_cli_sweeps_comma_separated_options(tmp_path: Path) -> None:
    noise_images(tmp_path / "images", 3)
    out = tmp_path / "out"
    args = [
        "evaluate",
        str(tmp_path / "images"),
        "--out",
        str(out),
        "--model",
        f"{__name__}:tiny_classifier",
        "--filter",
        "blur,mask",
        "--alpha",
        "0.1,0.5",
        "--regions",
        "saliency:12",
        "--max-steps",
        "10",
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())
    assert [(r["filter"], r["alpha"]) for r in rows] == [
        ("blur", 0.1),
        ("blur", 0.5),
        ("mask", 0.1),
        ("mask", 0.5),
    ]
    assert all(r["images"] == 3 for r in rows)
    md = (out / "results.md").read_text()
    assert f"Step size sweep: {__name__}:tiny_classifier, blur" in md
    assert "Architectures, anonymization by mask" in md
    # Rerun: everything comes from the cache, same numbers.
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert comparable(json.loads((out / "results.json").read_text())) == comparable(rows)


def test_cli_rejects_bad_sweep_values(tmp_path: Path) -> None:
    noise_images(tmp_path / "images", 1)
    base = ["evaluate", str(tmp_path / "images"), "--out", str(tmp_path / "out")]
    for extra, hint in (
        (["--filter", "blur,smudge"], "--filter"),
        (["--alpha", "0.1,-1"], "--alpha"),
        (["--alpha", "0.1,x"], "--alpha"),
    ):
        result = CliRunner().invoke(main, base + extra)
        assert result.exit_code == 2 and hint in result.output


def test_evaluate_has_the_option_names_of_anonymize() -> None:
    def names(command: str) -> set[str]:
        return {o for p in main.commands[command].params for o in p.opts}

    # --overwrite and --verify-with concern output files, which evaluate does not write;
    # --no-resume, --batch-pixels, --workers and the engine options concern anonymize's runs alone.
    only_anonymize = {"--overwrite", "--verify-with", "--no-resume", "--batch-pixels"}
    only_anonymize |= {"--engine", "--address", "--ray-actors", "--ray-gpus-per-actor", "--workers"}
    assert names("anonymize") - only_anonymize <= names("evaluate")
