"""``results.json``, ``results.csv``, ``results.md`` and ``report.html``; the report is
rendered in a real headless browser (Debian chromium)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptanon.evaluate import Config, Example, ImageRow, summarize
from adaptanon.evaluate.report import (
    CSV_COLUMNS,
    alpha_tables,
    fmt_hist,
    fmt_pct,
    html_report,
    markdown_report,
    model_tables,
    results_csv,
    write_reports,
)
from adaptanon.method.filters import Blur, Mask
from adaptanon.method.pipeline import Settings
from adaptanon.method.solvers import GradientSolver

# --------------------------------------------------------------------------- fixtures


def image_rows(changed: int, failed: int, n: int = 20) -> list[ImageRow]:
    """``n`` images: ``changed`` change class (the first ``failed`` of them stay wrong),
    corrected ones take 1, 2, 3, 1, 2, 3... steps."""
    rows = []
    for i in range(n):
        if i < changed:
            bad = i < failed
            rows.append(
                ImageRow(
                    path=f"/d/{i}.png",
                    input=f"{i}.png",
                    status="failed" if bad else "corrected",
                    steps=100 if bad else 1 + i % 3,
                    original_class=1,
                    anonymized_class=2,
                    final_class=2 if bad else 1,
                    psnr_plain=20.0,
                    psnr_final=19.0,
                    seconds=0.1,
                )
            )
        else:
            rows.append(
                ImageRow(
                    path=f"/d/{i}.png",
                    input=f"{i}.png",
                    status="unchanged",
                    original_class=1,
                    anonymized_class=1,
                    final_class=1,
                    psnr_plain=22.0,
                    psnr_final=22.0,
                    seconds=0.1,
                )
            )
    return rows


def configs() -> list[Config]:
    out = []
    for model in ("net_a", "net_b"):
        for name, f in (("blur", Blur()), ("mask", Mask())):
            for alpha in (0.5, 0.1):
                out.append(
                    Config(model, name, Settings(filter=f, solver=GradientSolver(alpha=alpha)))
                )
    return out


def results() -> list[dict]:
    rows = []
    for i, c in enumerate(configs()):
        s = summarize(c, image_rows(changed=4 + i % 3, failed=i % 2), {"/d/0.png": 1})
        s["complete"] = True
        rows.append(s)
    return rows


def example(name: str) -> Example:
    h, w = 60, 90
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90)], -1).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:30, 20:50] = True
    anon = img.copy()
    anon[mask] = 128
    row = ImageRow(
        path=f"/d/{name}",
        input=name,
        status="corrected",
        steps=2,
        original_class=1,
        anonymized_class=2,
        final_class=1,
        original_name="tabby",
        anonymized_name="Egyptian cat",
        final_name="tabby",
        original_confidence=0.6,
        anonymized_confidence=0.4,
        final_confidence=0.55,
        example="example_0000.npz",
    )
    return Example(row, img, anon, img, mask)


# --------------------------------------------------------------------------- tables and files


def test_formatting() -> None:
    assert fmt_pct(15.9444) == "15.94%" and fmt_pct(0.0, 3) == "0.000%" and fmt_pct(None) == "–"
    assert fmt_hist({"3": 4, "1": 680, "2": 41}) == "1: 680, 2: 41, 3: 4"


def test_tables_are_laid_out_like_the_paper() -> None:
    rows = results()
    by_alpha = alpha_tables(rows)
    assert [t.title for t in by_alpha] == [
        "Step size sweep: net_a, blur",
        "Step size sweep: net_a, mask",
        "Step size sweep: net_b, blur",
        "Step size sweep: net_b, mask",
    ]
    t = by_alpha[0]
    assert t.headers[0] == "step size α"
    assert [r[0] for r in t.rows] == ["0.1", "0.5"]  # sorted by alpha, like Table 1
    assert "% vulnerable (final)" in t.headers and "top-1 original" in t.headers
    # net_a / blur / alpha 0.1 is the second config: 5 changed, 1 failed, of 20.
    cells = dict(zip(t.headers, t.rows[0], strict=True))
    assert cells["# changed class after anonymization"] == "5"
    assert cells["# not corrected"] == "1"
    assert cells["% not corrected"] == "20.000%"
    assert cells["% vulnerable (initial)"] == "25.00%"
    assert cells["% vulnerable (final)"] == "5.000%"
    assert cells["steps: images"] == "1: 1, 2: 2, 3: 1"  # i = 1..4: 2, 3, 1, 2 steps
    by_model = model_tables(rows)
    assert [t.title for t in by_model] == [
        "Architectures, anonymization by blur",
        "Architectures, anonymization by mask",
    ]
    assert by_model[0].headers[:2] == ["architecture", "α"]
    assert [r[0] for r in by_model[0].rows] == ["net_a", "net_b", "net_a", "net_b"]
    md = markdown_report(rows)
    assert md.count("| step size α |") == 4 and md.count("| architecture | α |") == 2


def test_result_files(tmp_path: Path) -> None:
    rows = results()
    paths = write_reports(tmp_path, rows, [(configs()[0], [example("a.png")])])
    saved = json.loads(paths["json"].read_text())
    assert len(saved) == len(rows)
    for key in (
        "model",
        "filter",
        "alpha",
        "images",
        "changed_after_anonymization",
        "not_corrected",
        "vulnerable_initial_pct",
        "vulnerable_final_pct",
        "mean_steps",
        "steps_histogram",
        "psnr_plain_db",
        "psnr_corrected_db",
        "accuracy_original",
        "seconds_per_image",
        "images_per_second",
    ):
        assert key in saved[0]
    table = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == len(rows)
    assert table[1]["steps_histogram"] == "1:1;2:2;3:1"
    assert table[0]["accuracy_original"] == "100.0"
    assert "**Step size sweep: net_b, mask**" in paths["md"].read_text()
    assert oct(paths["html"].stat().st_mode & 0o044) != "0o0"  # readable by others too
    assert results_csv([]) == ",".join(CSV_COLUMNS) + "\n"


def test_report_is_self_contained() -> None:
    text = html_report(results(), [("net_a / blur / α=0.1", [example("a.png"), example("b")])])
    assert not re.search(r'(?:src|href)\s*=\s*"(?!data:)', text)
    assert "http://" not in text and "https://" not in text and "<link" not in text
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == text.count("<img") == 3  # examples, histogram, alpha sweep


# --------------------------------------------------------------------------- browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, as ``make test`` installs it (its ``chromium`` target); the test
    installs nothing itself and is skipped where there is none."""
    path = find_chromium()
    if path is None:
        pytest.skip("no chromium (`make chromium` installs Debian's)")
    return path


