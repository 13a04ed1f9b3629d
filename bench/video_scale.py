"""Videos at scale (issue 23): memory bounded by the segment, not the clip; speed against
deface; decisions, audio and timing kept; a killed run resumed.

Runs whatever ``adaptanon anonymize`` the repository under test has (``python -m
adaptanon`` with ``PYTHONPATH=src`` of this checkout, or ``--adaptanon CMD``) as a
subprocess under ``/usr/bin/time -v``, so it measures the video engine that is there.
Clips are generated frame by frame (never all in memory) and written with PyAV:
scikit-image's astronaut panned and zoomed over the coffee photo (periodically, so a
longer clip is the same content, longer), the lower part of the face covered for 4
frames in every period, a 440 Hz AAC tone. Clip kinds: ``plain``; ``vfr`` (frame
durations 1/60, 1/30, 1/20, 1/30 s in turn); ``rotated`` (a phone clip: display matrix
-90 degrees, what phones write for portrait, ``VideoStream.set_display_rotation``);
``10bit`` (libx265 yuv420p10le, Main 10); ``noaudio``.

Targets checked (a table; ``--write-docs`` puts it in docs/results.md):

- peak RSS of a 120 s 640x360 clip <= 1.25x that of a 20 s clip (same content);
- a 60 s 1080p clip <= 3 GB peak RSS with default options;
- frames/s >= 1.0x deface's on the same 1080p clip, in the same run;
- audio packets identical (payload and time), frame count and time stamps identical;
- 0 frames whose class changed, decoded by PyAV and classified by the published
  EfficientNet-Lite with a plain PIL loader (bench/imagenet_sample.py's), against the
  input's frames;
- 0 frames where the face is visible (outside the manifest's regions of that frame);
- killed at half of an uninterrupted run's wall time and rerun: per-frame decisions as the
  uninterrupted run's, total CPU seconds (both runs) / uninterrupted <= 1.6x.

Peak RSS is ``/usr/bin/time -v``'s "Maximum resident set size": the largest single
process among the command and its children (not their sum). The bench also samples the
sum of RSS over the whole process tree every 0.1 s from /proc (shared pages counted once
per process, so an upper bound), reported as "tree RSS".

Baselines measured in the same run on the same clip: PyAV decode + libx264 encode (CRF
23, medium) alone, streaming; CenterFace alone on every frame
(``parse_region_source("faces")``), streaming; deface 1.5.0 with its default options
(``deface CLIP -o OUT.mp4``: no audio kept, blur, CenterFace via onnxruntime) -- its own
virtualenv, made once with:

    python3 -m venv /tmp/deface-venv && /tmp/deface-venv/bin/pip install deface==1.5.0

adaptanon runs with its defaults except ``--regions faces`` (the default regions are
saliency; faces are what deface anonymizes and what the visibility check needs).

Usage: python bench/video_scale.py [--deface /tmp/deface-venv/bin/deface] [--quick]
       [--sizes 1080] [--seconds 60] [--scale-seconds 20,120] [--kinds vfr,rotated,...]
       [--write-docs]
       python bench/video_scale.py --make DIR [--sizes 360] [--seconds 3]  (clips only)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import torch
from docs_section import update_section
from imagenet_sample import plain_pil_tensor
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parent.parent
HEADING = "Videos at scale: bounded memory, speed against deface, resume (issue 23)"
SIZES = {360: (640, 360), 720: (1280, 720), 1080: (1920, 1080), 2160: (3840, 2160)}
KINDS = ("plain", "vfr", "rotated", "10bit", "noaudio")
PERIOD = 8.0
"""Seconds of one pan-and-zoom cycle: a longer clip repeats the same content."""
VFR_TICKS = (2, 4, 6, 4)
"""Frame durations of a ``vfr`` clip in 1/120 s (60, 30, 20, 30 fps; 30 fps average)."""
SAMPLE_RATE = 48000


# --- clips ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What clip to make: ``height`` (a key of :data:`SIZES`), ``seconds``, ``fps`` and
    ``kind`` (one of :data:`KINDS`)."""

    height: int
    seconds: float
    kind: str = "plain"
    fps: int = 30

    @property
    def size(self) -> tuple[int, int]:
        return SIZES[self.height]

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.height}p-{self.seconds:g}s.mp4"

    @property
    def time_base(self) -> Fraction:
        return Fraction(1, 120) if self.kind == "vfr" else Fraction(1, self.fps)

    def stamps(self) -> list[int]:
        """Each frame's pts in :attr:`time_base` units."""
        end = round(self.seconds / self.time_base)
        if self.kind != "vfr":
            return list(range(end))
        out, t = [], 0
        while t < end:
            out.append(t)
            t += VFR_TICKS[len(out) % len(VFR_TICKS)]
        return out


