"""Black-box correction (issue 14) on the ImageNet sample: EfficientNet-Lite0 exported to
ONNX and run by onnxruntime as a model that can only be queried, against the gradient
solver on the built-in torch model, in the same run on the same machine.

Per filter (blur, mask), three runs of the real command line (``adaptanon anonymize``):

1. ``gradient``: the default (built-in Lite0, paper's saliency box, gradient solver);
2. ``black box, same boxes``: ``--model lite0.onnx --black-box`` with the regions the
   gradient run chose (``--regions boxes=FILE`` written from its manifest), so both
   solvers face the same regions;
3. ``black box, occlusion saliency`` (``--occlusion``): nothing but queries, the box from
   the gradient-free occlusion saliency (``--regions saliency`` on a query-only model).

Every written file (``_failed/`` ones included) is classified again from its bytes by an
independent check: a plain PIL loader and onnxruntime on the same ONNX file, none of
adaptanon's code. Class concordance (CEC 2024's measure) is the share of all images whose
written file has the original's class under that check; vulnerable images are those whose
class the plain anonymization changed. Writes the ``blackbox`` section of
docs/results.md (only without ``--limit`` unless ``--docs``).

Usage: .venv/bin/python bench/blackbox.py [--images DIR] [--limit N] [--occlusion] [--docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from cli_run import ROOT, run_anonymize, shown
from docs_section import update_section
from imagenet_sample import plain_pil_input

from adaptanon.classifiers.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    lite_network,
)

FILTERS = ("blur", "mask")


def export_lite0(path: Path) -> Path:
    """EfficientNet-Lite0 (built-in weights) as an ONNX file with a free batch size."""
    model = lite_network("efficientnet_lite0")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def onnx_classes(path: Path, files: list[Path], batch: int = 32) -> list[int]:
    """Top-1 classes of ``files`` under the plain PIL loader, run by onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out: list[int] = []
    for i in range(0, len(files), batch):
        x = np.stack([plain_pil_input(p).numpy() for p in files[i : i + batch]])
        out += session.run(None, {"image": x})[0].argmax(1).tolist()
    return out


