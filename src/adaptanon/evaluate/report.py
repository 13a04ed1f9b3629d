"""The outputs of ``adaptanon evaluate``: ``results.json``, ``results.csv``, ``results.md``
and a self-contained ``report.html`` (tables, an example figure like the paper's Fig. 3,
the step histogram and the alpha-sweep chart; images embedded as PNG data URIs, no
external CSS or JavaScript, so it opens offline from disk).

Everything here is a function of the results rows (see
:func:`adaptanon.evaluate.summarize`) and of the stored example thumbnails.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from adaptanon.evaluate.rows import Config, Example  # noqa: E402
from adaptanon.io.atomic import atomic_write  # noqa: E402

Row = Mapping[str, Any]

CSV_COLUMNS = (
    "model",
    "filter",
    "alpha",
    "images",
    "errors",
    "changed_after_anonymization",
    "not_corrected",
    "not_corrected_pct",
    "vulnerable_initial_pct",
    "vulnerable_final_pct",
    "mean_steps",
    "steps_histogram",
    "unchanged",
    "corrected",
    "failed",
    "weak",
    "labelled",
    "accuracy_original",
    "accuracy_anonymized",
    "accuracy_corrected",
    "psnr_plain_db",
    "psnr_corrected_db",
    "measured_regions",
    "identical_regions",
    *(
        f"region_{key}_{stage}_{stat}"
        for stage in ("plain", "corrected")
        for key in ("ssim", "psnr")
        for stat in ("min", "median", "max")
    ),
    "region_detail_plain_max",
    "region_detail_corrected_max",
    *(f"region_{key}_{stage}_mean" for stage in ("plain", "corrected") for key in ("ssim", "psnr")),
    "images_with_regions",
    "images_with_regions_pct",
    *(
        f"{label}_{key}"
        for label in ("face", "plate")
        for key in (
            "images",
            "images_pct",
            "changed",
            "vulnerable_initial_pct",
            "vulnerable_initial_within_pct",
            "not_corrected",
            "vulnerable_final_pct",
            "mean_steps",
        )
    ),
    "faces_checked",
    "faces_redetected_plain",
    "faces_redetected_corrected",
    "face_redetection_plain_pct",
    "face_redetection_corrected_pct",
    "correction_mean_levels",
    "correction_max_levels",
    "plates_checked",
    "plate_chars",
    "plate_chars_read_original_pct",
    "plate_chars_read_plain_pct",
    "plate_chars_read_corrected_pct",
    "identity_faces",
    "identity_gallery",
    "identity_chance_pct",
    *(
        f"identity_{key}_{kind}_pct"
        for kind in ("plain", "corrected", "plain_attacked", "corrected_attacked")
        for key in ("rank1", "verify")
    ),
    *(
        f"identity_distance_{kind}_median"
        for kind in ("plain", "corrected", "plain_attacked", "corrected_attacked")
    ),
    "identity_attack",
    "concordance_pct",
    "concordance_vulnerable_pct",
    "queries_mean",
    "queries_median",
    "queries_mean_all",
    "seconds_per_image",
    "images_per_second",
    "regions",
    "filter_settings",
    "shape",
    "criterion",
    "max_steps",
    "format",
    "complete",
    "key",
)


# --------------------------------------------------------------------------- formatting


def fmt_pct(value: float | None, digits: int = 2) -> str:
    """``15.94%``; an en dash for None."""
    return "–" if value is None else f"{value:.{digits}f}%"


def fmt_num(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals; an en dash for None."""
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_hist(hist: Mapping[Any, int]) -> str:
    """``{1: 680, 2: 41}`` -> ``1: 680, 2: 41`` (steps: images)."""
    return ", ".join(f"{k}: {v}" for k, v in sorted(hist.items(), key=lambda kv: int(kv[0])))