def browse(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def loaded_images(dom: str) -> tuple[int, int]:
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group(0))
    total = re.search(r'data-images-total="(\d+)"', body.group(0))
    assert loaded and total, body.group(0)
    return int(loaded.group(1)), int(total.group(1))


def test_report_renders_in_headless_chromium(chromium: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = configs()
    paths = write_reports(out, results(), [(cfg[0], [example("a.png")]), (cfg[2], [example("b")])])
    url = paths["html"].resolve().as_uri()

    dom = browse(chromium, tmp_path, "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded, total = loaded_images(dom.stdout)
    assert total == paths["html"].read_text().count("<img") == 4
    assert loaded == total

    # The counter does notice an image that fails to decode.
    broken = out / "broken.html"
    broken.write_text(
        paths["html"].read_text().replace("<h1>", '<img src="data:image/png;base64,AAAA"><h1>')
    )
    dom = browse(chromium, tmp_path, "--virtual-time-budget=10000", "--dump-dom", broken.as_uri())
    assert loaded_images(dom.stdout) == (total, total + 1)

    shot = tmp_path / "shot.png"
    run = browse(chromium, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", url)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    gray = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert gray.shape == (2400, 1280)
    assert gray.std() > 10  # not blank
    assert (gray < 200).mean() > 0.02  # text, tables and figures drawn