def summarize(name: str, records: list[dict], seconds: float, cmd: str, check: dict) -> dict:
    """One table row: statuses, concordance on the written files, queries, PSNR."""
    n = len(records)
    written = [r for r in records if r.get("output")]

    def kept(r: dict) -> bool:
        return check["final"].get(r["input"]) == check["original"][Path(r["input"]).name]

    concordant = sum(kept(r) for r in written)
    vulnerable = [r for r in records if r["anonymized_class"] not in (None, r["original_class"])]
    vul_ok = [r for r in vulnerable if r["status"] == "corrected" and kept(r)]
    corrected = [r for r in records if r["status"] == "corrected"]
    queries = [r["queries"] for r in corrected if r.get("queries") is not None]
    pairs = [(r["psnr_plain"], r["psnr_final"]) for r in records
             if r.get("psnr_plain") is not None and r.get("psnr_final") is not None]  # fmt: skip
    statuses = {s: sum(r["status"] == s for r in records) for s in
                ("unchanged", "corrected", "failed", "weak", "error", "no_regions")}  # fmt: skip
    return {
        "run": name,
        "images": n,
        **statuses,
        "concordance_pct": 100.0 * concordant / max(1, n),
        "vulnerable": len(vulnerable),
        "vulnerable_corrected": len(vul_ok),
        "vulnerable_corrected_pct": 100.0 * len(vul_ok) / max(1, len(vulnerable)),
        "median_queries": statistics.median(queries) if queries else None,
        "mean_queries": statistics.mean(queries) if queries else None,
        "max_queries": max(queries) if queries else None,
        "mean_steps": statistics.mean(r["steps"] for r in corrected) if corrected else None,
        "psnr_plain": statistics.mean(p for p, _ in pairs) if pairs else None,
        "psnr_final": statistics.mean(f for _, f in pairs) if pairs else None,
        "psnr_gain_max": max(f - p for p, f in pairs) if pairs else None,
        "seconds": seconds,
        "seconds_per_image": seconds / max(1, n),
        "command": cmd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/imagenet-sample"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/blackbox")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--occlusion", action="store_true", help="also the occlusion runs")
    parser.add_argument("--docs", action="store_true", help="write docs even with --limit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = sorted(args.images.glob("*.JPEG"))[: args.limit]
    inputs = [str(args.images)] if args.limit is None else [str(p) for p in images]
    onnx = export_lite0(args.out / "efficientnet_lite0.onnx")
    spec = json.dumps(
        {
            "preset": "torchvision-pil",
            "mean": list(EFFICIENTNET_LITE_MEAN),
            "std": list(EFFICIENTNET_LITE_STD),
        }  # fmt: skip
    )
    black_box = ["--model", shown(onnx), "--black-box", "--preprocess", spec]
    original = dict(zip([p.name for p in images], onnx_classes(onnx, images), strict=True))
    rows = []
    for filt in FILTERS:
        runs: list[tuple[str, list[str]]] = [("gradient", [])]
        boxes = args.out / f"boxes-{filt}.json"
        runs.append(("black box, same boxes", [*black_box, "--regions", f"boxes={shown(boxes)}"]))
        if args.occlusion:
            runs.append(("black box, occlusion saliency", black_box))
        baseline = None
        for name, extra in runs:
            out = args.out / f"{filt}-{name.replace(' ', '').replace(',', '-')}"
            options = ["--filter", filt, "-q", "--no-resume", "--overwrite", *extra]
            records, seconds, cmd = run_anonymize(inputs, out, options, threads=1)
            # The folder's manifest also lists what an earlier, larger run left there.
            records = [r for r in records if Path(r["input"]).name in original]
            cmd = cmd.replace(spec, f"'{spec}'")
            if name == "gradient":
                boxes.write_text(json.dumps({Path(r["input"]).name: r["regions"] for r in records}))
            files = [Path(r["output"]) for r in records if r.get("output")]
            final = dict(
                zip(
                    [r["input"] for r in records if r.get("output")],
                    onnx_classes(onnx, [f if f.is_absolute() else ROOT / f for f in files]),
                    strict=True,
                )
            )
            row = summarize(name, records, seconds, cmd, {"original": original, "final": final})
            row["filter"] = filt
            baseline = baseline or seconds
            row["time_vs_gradient"] = seconds / baseline
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = render(rows, len(images), args)
    print(table)
    if args.docs or args.limit is None:
        name = "blackbox_occlusion" if args.occlusion else "blackbox"
        heading = "Black-box correction (--black-box): ONNX in onnxruntime" + (
            ", with the occlusion saliency" if args.occlusion else ""
        )
        update_section(name, heading, table)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(rows: list[dict], n: int, args: argparse.Namespace) -> str:
    """The Markdown section for docs/results.md."""
    limit = f" --limit {args.limit}" if args.limit else ""
    occl = " --occlusion" if args.occlusion else ""
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        "cores shared with other jobs, one thread per run (torch and onnxruntime), no GPU, "
        f"torch {torch.__version__}, by `.venv/bin/python bench/blackbox.py{limit}{occl}` on "
        f"the first {n} images of {args.images.name}. EfficientNet-Lite0 exported to ONNX and "
        "run by onnxruntime as the black box (Lite0's own mean and std declared with "
        "`--preprocess`); alpha 0.1, criterion `class`, PNG, default `--max-queries` (5000). "
        "Concordance: share of all images whose written file (also those under `_failed/`) "
        "has the original's class under an independent check (plain PIL loader + "
        "onnxruntime); vulnerable: class changed by the plain anonymization; corrected: "
        "status `corrected` and the check agrees. Queries per corrected image include the "
        "check of the plainly anonymized file (not the original's classification, nor the "
        "occlusion saliency's queries). Time: the whole command, as a ratio to the gradient "
        "run of the same filter in this run.",
        "",
        "| filter | run | concordance, all images | vulnerable corrected | failed | median / "
        "mean / max queries (corrected) | mean steps | region PSNR plain -> written (dB), "
        "largest rise | seconds | time vs gradient |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = (
            "-"
            if r["median_queries"] is None
            else f"{r['median_queries']:g} / {r['mean_queries']:.0f} / {r['max_queries']}"
        )
        lines.append(
            f"| {r['filter']} | {r['run']} | {r['concordance_pct']:.2f}% of {r['images']} | "
            f"{r['vulnerable_corrected']}/{r['vulnerable']} ({r['vulnerable_corrected_pct']:.1f}%) "
            f"| {r['failed']} | {q} | {_num(r['mean_steps'], 2)} | {_num(r['psnr_plain'], 2)} -> "
            f"{_num(r['psnr_final'], 2)}, {_num(r['psnr_gain_max'], 2)} | {r['seconds']:.0f} | "
            f"{r['time_vs_gradient']:.1f}x |"
        )
    lines += ["", "Commands run (one per row):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