def csv_value(value: Any) -> str:
    """A results value as a CSV cell (histograms as ``1:680;2:41``, None as empty)."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ";".join(f"{k}:{v}" for k, v in sorted(value.items(), key=lambda kv: int(kv[0])))
    return str(value)


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A titled table of text cells, rendered to Markdown or HTML."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        """A Markdown (GFM) table under a bold title."""

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        align = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers)))
        out = [f"**{self.title}**", "", line(self.headers), align + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out)

    def html(self) -> str:
        """An HTML table with a caption."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows
        )
        return (
            f"<table><caption>{html.escape(self.title)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


Column = tuple[str, Callable[[Row], str]]


def _columns(rows: Sequence[Row], first: list[Column]) -> list[Column]:
    """The metric columns after ``first``; accuracy columns only when some image has a
    label."""
    cols: list[Column] = first + [
        ("images", lambda r: str(r["images"])),
        ("# changed class after anonymization", lambda r: str(r["changed_after_anonymization"])),
        ("# not corrected", lambda r: str(r["not_corrected"])),
        ("% not corrected", lambda r: fmt_pct(r["not_corrected_pct"], 3)),
        ("% vulnerable (initial)", lambda r: fmt_pct(r["vulnerable_initial_pct"], 2)),
        ("% vulnerable (final)", lambda r: fmt_pct(r["vulnerable_final_pct"], 3)),
        ("mean steps", lambda r: fmt_num(r["mean_steps"])),
        ("steps: images", lambda r: fmt_hist(r["steps_histogram"]) or "–"),
    ]
    if any(r.get("labelled") for r in rows):
        cols += [
            ("top-1 original", lambda r: fmt_pct(r["accuracy_original"])),
            ("top-1 anonymized", lambda r: fmt_pct(r["accuracy_anonymized"])),
            ("top-1 corrected", lambda r: fmt_pct(r["accuracy_corrected"])),
        ]
    cols += [
        ("PSNR plain (dB)", lambda r: fmt_num(r["psnr_plain_db"])),
        ("PSNR corrected (dB)", lambda r: fmt_num(r["psnr_corrected_db"])),
        ("s / image", lambda r: fmt_num(r["seconds_per_image"], 3)),
        ("errors", lambda r: str(r["errors"])),
    ]
    return cols


def column_table(title: str, cols: Sequence[Column], rows: Sequence[Row]) -> Table:
    """A table with a line per row and a column per ``(header, format)`` pair."""
    return Table(title, [h for h, _ in cols], [[f(r) for _, f in cols] for r in rows])


def _table(title: str, rows: Sequence[Row], first: list[Column]) -> Table:
    return column_table(title, _columns(rows, first), rows)


def _unique(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def alpha_tables(rows: Sequence[Row]) -> list[Table]:
    """Like the paper's Table 1: one table per (model, filter), a line per step size."""
    tables = []
    for model, filt in _unique([(r["model"], r["filter"]) for r in rows]):
        group = sorted(
            (r for r in rows if r["model"] == model and r["filter"] == filt),
            key=lambda r: r["alpha"],
        )
        title = f"Step size sweep: {model}, {filt}"
        tables.append(_table(title, group, [("step size α", lambda r: f"{r['alpha']:g}")]))
    return tables


def model_tables(rows: Sequence[Row]) -> list[Table]:
    """Like the paper's Tables 2 and 3: one table per filter, a line per model (and step
    size, when several were swept)."""
    tables = []
    several = len(_unique([r["alpha"] for r in rows])) > 1
    for filt in _unique([r["filter"] for r in rows]):
        group = [r for r in rows if r["filter"] == filt]
        group.sort(key=lambda r: r["alpha"])
        first: list[Column] = [("architecture", lambda r: str(r["model"]))]
        if several:
            first.append(("α", lambda r: f"{r['alpha']:g}"))
        tables.append(_table(f"Architectures, anonymization by {filt}", group, first))
    return tables


def _pair(r: Row, key: str, stat: str, digits: int) -> str:
    """``plain / corrected`` of one statistic, e.g. ``0.71 / 0.70``."""
    return " / ".join(
        fmt_num(r.get(f"region_{key}_{stage}_{stat}"), digits) for stage in ("plain", "corrected")
    )


def strength_table(rows: Sequence[Row]) -> Table:
    """Per-region anonymization strength (the privacy floor), a line per configuration:
    the median and the worst (highest) SSIM and PSNR of the regions after plain
    anonymization and in the written files, the most fine detail left, and the images
    that were ``weak``."""
    cols: list[Column] = [
        ("configuration", lambda r: f"{r['model']} / {r['filter']} / α={r['alpha']:g}"),
        ("regions", lambda r: str(r.get("measured_regions", 0))),
        ("weak images", lambda r: str(r.get("weak", 0))),
        ("identical regions", lambda r: str(r.get("identical_regions", 0))),
        ("SSIM median (plain / corrected)", lambda r: _pair(r, "ssim", "median", 3)),
        ("SSIM worst", lambda r: _pair(r, "ssim", "max", 3)),
        ("PSNR median (dB)", lambda r: _pair(r, "psnr", "median", 2)),
        ("PSNR worst (dB)", lambda r: _pair(r, "psnr", "max", 2)),
        (
            "detail worst",
            lambda r: " / ".join(
                fmt_num(r.get(f"region_detail_{s}_max"), 3) for s in ("plain", "corrected")
            ),
        ),
    ]
    return column_table("Anonymization strength per region (privacy floor)", cols, rows)


def _config(r: Row) -> str:
    return f"{r['model']} / {r['filter']} / α={r['alpha']:g}"


TABLE4_SKIP = ("saliency",)
"""Region labels that get no line in :func:`detector_table` (not detections)."""


def detector_labels(rows: Sequence[Row]) -> list[str]:
    """The region labels of detections (``face``, ``plate``, a file's categories) in
    ``rows``, in order of first appearance."""
    return _unique([lab for r in rows for lab in r.get("by_label", {}) if lab not in TABLE4_SKIP])


def detector_table(rows: Sequence[Row]) -> Table | None:
    """Like the paper's Table 4 (faces on ImageNet), for every region label: a line per
    configuration and label with the images that have such a region (and their share),
    the vulnerable share before correction (of all images, and of those images), the
    images not corrected, the vulnerable share after and the mean steps. None when the
    regions are not detections."""
    lines: list[list[str]] = []
    for r in rows:
        for label in detector_labels([r]):
            e = r["by_label"][label]
            lines.append(
                [
                    _config(r),
                    label,
                    str(r["images"]),
                    f"{e['images']} ({fmt_pct(e['images_pct'], 1)})",
                    fmt_pct(e["vulnerable_initial_pct"]),
                    fmt_pct(e["vulnerable_initial_within_pct"]),
                    str(e["not_corrected"]),
                    fmt_pct(e["vulnerable_final_pct"], 3),
                    fmt_num(e["mean_steps"]),
                ]
            )
    if not lines:
        return None
    headers = [
        "configuration",
        "label",
        "images",
        "with >= 1 such region",
        "% vulnerable (initial, of all)",
        "% vulnerable (initial, of these)",
        "# not corrected",
        "% vulnerable (final, of all)",
        "mean steps",
    ]
    return Table("Images with detected regions (like Table 4)", headers, lines)


def privacy_table(rows: Sequence[Row]) -> Table:
    """Privacy, plain vs corrected side by side, a line per configuration: mean region
    PSNR and SSIM against the original, face re-detection (when the regions come from the
    face detector) and the correction's own size."""

    def redetect(r: Row) -> str:
        if r.get("faces_checked") is None:
            return "–"
        return (
            f"{fmt_pct(r.get('face_redetection_plain_pct'), 1)} / "
            f"{fmt_pct(r.get('face_redetection_corrected_pct'), 1)} of {r['faces_checked']}"
        )

    cols: list[Column] = [
        ("configuration", _config),
        ("images with regions", lambda r: str(r.get("images_with_regions", 0))),
        ("region PSNR mean (dB, plain / corrected)", lambda r: _pair(r, "psnr", "mean", 2)),
        ("region SSIM mean (plain / corrected)", lambda r: _pair(r, "ssim", "mean", 3)),
        ("faces found again (plain / corrected)", redetect),
        (
            "correction mean / max (0-255 levels)",
            lambda r: (
                f"{fmt_num(r.get('correction_mean_levels'))} / "
                f"{fmt_num(r.get('correction_max_levels'), 0)}"
            ),
        ),
    ]
    return column_table("Privacy: plain vs corrected", cols, rows)


def readability_table(rows: Sequence[Row]) -> Table | None:
    """Plate characters read by OCR, a line per configuration; None without plate
    ground truth."""
    lines = [
        [
            _config(r),
            str(r["plates_checked"]),
            str(r["plate_chars"]),
            fmt_pct(r.get("plate_chars_read_original_pct"), 1),
            fmt_pct(r.get("plate_chars_read_plain_pct"), 1),
            fmt_pct(r.get("plate_chars_read_corrected_pct"), 1),
        ]
        for r in rows
        if r.get("plates_checked") is not None
    ]
    if not lines:
        return None
    headers = ["configuration", "plates", "characters", "read: original", "plain", "corrected"]
    return Table("Plates: characters read by OCR", headers, lines)


READABILITY_NOTE = (
    "OCR (PP-OCRv4's recognizer, letters and digits) on each ground-truth plate box "
    "(plates.csv); a plate's characters read correctly are its true text's length minus "
    "the edit distance to what was read (at least 0), summed over plates, as a share of "
    "all true characters."
)


def identity_table(rows: Sequence[Row]) -> Table | None:
    """Can the faces be recognized? A line per configuration with face identity measures:
    rank-1 identification and verification at 0.6, plain / corrected, without and with
    the inversion attack, the chance level and the attack. None when no face was
    measured."""
    measured = [r for r in rows if r.get("identity_faces")]
    if not measured:
        return None

    def pair(r: Row, key: str, attacked: bool) -> str:
        tail = "_attacked" if attacked else ""
        return (
            f"{fmt_pct(r.get(f'identity_{key}_plain{tail}_pct'), 1)} / "
            f"{fmt_pct(r.get(f'identity_{key}_corrected{tail}_pct'), 1)}"
        )

    cols: list[Column] = [
        ("configuration", _config),
        ("faces", lambda r: str(r["identity_faces"])),
        ("rank-1 % (plain / corrected)", lambda r: pair(r, "rank1", False)),
        ("verify@0.6 % (plain / corrected)", lambda r: pair(r, "verify", False)),
        ("rank-1 % after attack", lambda r: pair(r, "rank1", True)),
        ("verify@0.6 % after attack", lambda r: pair(r, "verify", True)),
        (
            "chance %",
            lambda r: f"{fmt_pct(r.get('identity_chance_pct'), 1)} (1 of {r['identity_gallery']})",
        ),
        ("attack", lambda r: str(r.get("identity_attack") or "–")),
    ]
    return column_table("Face identity: recognized among the originals", cols, measured)


IDENTITY_NOTE = (
    "dlib's face descriptor (5-point landmarks located on the original). Rank-1: the "
    "anonymized face's nearest descriptor among the originals of every face of the run "
    "(and --gallery) is its own; verify@0.6: within dlib's same-person distance of its own "
    "original. After attack: the same after the inversion attack that knows the filter "
    "(least squares through the known blur, bicubic upsampling of mosaic cells). Chance: "
    "1 / gallery size."
)


def concordance_table(rows: Sequence[Row]) -> Table:
    """Class concordance (CEC 2024's measure), queries and time, a line per configuration,
    with plain vs corrected region PSNR and SSIM beside them."""
    cols: list[Column] = [
        ("configuration", _config),
        ("concordance, all images", lambda r: fmt_pct(r.get("concordance_pct"), 2)),
        ("concordance, vulnerable", lambda r: fmt_pct(r.get("concordance_vulnerable_pct"), 2)),
        (
            "queries per corrected image (mean / median)",
            lambda r: (
                f"{fmt_num(r.get('queries_mean'), 0)} / {fmt_num(r.get('queries_median'), 0)}"
            ),
        ),
        ("queries per image (mean)", lambda r: fmt_num(r.get("queries_mean_all"), 1)),
        ("s / image", lambda r: fmt_num(r.get("seconds_per_image"), 3)),
        ("region PSNR mean (dB, plain / corrected)", lambda r: _pair(r, "psnr", "mean", 2)),
        ("region SSIM mean (plain / corrected)", lambda r: _pair(r, "ssim", "mean", 3)),
    ]
    return column_table("Class concordance and queries", cols, rows)


CONCORDANCE_NOTE = (
    "Concordance (Shvai et al., CEC 2024): the share of images whose stored file has the "
    "original's class, failed images included; vulnerable: those whose class the plain "
    "anonymization changed. Queries (--black-box runs): classifier queries of the "
    "correction, the check of the plainly anonymized file included."
)


PRIVACY_NOTE = (
    "Region PSNR and SSIM: each region against the original (lower is more anonymized). "
    "Faces found again: of the faces the face detector found in the originals, the share "
    "it still finds (same threshold, IoU >= 0.5) after plain anonymization and in the "
    "corrected images. Correction: mean (over corrected images) and largest absolute "
    "change inside the regions between the plainly anonymized and the final pixels."
)

TABLE4_NOTE = (
    "Images with at least one region of each label; % vulnerable (initial) counts those "
    "whose class changed after plain anonymization, in percent of all evaluated images "
    "(as the paper's Table 4) and of the images with such a region; mean steps over "
    "corrected images with such a region."
)


STRENGTH_NOTE = (
    "Strength compares each region with the original: SSIM (11x11 Gaussian window) and "
    "detail (share of the original's Laplacian energy left) at a normalised resolution, "
    "PSNR at full resolution; higher is less anonymized, worst is the highest over all "
    "regions. A weak image has a written region above --max-region-ssim or "
    "--max-region-detail; it is not counted as done."
)


def settings_line(rows: Sequence[Row]) -> str:
    """The settings shared by all configurations, in one line."""
    if not rows:
        return ""
    keys = ("regions", "shape", "criterion", "max_steps", "format")
    parts = []
    for key in keys:
        values = _unique([str(r.get(key)) for r in rows])
        parts.append(f"{key}: {', '.join(values)}")
    filters = _unique([str(r.get("filter_settings")) for r in rows])
    parts.append(f"filters: {', '.join(filters)}")
    return "; ".join(parts)


def markdown_report(rows: Sequence[Row]) -> str:
    """``results.md``: the alpha-sweep tables, then the across-models tables."""
    parts = ["# adaptanon evaluation", "", settings_line(rows), ""]
    parts += ["## Sensitivity to the step size (like Table 1)", ""]
    for t in alpha_tables(rows):
        parts += [t.markdown(), ""]
    parts += ["## Across models (like Tables 2 and 3)", ""]
    for t in model_tables(rows):
        parts += [t.markdown(), ""]
    parts += [
        "Percentages of vulnerable images are of all evaluated images; % not corrected is "
        "of the images whose class changed after anonymization; mean steps and the steps "
        "histogram are over corrected images. PSNR is between original and anonymized "
        "pixels inside the region (lower: more anonymized). Unreadable images are counted "
        "as errors only.",
        "",
        "## Anonymization strength (privacy floor)",
        "",
        strength_table(rows).markdown(),
        "",
        STRENGTH_NOTE,
        "",
    ]
    table4 = detector_table(rows)
    if table4 is not None:
        parts += ["## Detected regions (like Table 4)", "", table4.markdown(), "", TABLE4_NOTE, ""]
    parts += ["## Privacy", "", privacy_table(rows).markdown(), "", PRIVACY_NOTE, ""]
    plates = readability_table(rows)
    if plates is not None:
        parts += ["## Plates: readability", "", plates.markdown(), "", READABILITY_NOTE, ""]

    ident = identity_table(rows)
    if ident is not None:
        parts += ["## Face identity", "", ident.markdown(), "", IDENTITY_NOTE, ""]
    parts += ["## Class concordance and queries (like CEC 2024)", ""]
    parts += [concordance_table(rows).markdown(), "", CONCORDANCE_NOTE, ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- figures


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _caption(name: str | None, confidence: float | None) -> str:
    conf = "" if confidence is None else f" ({confidence:.0%})"
    return f"{name if name is not None else '?'}{conf}"


def examples_figure(title: str, examples: Sequence[Example]) -> Figure:
    """Like the paper's Fig. 3: per example, original / plainly anonymized / corrected,
    with class names and confidences and the anonymized region outlined in red."""
    fig = Figure(figsize=(10.5, 3.3 * len(examples) + 0.5), layout="constrained")
    axes = fig.subplots(len(examples), 3, squeeze=False)
    for ax_row, ex in zip(axes, examples, strict=True):
        r = ex.row
        done = "corrected" if r.status == "corrected" else f"{r.status}"
        panels = [
            (ex.original, f"original: {_caption(r.original_name, r.original_confidence)}"),
            (
                ex.anonymized,
                f"anonymized: {_caption(r.anonymized_name, r.anonymized_confidence)}",
            ),
            (ex.final, f"{done}, {r.steps} steps: {_caption(r.final_name, r.final_confidence)}"),
        ]
        for ax, (img, text) in zip(ax_row, panels, strict=True):
            ax.imshow(img)
            if ex.mask.any() and not ex.mask.all():
                ax.contour(ex.mask.astype(float), levels=[0.5], colors="red", linewidths=1.2)
            ax.set_title(text, fontsize=9)
            ax.set_axis_off()
        ax_row[0].text(
            0, -0.02, r.name, transform=ax_row[0].transAxes, fontsize=7, va="top", color="0.3"
        )
    fig.suptitle(title, fontsize=11)
    return fig


def histogram_figure(rows: Sequence[Row]) -> Figure | None:
    """Grouped bars: corrected images by number of steps, one colour per configuration.
    None when no image needed correction."""
    shown = [r for r in rows if r["steps_histogram"]]
    if not shown:
        return None
    present = sorted({int(k) for r in shown for k in r["steps_histogram"]})
    # Contiguous axis when short (gaps are informative), else only the counts present.
    steps = list(range(present[0], present[-1] + 1)) if present[-1] - present[0] < 30 else present
    fig = Figure(figsize=(max(6.0, 0.5 * len(steps) * len(shown) + 2), 3.6))
    ax = fig.subplots()
    width = 0.8 / len(shown)
    for j, r in enumerate(shown):
        hist = {int(k): v for k, v in r["steps_histogram"].items()}
        xs = [i + (j - (len(shown) - 1) / 2) * width for i in range(len(steps))]
        label = f"{r['model']} / {r['filter']} / α={r['alpha']:g}"
        ax.bar(xs, [hist.get(s, 0) for s in steps], width, label=label)
    ax.set_xticks(range(len(steps)), [str(s) for s in steps])
    ax.set_xlabel("correction steps")
    ax.set_ylabel("corrected images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Steps needed by corrected images")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def alpha_figure(rows: Sequence[Row]) -> Figure:
    """% vulnerable images (final, solid; initial, dashed) and mean steps vs step size, a
    line per (model, filter)."""
    fig = Figure(figsize=(10, 3.8))
    ax_v, ax_s = fig.subplots(1, 2)
    alphas = [r["alpha"] for r in rows]
    for model, filt in _unique([(r["model"], r["filter"]) for r in rows]):
        group = sorted(
            (r for r in rows if r["model"] == model and r["filter"] == filt),
            key=lambda r: r["alpha"],
        )
        xs = [r["alpha"] for r in group]
        (line,) = ax_v.plot(
            xs, [r["vulnerable_final_pct"] or 0.0 for r in group], "o-", label=f"{model}, {filt}"
        )
        ax_v.plot(
            xs,
            [r["vulnerable_initial_pct"] or 0.0 for r in group],
            "--",
            color=line.get_color(),
            alpha=0.6,
        )
        ax_s.plot(
            xs,
            [r["mean_steps"] if r["mean_steps"] is not None else float("nan") for r in group],
            "o-",
            label=f"{model}, {filt}",
        )
    for ax in (ax_v, ax_s):
        if alphas and min(alphas) > 0 and max(alphas) / min(alphas) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel("step size α")
        ax.grid(alpha=0.3)
    ax_v.set_ylabel("% vulnerable images")
    ax_v.set_title("Vulnerable: final (solid), initial (dashed)")
    ax_s.set_ylabel("mean steps (corrected images)")
    ax_s.set_title("Mean correction steps")
    ax_v.legend(fontsize=7)
    return fig


def pick_examples(
    figures: Sequence[tuple[Config, Sequence[Example]]], limit: int
) -> list[tuple[str, list[Example]]]:
    """One example set per (model, filter): the first configuration (in sweep order) that
    has examples, at most ``limit`` of them."""
    chosen: dict[tuple[str, str], tuple[str, list[Example]]] = {}
    for config, examples in figures:
        pair = (config.model, config.filter)
        if examples and pair not in chosen and limit > 0:
            chosen[pair] = (config.label, list(examples[:limit]))
    return list(chosen.values())


# --------------------------------------------------------------------------- html

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
td { white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.getElementsByTagName("img"), n = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].naturalWidth > 0) n++; }
  document.body.setAttribute("data-images-loaded", String(n));
  document.body.setAttribute("data-images-total", String(imgs.length));
});
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