@cache
def face_box() -> tuple[float, float, float, float]:
    """The astronaut's face in the 512x512 photo as CenterFace finds it."""
    from adaptanon.io.codecs import to_image
    from adaptanon.regions import DetectorOptions, RegionQuery, parse_region_source

    source = parse_region_source("faces", DetectorOptions(box_scale=1.0))
    (found,) = source.find([RegionQuery("astronaut", to_image(data.astronaut()))])
    best = max(found.detections, key=lambda d: d.score)
    return tuple(float(v) for v in best.box)  # type: ignore[return-value]


def placement(spec: Spec, seconds: float) -> tuple[int, int, float, bool]:
    """Where the photo lies at ``seconds``: left, top, scale, and whether the lower part
    of the face is covered (4 frames from the middle of each period)."""
    width, height = spec.size
    phase = (seconds % PERIOD) / PERIOD
    u = 1 - abs(2 * phase - 1)  # there and back
    zoom = height / 512 * (0.9 + 0.3 * u)
    size = round(512 * zoom)
    x = round(0.05 * width + u * (width - size - 0.1 * width))
    covered = 0 <= seconds % PERIOD - PERIOD / 2 < 4 / spec.fps
    return x, round((height - size) / 2), zoom, covered


def full_box(spec: Spec, seconds: float) -> tuple[int, int, int, int]:
    """The whole face box at ``seconds``, covered or not."""
    x, y, zoom, _ = placement(spec, seconds)
    x0, y0, x1, y1 = (round(v * zoom) for v in face_box())
    return (x0 + x, y0 + y, x1 + x, y1 + y)


def visible_box(spec: Spec, seconds: float) -> tuple[int, int, int, int]:
    """The visible part of the face box at ``seconds`` (what must be anonymized)."""
    box = full_box(spec, seconds)
    if placement(spec, seconds)[3]:
        box = (box[0], box[1], box[2], box[1] + round(0.3 * (box[3] - box[1])))
    return box


def frames(spec: Spec) -> Iterator[tuple[int, np.ndarray]]:
    """``(pts, RGB frame)``, made one at a time."""
    width, height = spec.size
    photo = Image.fromarray(data.astronaut())
    background = np.asarray(Image.fromarray(data.coffee()).resize((width, height)))
    for pts in spec.stamps():
        seconds = float(pts * spec.time_base)
        x, y, zoom, covered = placement(spec, seconds)
        size = round(512 * zoom)
        frame = background.copy()
        pasted = np.asarray(photo.resize((size, size), Image.BILINEAR))
        top, left = max(0, y), max(0, x)
        frame[top : top + size, left : left + size] = pasted[
            top - y : top - y + height, : width - left
        ]
        if covered:
            box, full = visible_box(spec, seconds), full_box(spec, seconds)
            frame[box[3] : full[3], box[0] : box[2]] = 128
        yield pts, frame


