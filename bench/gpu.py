"""`adaptanon anonymize` end to end on one device (files in, verified PNG files out), the
model stage alone against its own bound, and the one-image loop, all in one run.

What it does:
1. Expands a few hundred photos (``--photos``, default the shared ImageNet sample, else
   scikit-image's photos) into ``--n`` inputs under ``--work`` (hard links, else copies).
2. Runs ``python -m adaptanon anonymize IN -o OUT --device D --regions saliency --format
   png`` with ``--filter blur`` and ``--filter mask``. Model load, process start and
   warm-up are excluded by difference: each filter also runs on the first ``--n-small``
   inputs, and img/s = (n - n_small) / (seconds(n) - seconds(n_small)).
3. In this process, on ``--model-n`` decoded photos on the device: the model stage alone
   (classify + saliency, anonymize, the solver: what the device does) against its bound,
   two forward passes plus one forward/backward per image in plain batches (inputs
   preprocessed beforehand), and the same method one image at a time (``--loop-n``).
4. Checks ``--check`` written files of each run with an independent CPU loader (Pillow
   ``resize`` shorter side 256 bilinear, centre crop 224, the model on the CPU in fp32):
   the written file's class must be the original file's; prints the number that changed.

Prints one JSON line; writes its section of docs/results.md (``gpu-<device type>``).

Usage:
  python bench/gpu.py --device cuda                      # >= 5,000 inputs, batch 256
  OMP_NUM_THREADS=1 python bench/gpu.py --device cpu --n 200 --threads 2

On a machine with a GPU (torch with CUDA, numpy, pillow, opencv, onnxruntime,
scikit-image installed) nothing needs the network: ``bench/gpu_prepare.sh`` downloads the
pure dependencies as wheels into ``.whl/`` and copies 300 photos into ``.gpu_photos/``
here, and ``bench/gpu_check.sh`` runs there as one command (install the wheels, ``pytest
--device cuda`` on the engine's tests, then this script over 5,000 inputs), with its logs
and the docs section in ``$OUT``. With the device tool: ``run(command="bash
bench/gpu_check.sh", carry=[".whl", ".gpu_photos"], timeout_s=600)``; should it run out of
time, ``bash bench/gpu_check.sh cuda 2000``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from docs_section import update_section  # noqa: E402
from PIL import Image  # noqa: E402
from throughput import sync, time_bound, time_pipeline  # noqa: E402

from adaptanon.classifiers import TorchClassifier, efficientnet_lite  # noqa: E402
from adaptanon.classifiers.efficientnet_lite import (  # noqa: E402
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    lite_network,
)
from adaptanon.classifiers.precision import model_call  # noqa: E402
from adaptanon.engines import resolve_device, reuse_freed_memory  # noqa: E402
from adaptanon.io import collect_inputs, read_image, to_image  # noqa: E402
from adaptanon.method import Blur, Mask, Settings  # noqa: E402
from adaptanon.method.filters import Filter, anonymize  # noqa: E402
from adaptanon.method.pipeline import classify_originals  # noqa: E402
from adaptanon.regions import RegionQuery, SaliencyBox  # noqa: E402

SHARED = Path("/work/shared/data/imagenet-sample")
FILTERS: dict[str, Filter] = {"blur": Blur(), "mask": Mask()}


def photo_folder(given: str | None) -> Path:
    """The photos to expand: ``--photos``, the shared sample, or scikit-image's photos."""
    if given:
        return Path(given)
    if SHARED.is_dir():
        return SHARED
    from adaptanon.cli.demo import demo_photo_paths

    return demo_photo_paths()[0].parent


def expand(photos: list[Path], n: int, folder: Path) -> None:
    """``n`` inputs in ``folder``: the photos over and over, hard-linked (else copied)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for k in range(n):
        src = photos[k % len(photos)]
        dst = folder / f"{k // 1000:02d}" / f"{k:05d}_{src.name}"
        dst.parent.mkdir(exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def anonymize_cli(
    inputs: Path, out: Path, args: argparse.Namespace, filt: str
) -> tuple[float, list[dict]]:
    """Seconds of ``python -m adaptanon anonymize`` (start to exit) and its records."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "adaptanon", "anonymize", str(inputs), "-o", str(out)]
    cmd += ["--device", args.device, "--regions", "saliency", "--filter", filt, "--format"]
    cmd += ["png", "--batch-size", str(args.batch_size), "--batch-pixels", "1000", "-q"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), *sys.path[1:]]))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return seconds, [json.loads(line) for line in lines]


