"""What a large photo costs beyond a small one when no correction step is needed
(issue 16, part 4): the once-per-image work, files in and files out.

A 4000x3000 mosaic of 64 ImageNet-sample photos (each resized to 500x375: photographic
detail everywhere) is written as a JPEG (quality 95), and the same mosaic shrunk to
577x433 (0.25 megapixels) as another. Each goes alone through the local engine
(:func:`adaptanon.engines.run`, ``workers=0``: everything in this process, one thread)
with EfficientNet-Lite0, a blur, one region (50x50 view pixels at the view's centre,
mapped to input pixels) and ``--max-steps 0``: read, classify, anonymize, check, measure,
encode, verify and write. The model is loaded once, before the clock starts; each time is
the fastest of ``--repeats`` runs. The figure is the difference, 12 MP minus 0.25 MP.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/large_photos.py [--data DIR]
    [--repeats 3] [--no-docs]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("../shared/data/imagenet-sample")
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python bench/large_photos.py"


def mosaic(data: Path) -> Image.Image:
    """4000x3000: 8x8 ImageNet photos, each resized to 500x375."""
    files = sorted(data.glob("*.JPEG"))[:64]
    tiles = [np.asarray(Image.open(f).convert("RGB").resize((500, 375))) for f in files]
    rows = [np.concatenate(tiles[r * 8 : r * 8 + 8], axis=1) for r in range(8)]
    return Image.fromarray(np.concatenate(rows, axis=0))


PARTS = {
    "model inputs (resize to the view)": ("classifiers/base.py", "inputs"),
    "anonymize": ("method/filters.py", "anonymize"),
    "solver (0 steps: check, paste)": ("method/solvers/gradient.py", "correct"),
    "back to 8 bits (window)": ("method/pipeline.py", "_file_pixels"),
    "finish (metrics, encode, verify)": ("method/finish.py", "finish_image"),
}
"""Where the 12 MP photo's time goes: cumulative seconds of these functions."""


def where(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds of each of :data:`PARTS` in a profile."""
    table = stats.stats  # type: ignore[attr-defined]
    out = {}
    for label, (file, function) in PARTS.items():
        out[label] = sum(
            row[3] for (path, _, name), row in table.items()
            if name == function and path.endswith(file)
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print where 12 MP spends")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    from adaptanon.classifiers import efficientnet_lite
    from adaptanon.engines import run
    from adaptanon.io.images import InputImage, read_image
    from adaptanon.method import Blur, GradientSolver, Settings
    from adaptanon.regions import ExplicitBoxes

    torch.set_num_threads(1)
    clf = efficientnet_lite("efficientnet_lite0")
    settings = Settings(filter=Blur(), solver=GradientSolver(max_steps=0))
    big = mosaic(args.data)
    results: dict[str, float] = {}
    parts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="adaptanon-bench-") as tmp:
        folder = Path(tmp)
        for name, image in (("0.25", big.resize((577, 433))), ("12", big)):
            path = folder / f"{name}mp.jpg"
            image.save(path, quality=95)
            geometry = clf.geometry(image.height, image.width)
            assert geometry is not None
            c = geometry.crop / 2
            box = geometry.view_box_to_input((c - 25, c - 25, c + 25, c + 25))
            source = ExplicitBoxes({path.name: [list(box)]})
            item = [InputImage(path, Path(path.name))]
            times = []
            for r in range(args.repeats + 1):  # the first warms up
                out = folder / f"out-{name}-{r}"
                start = time.perf_counter()
                run(item, out, clf, source, settings, 1, workers=0)
                times.append(time.perf_counter() - start)
            results[name] = min(times[1:])
            print(json.dumps({"megapixels": name, "seconds": results[name]}), flush=True)
            if name == "12":
                profile = cProfile.Profile()
                profile.enable()
                run(item, folder / "out-profile", clf, source, settings, 1, workers=0)
                profile.disable()
                stats = pstats.Stats(profile, stream=io.StringIO())
                parts = where(stats)
                start = time.perf_counter()  # reading runs in a thread cProfile does not see
                read_image(path)
                parts = {"read (decode, EXIF), in its thread": time.perf_counter() - start, **parts}
                print(json.dumps(parts), flush=True)
                if args.profile:
                    text = io.StringIO()
                    stats.stream = text  # type: ignore[attr-defined]
                    stats.sort_stats("cumulative").print_stats(30)
                    print(text.getvalue())
    difference = results["12"] - results["0.25"]
    parts_table = "\n".join(f"| {k} | {v:.2f} |" for k, v in parts.items())
    print(json.dumps({"difference_s": difference}))
    section = (
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        "cores shared with other jobs (figures move with their load), no GPU, one thread, "
        f"torch {torch.__version__}, by `{COMMAND}`: one JPEG through the local engine "
        "(read, classify, anonymize, check, measure, encode, verify, write), "
        "EfficientNet-Lite0, blur, one region, 0 correction steps, the fastest of "
        f"{args.repeats} runs.\n\n"
        "| 0.25 MP (577x433) s | 12 MP (4000x3000) s | difference s |\n|---|---|---|\n"
        f"| {results['0.25']:.2f} | {results['12']:.2f} | **{difference:.2f}** |\n\n"
        "Where the 12 MP photo's time goes (one more run, under cProfile, cumulative "
        "seconds; the model inputs and the solver belong to the classifier and solver "
        "side):\n\n| part | s |\n|---|---|\n" + parts_table
    )
    print(section)
    if not args.no_docs:
        sys.path.insert(0, str(ROOT / "bench"))
        from docs_section import update_section

        update_section("large-photos", "Large photos without correction steps (issue 16)", section)


if __name__ == "__main__":
    main()