def make_clip(path: Path, spec: Spec) -> Path:
    """Write ``spec``'s clip to ``path`` (MP4: H.264 CRF 18, or H.265 Main 10; AAC mono
    440 Hz unless ``noaudio``), streaming: video and audio interleaved as made."""
    width, height = spec.size
    ten = spec.kind == "10bit"
    with av.open(str(path), "w") as out:
        if ten:
            video = out.add_stream(
                "libx265", rate=spec.fps, options={"crf": "18", "x265-params": "log-level=none"}
            )
            video.pix_fmt = "yuv420p10le"
        else:
            video = out.add_stream("libx264", rate=spec.fps, options={"crf": "18"})
            video.pix_fmt = "yuv420p"
        video.width, video.height = width, height
        video.time_base = video.codec_context.time_base = spec.time_base
        if spec.kind == "rotated":
            video.set_display_rotation(-90)
        audio = None if spec.kind == "noaudio" else out.add_stream("aac", rate=SAMPLE_RATE)
        sample = 0
        total = int(spec.seconds * SAMPLE_RATE)

        def audio_until(seconds: float) -> None:
            nonlocal sample
            while audio is not None and sample < min(total, seconds * SAMPLE_RATE):
                n = min(1024, total - sample)
                t = (sample + np.arange(n)) / SAMPLE_RATE
                wave = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
                chunk = av.AudioFrame.from_ndarray(wave, format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, sample
                out.mux(audio.encode(chunk))
                sample += n

        for pts, pixels in frames(spec):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if ten:
                frame = frame.reformat(format="yuv420p10le")
            frame.pts, frame.time_base = pts, spec.time_base
            out.mux(video.encode(frame))
            audio_until(float(pts * spec.time_base) + 0.5)
        out.mux(video.encode(None))
        audio_until(spec.seconds)
        if audio is not None:
            out.mux(audio.encode(None))
    return path


def probe(path: Path) -> dict:
    """What a clip holds, read back by PyAV: frames, pixel format, profile, rotation of
    the first frame, frame durations (seconds, distinct), the audio stream."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        pts, rotation, fmt = [], None, None
        for frame in c.decode(stream):
            if rotation is None:
                rotation, fmt = frame.rotation, frame.format.name
            pts.append(frame.pts)
        tb = stream.time_base
        durations = sorted(
            {round(float((b - a) * tb), 4) for a, b in zip(pts, pts[1:], strict=False)}
        )
        audio = c.streams.audio[0] if c.streams.audio else None
        return {
            "file": path.name,
            "size": f"{stream.codec_context.width}x{stream.codec_context.height}",
            "codec": stream.codec_context.name,
            "profile": stream.codec_context.profile,
            "pix_fmt": fmt,
            "rotation": rotation,
            "frames": len(pts),
            "frame_durations": durations,
            "audio": f"{audio.codec_context.name} {audio.sample_rate} Hz" if audio else None,
        }


def pts_seconds(path: Path) -> list[Fraction]:
    """Every video frame's time in seconds, in decoding order (frames not kept)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        return [Fraction(f.pts) * stream.time_base for f in c.decode(stream)]


# --- running and measuring -----------------------------------------------------------


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [p for p, pp in parents.items() if pp == pid]
    return out


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE")
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Timed:
    """One command's measures: wall and CPU seconds (user + system, children included),
    peak RSS of its largest process and of its process tree's sum (MiB), exit status."""

    wall: float
    cpu: float
    rss_mib: float
    tree_rss_mib: float
    code: int
    stderr: str


def timed(
    cmd: list[str], env: dict[str, str] | None = None, kill_after: float | None = None
) -> Timed:
    """Run ``cmd`` under ``/usr/bin/time -v``, sampling its process tree's RSS; with
    ``kill_after`` seconds, SIGKILL the command and its children then (``time`` itself
    lives on and reports)."""
    proc = subprocess.Popen(
        ["/usr/bin/time", "-v", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            pids = [p for p in _descendants(proc.pid) if p != proc.pid]
            peak[0] = max(peak[0], sum(_rss(p) for p in pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if kill_after is not None:
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            for pid in reversed([p for p in _descendants(proc.pid) if p != proc.pid]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    _, stderr = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()

    def field(name: str) -> float:
        found = re.search(rf"^\s*{re.escape(name)}: (.*)$", stderr, re.M)
        return float(found.group(1)) if found else float("nan")

    return Timed(
        wall=wall,
        cpu=field("User time (seconds)") + field("System time (seconds)"),
        rss_mib=field("Maximum resident set size (kbytes)") / 1024,
        tree_rss_mib=peak[0] / 2**20,
        code=proc.returncode,
        stderr=stderr,
    )


def adaptanon_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The command that runs ``adaptanon`` and the environment it needs."""
    if args.adaptanon:
        return shlex.split(args.adaptanon), {}
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", "adaptanon"], {"PYTHONPATH": path}


def anonymize(
    args: argparse.Namespace, clip: Path, out: Path, kill_after: float | None = None
) -> tuple[Timed, str]:
    """``adaptanon anonymize CLIP -o OUT --regions faces -q`` timed; and the command as
    typed (clip folder shown as CLIPS)."""
    base, env = adaptanon_command(args)
    options = ["--regions", "faces", "-q", *shlex.split(args.options)]
    run = timed([*base, "anonymize", str(clip), "-o", str(out), *options], env, kill_after)
    if kill_after is None and run.code not in (0, 1):
        sys.exit(f"adaptanon failed ({run.code}) on {clip}:\n{run.stderr[-3000:]}")
    typed = f"adaptanon anonymize CLIPS/{clip.name} -o OUT {' '.join(options)}"
    return run, typed


def video_record(out: Path, clip: Path) -> dict:
    """The last manifest record of ``clip`` (a video record)."""
    lines = (out / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    mine = [r for r in records if Path(r.get("input", "")).name == clip.name]
    if not mine:
        sys.exit(f"no manifest record of {clip.name} in {out}")
    return mine[-1]


def frame_regions(record: dict, n: int) -> list[list[list[int]]]:
    """Each frame's anonymized regions (``[x0, y0, x1, y1]``) from a video record -- the
    one place that reads the manifest's per-frame format: ``frame_records``, each with
    ``frames: [first, last]`` and ``regions``."""
    every: list[list[list[int]]] = [[] for _ in range(n)]
    for fr in record.get("frame_records", []):
        for t in range(fr["frames"][0], min(n - 1, fr["frames"][1]) + 1):
            every[t] = fr.get("regions", [])
    return every


def frame_decisions(record: dict, n: int) -> list[tuple]:
    """Each frame's decision from a video record: status, original and final class."""
    out: list[tuple] = [("missing",)] * n
    for fr in record.get("frame_records", []):
        for t in range(fr["frames"][0], min(n - 1, fr["frames"][1]) + 1):
            out[t] = (fr["status"], fr.get("original_class"), fr.get("final_class"))
    return out


def decode_encode_fps(clip: Path, work: Path) -> float:
    """Frames per second of PyAV decoding ``clip`` and libx264 (CRF 23) encoding it."""
    start, n = time.perf_counter(), 0
    with av.open(str(clip)) as src, av.open(str(work / "codec.mp4"), "w") as out:
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        video = out.add_stream("libx264", rate=stream.average_rate, options={"crf": "23"})
        video.width, video.height = stream.codec_context.width, stream.codec_context.height
        video.pix_fmt = "yuv420p"
        video.time_base = video.codec_context.time_base = stream.time_base
        for frame in src.decode(stream):
            rgb = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            rgb.pts, rgb.time_base = frame.pts, stream.time_base
            out.mux(video.encode(rgb))
            n += 1
        out.mux(video.encode(None))
    (work / "codec.mp4").unlink()
    return n / (time.perf_counter() - start)


def detector_fps(clip: Path) -> float:
    """Frames per second of CenterFace alone on every frame, decoded one at a time."""
    from adaptanon.io.codecs import to_image
    from adaptanon.regions import RegionQuery, parse_region_source

    source = parse_region_source("faces")
    start, n = time.perf_counter(), 0
    with av.open(str(clip)) as c:
        for frame in c.decode(c.streams.video[0]):
            source.find([RegionQuery(f"f{n}", to_image(frame.to_ndarray(format="rgb24")))])
            n += 1
    return n / (time.perf_counter() - start)


@cache
def published_network() -> torch.nn.Module:
    from adaptanon.classifiers.efficientnet_lite import lite_network

    return lite_network("efficientnet_lite0")


def plain_classes(path: Path, batch: int = 16) -> list[int]:
    """Every frame's class under the published network and the plain PIL loader,
    decoded by PyAV (8-bit RGB, display rotation not applied), streaming."""
    out: list[int] = []
    model, pending = published_network(), []

    def flush() -> None:
        with torch.no_grad():
            out.extend(model(torch.stack(pending)).argmax(1).tolist())
        pending.clear()

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in c.decode(stream):
            pending.append(plain_pil_tensor(frame.to_image()))
            if len(pending) == batch:
                flush()
    if pending:
        flush()
    return out


def rotation(path: Path) -> int | None:
    with av.open(str(path)) as c:
        return next(iter(c.decode(c.streams.video[0]))).rotation


def checks(spec: Spec, clip: Path, record: dict) -> dict:
    """What the written file keeps of the clip (see the module's targets)."""
    from adaptanon.io.video import audio_packets
    from adaptanon.regions.tracking import coverage

    if not record.get("output"):
        return {"status": record.get("status"), "written": False}
    written = Path(record["output"])
    if not written.is_absolute():
        written = ROOT / written
    stamps_in, stamps_out = pts_seconds(clip), pts_seconds(written)
    n = len(stamps_in)
    regions = frame_regions(record, n)
    visible = [
        t
        for t, seconds in enumerate(stamps_in)
        if coverage(visible_box(spec, float(seconds)), regions[t]) < 1.0
    ]
    classes_in, classes_out = plain_classes(clip), plain_classes(written)
    audio_in = audio_packets(clip)
    return {
        "status": record.get("status"),
        "written": True,
        "frame_status": record.get("frame_status", {}),
        "frames": n,
        "frames_out": len(stamps_out),
        "pts_identical": stamps_in == stamps_out,
        "audio_identical": audio_in == audio_packets(written),
        "audio_packets": len(audio_in),
        "visible_face_frames": len(visible),
        "class_changed_frames": sum(a != b for a, b in zip(classes_in, classes_out, strict=False))
        + abs(len(classes_in) - len(classes_out)),
        "rotation_in_out": [rotation(clip), rotation(written)],
    }


def run_deface(deface: str, clip: Path, work: Path, keep_audio: bool) -> tuple[Timed, str]:
    out = work / f"deface-{clip.stem}.mp4"
    extra = ["--keep-audio"] if keep_audio else []
    run = timed([deface, str(clip), "-o", str(out), *extra])
    if run.code != 0:
        sys.exit(f"deface failed ({run.code}):\n{run.stderr[-3000:]}")
    return run, f"deface CLIPS/{clip.name} -o OUT.mp4 {' '.join(extra)}".strip()


# --- the bench -----------------------------------------------------------------------


def measure(args: argparse.Namespace, work: Path) -> dict:
    """Every measurement, as JSON-able rows."""
    result: dict = {"scale": [], "big": [], "kinds": [], "resume": None}
    short, long = (float(s) for s in args.scale_seconds.split(","))
    clips = work / "clips"
    clips.mkdir()

    def one(spec: Spec, tag: str, baselines: bool = False, deface: bool = False) -> dict:
        clip = make_clip(clips / spec.name, spec)
        out = work / f"out-{tag}-{spec.name}"
        n = len(spec.stamps())
        run, command = anonymize(args, clip, out)
        row = {
            "clip": spec.name,
            "frames": n,
            "wall": run.wall,
            "cpu": run.cpu,
            "fps": n / run.wall,
            "rss_mib": run.rss_mib,
            "tree_rss_mib": run.tree_rss_mib,
            "command": command,
            **checks(spec, clip, video_record(out, clip)),
        }
        if baselines:
            row["decode_encode_fps"] = decode_encode_fps(clip, work)
            row["detector_fps"] = detector_fps(clip)
        if deface and args.deface:
            d, dcommand = run_deface(args.deface, clip, work, args.deface_keep_audio)
            row.update(
                deface_wall=d.wall,
                deface_fps=n / d.wall,
                deface_rss_mib=d.rss_mib,
                deface_tree_rss_mib=d.tree_rss_mib,
                deface_command=dcommand,
            )
        print(json.dumps({tag: row}), flush=True)
        return row

    for seconds in (short, long):
        result["scale"].append(one(Spec(360, seconds), "scale"))
    for height in heights(args.sizes):
        result["big"].append(one(Spec(height, args.seconds), "big", baselines=True, deface=True))
    for kind in filter(None, args.kinds.split(",")):
        result["kinds"].append(one(Spec(360, short, kind), "kind"))

    # Kill and resume, on the long 360p clip, against its uninterrupted run above.
    whole = result["scale"][-1]
    spec = Spec(360, long)
    clip = clips / spec.name
    out = work / "out-resume"
    first, _ = anonymize(args, clip, out, kill_after=whole["wall"] / 2)
    second, command = anonymize(args, clip, out)
    n = len(spec.stamps())
    resumed = frame_decisions(video_record(out, clip), n)
    uninterrupted = frame_decisions(video_record(work / f"out-scale-{spec.name}", clip), n)
    result["resume"] = {
        "clip": spec.name,
        "killed_after": whole["wall"] / 2,
        "first_code": first.code,
        "cpu_first": first.cpu,
        "cpu_second": second.cpu,
        "cpu_uninterrupted": whole["cpu"],
        "work_ratio": (first.cpu + second.cpu) / whole["cpu"],
        "rerun_ratio": second.cpu / whole["cpu"],
        "decisions_differ": sum(a != b for a, b in zip(resumed, uninterrupted, strict=True)),
        "command": command,
    }
    print(json.dumps({"resume": result["resume"]}), flush=True)
    return result


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render(result: dict, args: argparse.Namespace) -> str:
    """The targets table and the measurements, as Markdown."""
    scale, big, kinds, resume = result["scale"], result["big"], result["kinds"], result["resume"]
    rows = []
    ratio = scale[1]["rss_mib"] / scale[0]["rss_mib"]
    tree = scale[1]["tree_rss_mib"] / max(1e-9, scale[0]["tree_rss_mib"])
    rows.append(
        (
            f"peak RSS {scale[1]['clip']} / {scale[0]['clip']} <= 1.25x",
            f"{scale[1]['rss_mib']:.0f} / {scale[0]['rss_mib']:.0f} MiB = {ratio:.2f}x "
            f"(tree RSS {tree:.2f}x)",
            ratio <= 1.25,
        )
    )
    for b in big:
        rows.append(
            (
                f"peak RSS {b['clip']} <= 3 GB",
                f"{b['rss_mib']:.0f} MiB (tree {b['tree_rss_mib']:.0f} MiB)",
                b["rss_mib"] * 2**20 <= 3e9,
            )
        )
        if "deface_fps" in b:
            rows.append(
                (
                    f"frames/s {b['clip']} >= 1.0x deface's",
                    f"{b['fps']:.2f} / {b['deface_fps']:.2f} = {b['fps'] / b['deface_fps']:.2f}x",
                    b["fps"] >= b["deface_fps"],
                )
            )
    everything = [*scale, *big, *kinds]
    for name, ok in (
        ("audio packets identical", lambda r: r["audio_identical"]),
        ("frame count and time stamps identical", lambda r: r["pts_identical"]),
        ("0 frames whose class changed (PyAV + plain PIL loader)", lambda r: r["class_changed_frames"] == 0),
        ("0 frames with the face visible", lambda r: r["visible_face_frames"] == 0),
        ("display rotation kept (not an issue 23 target)", lambda r: len(set(r["rotation_in_out"])) == 1),
    ):  # fmt: skip
        bad = [r["clip"] for r in everything if not r.get("written") or not ok(r)]
        rows.append((name, f"{len(everything) - len(bad)}/{len(everything)} clips" + (f" (not: {', '.join(bad)})" if bad else ""), not bad))  # fmt: skip
    rows.append(
        (
            "killed at half time and rerun: same decisions, total CPU <= 1.6x",
            f"{resume['decisions_differ']} frames differ; {resume['cpu_first']:.0f} + "
            f"{resume['cpu_second']:.0f} s / {resume['cpu_uninterrupted']:.0f} s = "
            f"{resume['work_ratio']:.2f}x (the rerun alone {resume['cpu_second'] / resume['cpu_uninterrupted']:.2f}x: "
            "1.0x when nothing is resumed, so a run that keeps nothing scores about 1.5x)",
            resume["decisions_differ"] == 0 and resume["work_ratio"] <= 1.6,
        )
    )
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
        f"no GPU, torch {torch.__version__}, PyAV {av.__version__}, OMP_NUM_THREADS {threads}.",
        "",
        f"Command: `python bench/video_scale.py {' '.join(sys.argv[1:])}` (CLIPS: the "
        "script's clips, made by it; OUT: its output folders).",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *(f"| {t} | {m} | {yes(ok)} |" for t, m, ok in rows),
        "",
        "| clip | frames | status | fps | CPU s | peak RSS (largest process / tree) MiB | "
        "visible face frames | class changed | audio identical | pts identical | rotation "
        "in/out | decode+encode fps | detector fps | deface fps | deface peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in everything:
        if not r.get("written"):
            lines.append(f"| {r['clip']} | {r['frames']} | {r['status']} (nothing written) |" + " |" * 12)  # fmt: skip
            continue
        lines.append(
            f"| {r['clip']} | {r['frames']} | {r['status']} | {r['fps']:.2f} | {r['cpu']:.0f} | "
            f"{r['rss_mib']:.0f} / {r['tree_rss_mib']:.0f} | {r['visible_face_frames']} | "
            f"{r['class_changed_frames']} | {yes(r['audio_identical'])} | "
            f"{yes(r['pts_identical'])} | {r['rotation_in_out']} | "
            f"{r.get('decode_encode_fps', float('nan')):.1f} | "
            f"{r.get('detector_fps', float('nan')):.2f} | "
            f"{r.get('deface_fps', float('nan')):.2f} | "
            f"{r.get('deface_rss_mib', float('nan')):.0f} / "
            f"{r.get('deface_tree_rss_mib', float('nan')):.0f} |"
        )
    commands = sorted({r["command"] for r in everything} | {r.get("deface_command", "") for r in big} - {""})  # fmt: skip
    lines = [line.replace("nan / nan", "-").replace("| nan ", "| - ") for line in lines]
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in commands) + "."]
    lines += [
        "",
        "fps: frames / wall seconds of the whole command (start-up and model loading "
        "included). Peak RSS: `/usr/bin/time -v`'s maximum resident set size, the largest "
        "single process (deface's ffmpeg children are separate processes); tree: the sum "
        "over the process tree sampled every 0.1 s. deface runs with its defaults (no "
        "`--keep-audio`: it writes no audio, less work than adaptanon's copy)."
        if not args.deface_keep_audio
        else "deface runs with `--keep-audio`.",
    ]
    return "\n".join(lines)


def heights(text: str) -> list[int]:
    """``--sizes``: heights (360, 720, 1080, 2160) or names (360p, 1080p, 4K)."""
    names = {"4k": 2160, "uhd": 2160}
    out = [names.get(h.lower(), None) or int(h.lower().removesuffix("p")) for h in text.split(",")]
    for h in out:
        if h not in SIZES:
            sys.exit(f"--sizes: {h} is not one of {sorted(SIZES)} (or 4K)")
    return out


def from_log(path: Path) -> dict:
    """The measurements a run printed (its log), to render again without measuring."""
    result: dict = {"scale": [], "big": [], "kinds": [], "resume": None}
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            ((tag, row),) = json.loads(line).items()
            if tag == "resume":
                result["resume"] = row
            else:
                result["kinds" if tag == "kind" else tag].append(row)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deface", default=None, help="deface executable (its own venv)")
    parser.add_argument("--deface-keep-audio", action="store_true")
    parser.add_argument("--adaptanon", default=None, help="command for adaptanon (default: python -m adaptanon, PYTHONPATH=src)")  # fmt: skip
    parser.add_argument("--options", default="", help="more anonymize options")
    parser.add_argument("--sizes", default="1080", help="heights of the big clips (360,720,1080,2160)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the big clips")
    parser.add_argument("--scale-seconds", default="20,120", help="short,long 640x360 clips")
    parser.add_argument("--kinds", default="vfr,rotated,10bit,noaudio", help="other clip kinds (640x360, short)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="3 s clips (1 s and 3 s for scale)")
    parser.add_argument("--make", type=Path, default=None, help="only write one clip of each kind to DIR")  # fmt: skip
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--rows", type=Path, default=None, help="render a run's log again")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.scale_seconds = 3.0, "1,3"
    if args.make is not None:
        args.make.mkdir(parents=True, exist_ok=True)
        for height in heights(args.sizes):
            for kind in KINDS:
                start = time.perf_counter()
                path = make_clip(args.make / Spec(height, args.seconds, kind).name, Spec(height, args.seconds, kind))  # fmt: skip
                print(json.dumps({**probe(path), "seconds_to_make": round(time.perf_counter() - start, 1)}))  # fmt: skip
        return
    if args.rows is not None:
        result = from_log(args.rows)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(args, Path(tmp))
    text = render(result, args)
    print(text)
    if args.write_docs:
        update_section("video_scale", HEADING, text)


if __name__ == "__main__":
    main()