def model_stage(
    clf: TorchClassifier, images: list[torch.Tensor], batch: int, filt: Filter
) -> tuple[float, int]:
    """Seconds for what the device does per batch (classify with saliency, find the box,
    anonymize, correct) and the images corrected (steps > 0)."""
    settings, source = Settings(filter=filt), SaliencyBox(50)
    corrected = 0
    sync(clf.device)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        part = images[i : i + batch]
        logits, saliency, inputs = classify_originals(clf, part, True)
        assert saliency is not None
        geometries = [clf.geometry(x.shape[-2], x.shape[-1]) for x in part]
        queries = [
            RegionQuery(f"{i + j}", x, g, saliency[j])
            for j, (x, g) in enumerate(zip(part, geometries, strict=True))
        ]
        anon, masks = [], []
        for x, g, regions in zip(part, geometries, source.find(queries), strict=True):
            a, m = anonymize(x, regions.boxes, filt, g.scale if g else 1.0)
            anon.append(a)
            masks.append(m)
        result = settings.solver(
            clf,
            anon,
            masks,
            logits.argmax(1),
            criterion=settings.criterion,
            reference=torch.softmax(logits, 1),
            codec=settings.codec,
            bases=list(inputs),
        )
        corrected += int((result.steps > 0).sum())
    sync(clf.device)
    return time.perf_counter() - start, corrected


def cpu_loader_classes(model: torch.nn.Module, paths: list[Path]) -> list[int]:
    """Classes an independent CPU loader gives files: Pillow bilinear resize of the
    shorter side to 256 (torchvision's floor), centre crop 224, Lite0's normalisation."""
    mean = np.array(EFFICIENTNET_LITE_MEAN, np.float32)
    std = np.array(EFFICIENTNET_LITE_STD, np.float32)
    out = []
    for k in range(0, len(paths), 32):
        rows = []
        for path in paths[k : k + 32]:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
                im = im.resize(size, Image.Resampling.BILINEAR)
                left, top = round((size[0] - 224) / 2.0), round((size[1] - 224) / 2.0)
                im = im.crop((left, top, left + 224, top + 224))
                x = (np.asarray(im, np.float32) / 255.0 - mean) / std
            rows.append(torch.from_numpy(x.transpose(2, 0, 1).copy()))
        with torch.no_grad():
            out += model(torch.stack(rows)).argmax(1).tolist()
    return out


