"""Privacy floor on the ImageNet sample (issue 11): how anonymized is every written region?

Runs the real command line (``adaptanon anonymize``, defaults: saliency box, PNG) with the
default blur and the default mask on ``../shared/data/imagenet-sample``, then reads the
manifest's per-region strength (PSNR, SSIM, detail against the original, after plain
anonymization and in the written file) and counts ``weak`` images and corrections that
were refused because they would undo the anonymization. Writes the table into
docs/results.md between the ``bench:privacy_floor`` markers (only for a full run).

Speed is reported as a ratio: the time to measure every region's strength again from the
files, relative to the whole run.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/privacy_floor.py [--images DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from docs_section import update_section
from imagenet_sample import ROOT, run_config

from adaptanon.io.codecs import to_image
from adaptanon.io.images import read_image
from adaptanon.method.metrics import StrengthLimits, image_strength

FILTERS = ("blur", "mask")


def region_values(records: list[dict], field: str, key: str) -> list[float]:
    """Every region's ``key`` from ``field`` (``strength_plain``/``strength_final``); an
    identical region's PSNR (None) counts as infinite."""
    out = []
    for r in records:
        for s in r.get(field) or []:
            v = s.get(key)
            out.append(float("inf") if v is None and key == "psnr" else v)
    return [v for v in out if v is not None]


def remeasure_seconds(records: list[dict]) -> float:
    """Seconds to measure every written region again from the files (read both, compare)."""
    start = time.perf_counter()
    for r in records:
        if r["status"] == "error" or not r["regions"]:
            continue
        original = to_image(read_image(ROOT / r["input"]))
        written = to_image(read_image(ROOT / r["output"]))
        image_strength(original, written, [tuple(b) for b in r["regions"]])
    return time.perf_counter() - start


def summarize(filt: str, records: list[dict], seconds: float, cmd: str) -> dict:
    ok = [r for r in records if r["status"] != "error"]
    row: dict = {"filter": filt, "images": len(ok), "command": cmd}
    row["statuses"] = {
        s: sum(r["status"] == s for r in ok) for s in sorted({r["status"] for r in ok})
    }
    row["weak_images"] = row["statuses"].get("weak", 0)
    row["weak_regions"] = sum(
        1
        for r in ok
        for s in r.get("strength_final") or []
        if s["ssim"] > StrengthLimits().max_ssim
        or (s["detail"] is not None and s["detail"] > StrengthLimits().max_detail)
    )
    row["undone"] = sum(1 for r in ok if "undo the anonymization" in (r.get("error") or ""))
    row["corrected"] = row["statuses"].get("corrected", 0)
    for stage, field in (("plain", "strength_plain"), ("final", "strength_final")):
        for key in ("ssim", "psnr", "detail"):
            values = region_values(ok, field, key)
            row[f"{key}_{stage}_median"] = statistics.median(values) if values else None
            row[f"{key}_{stage}_max"] = max(values) if values else None
    # The correction's effect on the corrected images only (plain vs written).
    rising = [
        (f["ssim"] - p["ssim"], (f["psnr"] or 1e9) - (p["psnr"] or 1e9))
        for r in ok
        if r["status"] in ("corrected", "weak", "failed") and r["steps"] > 0
        for p, f in zip(r["strength_plain"], r["strength_final"], strict=True)
    ]
    row["corrected_ssim_rise_max"] = max((d for d, _ in rising), default=None)
    row["corrected_psnr_rise_max"] = max((d for _, d in rising), default=None)
    row["remeasure_ratio"] = remeasure_seconds(ok) / seconds
    return row


def fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def render(rows: list[dict], args: argparse.Namespace) -> str:
    limits = StrengthLimits()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores, torch {torch.__version__}, no GPU, by `OMP_NUM_THREADS=1 .venv/bin/python "
        f"bench/privacy_floor.py` on {args.images.name} ({rows[0]['images']} images): "
        "efficientnet_lite0, saliency 50x50 box at the 224x224 view, alpha 0.1, criterion "
        f"`class`, PNG, default limits (weak above SSIM {limits.max_ssim:g} or detail "
        f"{limits.max_detail:g}; correction may raise SSIM by {limits.ssim_tolerance:g} and "
        f"PSNR by {limits.psnr_tolerance:g} dB).",
        "",
        "| filter | images | weak images | weak regions | corrections refused (undo) | "
        "corrected | SSIM median plain / written | SSIM worst plain / written | "
        "PSNR median plain / written (dB) | PSNR worst plain / written (dB) | "
        "detail worst plain / written | largest SSIM / PSNR rise by a correction |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['filter']} | {r['images']} | {r['weak_images']} | {r['weak_regions']} | "
            f"{r['undone']} | {r['corrected']} | "
            f"{fmt(r['ssim_plain_median'])} / {fmt(r['ssim_final_median'])} | "
            f"{fmt(r['ssim_plain_max'])} / {fmt(r['ssim_final_max'])} | "
            f"{fmt(r['psnr_plain_median'], 2)} / {fmt(r['psnr_final_median'], 2)} | "
            f"{fmt(r['psnr_plain_max'], 2)} / {fmt(r['psnr_final_max'], 2)} | "
            f"{fmt(r['detail_plain_max'])} / {fmt(r['detail_final_max'])} | "
            f"{fmt(r['corrected_ssim_rise_max'])} / {fmt(r['corrected_psnr_rise_max'], 2)} dB |"
        )
    lines += ["", "Commands run (one per row):", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    lines += [
        "",
        "Worst is the highest value over all regions (the least anonymized). Measuring every "
        "region again from the files (reading both images, PSNR, SSIM and detail) took "
        + ", ".join(f"{r['remeasure_ratio']:.3f}x ({r['filter']})" for r in rows)
        + " the time of the whole run.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/imagenet-sample"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/privacy_floor")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    rows = []
    for filt in FILTERS:
        records, seconds, cmd = run_config(
            args.images, args.out / filt, filt, "png", [], args.limit
        )
        rows.append(summarize(filt, records, seconds, cmd))
        print(json.dumps(rows[-1]), flush=True)
    table = render(rows, args)
    print(table)
    if not args.no_docs and args.limit is None:
        update_section(
            "privacy_floor", "Privacy floor: how anonymized is every written region", table
        )


if __name__ == "__main__":
    main()