def html_report(rows: Sequence[Row], examples: Sequence[tuple[str, Sequence[Example]]]) -> str:
    """The whole ``report.html`` as a string (self-contained).

    A small inline script writes, on window load, the number of ``<img>`` elements that
    decoded (``naturalWidth > 0``) into ``body[data-images-loaded]``.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>adaptanon evaluation</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script>",
        '</head><body data-images-loaded="0">',
        "<h1>adaptanon evaluation</h1>",
        f'<p class="note">{html.escape(settings_line(rows))}</p>',
        "<h2>Sensitivity to the step size (like Table 1)</h2>",
    ]
    parts += [t.html() for t in alpha_tables(rows)]
    parts.append("<h2>Across models (like Tables 2 and 3)</h2>")
    parts += [t.html() for t in model_tables(rows)]
    parts.append(
        '<p class="note">% vulnerable: of all evaluated images; % not corrected: of the '
        "images whose class changed after anonymization; steps: over corrected images; "
        "PSNR: original vs anonymized pixels inside the region.</p>"
    )
    parts.append("<h2>Anonymization strength (privacy floor)</h2>")
    parts.append(strength_table(rows).html())
    parts.append(f'<p class="note">{html.escape(STRENGTH_NOTE)}</p>')
    table4 = detector_table(rows)
    if table4 is not None:
        parts.append("<h2>Detected regions (like Table 4)</h2>")
        parts.append(table4.html())
        parts.append(f'<p class="note">{html.escape(TABLE4_NOTE)}</p>')
    parts.append("<h2>Privacy</h2>")
    parts.append(privacy_table(rows).html())
    parts.append(f'<p class="note">{html.escape(PRIVACY_NOTE)}</p>')
    plates = readability_table(rows)
    if plates is not None:
        parts.append("<h2>Plates: readability</h2>")
        parts.append(plates.html())
        parts.append(f'<p class="note">{html.escape(READABILITY_NOTE)}</p>')

    ident = identity_table(rows)
    if ident is not None:
        parts.append("<h2>Face identity</h2>")
        parts.append(ident.html())
        parts.append(f'<p class="note">{html.escape(IDENTITY_NOTE)}</p>')
    parts.append("<h2>Class concordance and queries (like CEC 2024)</h2>")
    parts.append(concordance_table(rows).html())
    parts.append(f'<p class="note">{html.escape(CONCORDANCE_NOTE)}</p>')
    parts.append("<h2>Examples (like Figure 3)</h2>")
    if examples:
        for title, exs in examples:
            parts.append(_img(png_bytes(examples_figure(title, exs)), f"examples, {title}"))
    else:
        parts.append('<p class="note">No image changed class after anonymization.</p>')
    parts.append("<h2>Correction steps</h2>")
    hist = histogram_figure(rows)
    if hist is None:
        parts.append('<p class="note">No image needed correction.</p>')
    else:
        parts.append(_img(png_bytes(hist), "histogram of correction steps"))
    parts.append("<h2>Step size sweep</h2>")
    if rows:
        parts.append(_img(png_bytes(alpha_figure(rows)), "vulnerable images and steps vs alpha"))
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- files


def results_json(rows: Sequence[Row]) -> str:
    """``results.json``: the list of results rows."""
    return json.dumps(list(rows), indent=2, default=str) + "\n"


def results_csv(rows: Sequence[Row]) -> str:
    """``results.csv``: a line per configuration, columns :data:`CSV_COLUMNS`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([csv_value(r.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_reports(
    out_dir: Path,
    rows: Sequence[Row],
    figures: Sequence[tuple[Config, Sequence[Example]]] = (),
    examples: int = 4,
) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``results.md`` and ``report.html``;
    returns their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "md": out_dir / "results.md",
        "html": out_dir / "report.html",
    }
    atomic_write(paths["json"], results_json(rows))
    atomic_write(paths["csv"], results_csv(rows))
    atomic_write(paths["md"], markdown_report(rows))
    atomic_write(paths["html"], html_report(rows, pick_examples(figures, examples)))
    return paths