def class_changes(
    model: torch.nn.Module, root: Path, records: list[dict], check: int
) -> tuple[int, int]:
    """``(changed, checked)`` over the first ``check`` written, passed files of inputs
    under ``root``."""
    done = [r for r in records if r["status"] in ("unchanged", "corrected", "no_regions")]
    done = done[:check]
    before = cpu_loader_classes(model, [root / r["input"] for r in done])
    after = cpu_loader_classes(model, [Path(r["output"]) for r in done])
    return sum(a != b for a, b in zip(before, after, strict=True)), len(done)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--photos", default=None, help="folder of photos to expand")
    parser.add_argument("--distinct", type=int, default=300, help="distinct photos used")
    parser.add_argument("--n", type=int, default=5000, help="inputs per end-to-end run")
    parser.add_argument("--n-small", type=int, default=None, help="default: n // 10")
    parser.add_argument("--batch-size", type=int, default=None, help="256 on CUDA, 8 on CPU")
    parser.add_argument("--model-n", type=int, default=None, help="1024 on CUDA, 48 on CPU")
    parser.add_argument("--loop-n", type=int, default=None, help="100 on CUDA, 12 on CPU")
    parser.add_argument("--check", type=int, default=300, help="files checked per run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--work", default="/tmp/adaptanon-bench-gpu")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (256 if cuda else 8)
    model_n = args.model_n or (1024 if cuda else 48)
    loop_n = args.loop_n or (100 if cuda else 12)
    n_small = args.n_small or max(1, args.n // 10)
    if args.threads:
        torch.set_num_threads(args.threads)
    reuse_freed_memory()  # the model stage and its bound run as in the command's process
    folder = photo_folder(args.photos)
    photos = [item.path for item in collect_inputs([str(folder)])][: args.distinct]
    work = Path(args.work)
    expand(photos, args.n, work / "in")
    expand(photos, n_small, work / "in-small")

    row: dict = {
        "device": torch.cuda.get_device_name(device) if cuda else platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "photos": min(len(photos), args.n),
        "load_before": round(os.getloadavg()[0], 1),
        "n": args.n,
        "n_small": n_small,
        "batch_size": args.batch_size,
    }
    clf = efficientnet_lite("efficientnet_lite0").to(device)
    cpu_model = lite_network("efficientnet_lite0")
    for name in FILTERS:
        big, records = anonymize_cli(work / "in", work / f"out-{name}", args, name)
        small, _ = anonymize_cli(work / "in-small", work / f"out-{name}-small", args, name)
        statuses: dict[str, int] = {}
        for r in records:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        changed, checked = class_changes(cpu_model, work / "in", records, args.check)
        row[f"{name}_seconds"] = round(big, 2)
        row[f"{name}_small_seconds"] = round(small, 2)
        row[f"{name}_img_s"] = (args.n - n_small) / max(big - small, 1e-9)
        row[f"{name}_with_load_img_s"] = args.n / big
        row[f"{name}_statuses"] = statuses
        row[f"{name}_class_changes"] = f"{changed}/{checked}"

    images = [to_image(read_image(p), device) for p in photos[:model_n]]
    images = (images * (model_n // max(1, len(images)) + 1))[:model_n]
    with torch.no_grad():
        inputs = torch.cat([clf.inputs(images[i : i + 64]) for i in range(0, len(images), 64)])
    if cuda:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    # The bound as a plain implementation runs it: tuned cuDNN, torch's default TF32.
    with model_call():
        time_bound(clf.model, inputs[: args.batch_size], args.batch_size, device)  # warm-up
        bound = time_bound(clf.model, inputs, args.batch_size, device)
    model_stage(clf, images[: args.batch_size], args.batch_size, Blur())  # warm-up
    row["bound_img_s"] = model_n / bound
    names = [f"{k}" for k in range(len(images))]
    for name, filt in FILTERS.items():
        seconds, corrected = model_stage(clf, images, args.batch_size, filt)
        row[f"model_stage_{name}_img_s"] = model_n / seconds
        row[f"model_stage_{name}_corrected"] = corrected
        row[f"model_stage_{name}_over_bound"] = (
            row[f"model_stage_{name}_img_s"] / row["bound_img_s"]
        )
        loop, _ = time_pipeline(clf, images[:loop_n], names[:loop_n], 1, device)
        row[f"loop_{name}_img_s"] = loop_n / loop
        row[f"{name}_over_loop"] = row[f"{name}_img_s"] / row[f"loop_{name}_img_s"]
    row["model_n"], row["loop_n"] = model_n, loop_n
    row["load_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    if not args.no_docs:
        write_docs(row, args, device)


def write_docs(row: dict, args: argparse.Namespace, device: torch.device) -> None:
    """The ``gpu-<device type>`` section of docs/results.md."""
    omp = os.environ.get("OMP_NUM_THREADS")
    command = (
        ("`" if omp is None else f"`OMP_NUM_THREADS={omp} ")
        + f"python bench/gpu.py --device {args.device} --n {args.n}"
        + (f" --threads {args.threads}`" if args.threads else "`")
    )
    table = (
        "| filter | end to end img/s (load excluded) | with load | model stage img/s | "
        "bound img/s | stage/bound | one-image loop img/s | end to end/loop | "
        "class changes (CPU loader) | statuses |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for name in FILTERS:
        table += (
            f"| {name} | {row[f'{name}_img_s']:.1f} | {row[f'{name}_with_load_img_s']:.1f} | "
            f"{row[f'model_stage_{name}_img_s']:.1f} | {row['bound_img_s']:.1f} | "
            f"{row[f'model_stage_{name}_over_bound']:.2f}x | {row[f'loop_{name}_img_s']:.1f} | "
            f"{row[f'{name}_over_loop']:.1f}x | {row[f'{name}_class_changes']} | "
            f"{row[f'{name}_statuses']} |\n"
        )
    machine = f"{row['device']}, {row['cpu_cores']} cores" + (
        ""
        if device.type == "cuda"
        else f", shared with other jobs (load average {row['load_before']} before, "
        f"{row['load_after']} after)"
    )
    text = (
        f"Measured {time.strftime('%Y-%m-%d')} by {command} on {machine}, torch {row['torch']}: "
        f"EfficientNet-Lite0, saliency box, PNG, {row['n']} inputs ({row['photos']} distinct "
        f"ImageNet-size photos), batch {row['batch_size']}. End to end is `adaptanon anonymize` "
        f"files in, verified files out, model load excluded by difference with a run of "
        f"{row['n_small']} inputs. The model stage ({row['model_n']} decoded photos on the "
        "device: classify with saliency, anonymize, correct) is compared with its bound (two "
        "forward passes and one forward/backward per image, plain batches, tuned cuDNN) and the "
        f"one-image loop ({row['loop_n']} photos) in the same run. The stage classifies an "
        "original and finds its saliency box in one forward/backward, so an image that "
        "passes at step 0 costs one forward less than the bound counts.\n\n"
        f"{table}"
    )
    update_section(f"gpu-{device.type}", f"bench/gpu.py ({device.type})", text.rstrip())


if __name__ == "__main__":
    main()
