"""Videos: frames streamed in closed segments, timing, rotation and audio kept, tracked
regions held over missed frames, the decision checked on each decoded segment (lossless
exactly, lossy by rounds), a stopped run resumed at its first unfinished segment, failures
per frame, bad files contained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("av")

import tiny_factory  # noqa: E402
from skimage import data  # noqa: E402

from adaptanon.cli import main  # noqa: E402
from adaptanon.engines.video import (  # noqa: E402
    VideoOptions,
    VideoRecord,
    WorkArea,
    anonymize_video,
    frame_ranges,
    per_frame,
)
from adaptanon.io import InputImage  # noqa: E402
from adaptanon.io.video import (  # noqa: E402
    VideoCodec,
    audio_packets,
    iter_frames,
    make_clip,
    packet_times,
    probe_video,
    read_video,
)
from adaptanon.method.criteria import SameClass  # noqa: E402
from adaptanon.method.filters import Mask  # noqa: E402
from adaptanon.method.pipeline import Settings  # noqa: E402
from adaptanon.regions import Detection, ExplicitBoxes  # noqa: E402
from adaptanon.regions.tracking import hold_regions, track  # noqa: E402

FACE = (20, 10, 90, 80)


def frames(n: int = 8, shift: int = 3) -> list[np.ndarray]:
    """``n`` 160x120 frames of the astronaut, panned ``shift`` pixels a frame."""
    img = data.astronaut()[::4, ::4][:120, :160]
    return [np.roll(img, shift * i, axis=1).copy() for i in range(n)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    paths = {
        "audio": root / "in" / "clip.mp4",
        "silent": root / "in" / "silent.mkv",
        "vfr": root / "in" / "vfr.mp4",
    }
    paths["audio"].parent.mkdir()
    make_clip(paths["audio"], frames(), 30)
    make_clip(paths["silent"], frames(6), 25, codec="ffv1", tone_hz=None, subtitle="hi")
    make_clip(paths["vfr"], frames(6), 30, pts=[0, 1, 3, 4, 8, 9], tone_hz=None)
    return paths


def run_cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def records(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {Path(json.loads(line)["input"]).name: json.loads(line) for line in lines}


def process(
    src: Path,
    source: ExplicitBoxes,
    settings: Settings,
    options: VideoOptions,
    root: Path,
    classifier: object | None = None,
    on_frames: object | None = None,
) -> tuple[VideoRecord, Path]:
    """One video through the engine (its work area and output under ``root``)."""
    item = InputImage(src, Path(src.name))
    work = WorkArea(root / "work", item, {"test": True})
    record, written = anonymize_video(
        classifier or tiny_factory.make(), source, settings, item, options, work,
        root / "out" / src.name, on_frames=on_frames,  # type: ignore[arg-type]
    )  # fmt: skip
    assert written is not None
    return record, written


def classes_of(classifier, frames: list[np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        images = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
        return classifier.forward(classifier.inputs(images))


def boxes_file(tmp_path: Path, name: str, frames_with_face: list[int]) -> Path:
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({f"{name}#{i}": [list(FACE)] for i in frames_with_face}))
    return path


def test_lossless_keeps_frames_times_audio_and_decodes_to_the_verified_pixels(clips, tmp_path):
    src = clips["audio"]
    boxes = boxes_file(tmp_path, src.name, list(range(8)))
    code, output = run_cli(
        "anonymize", src, "-o", tmp_path / "out", "--model", "tiny_factory:make",
        "--regions", f"boxes={boxes}", "--filter", "mask", "--video-codec", "ffv1",
    )  # fmt: skip
    assert code == 0, output
    rec = records(tmp_path / "out")["clip.mp4"]
    assert rec["kind"] == "video" and rec["status"] == "unchanged"
    written = Path(rec["output"])
    assert written.suffix == ".mp4" and written.parent == tmp_path / "out"
    original, stored = read_video(src), read_video(written.read_bytes())
    assert len(stored.frames) == len(original.frames) == rec["frame_count"] == 8
    assert stored.time_base == original.time_base and stored.pts == original.pts
    assert stored.duration == pytest.approx(original.duration) == pytest.approx(rec["duration"])
    assert audio_packets(src) == audio_packets(written) and audio_packets(src)
    x0, y0, x1, y1 = FACE
    for before, after in zip(original.frames, stored.frames, strict=True):
        outside = np.ones(before.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(before[outside], after[outside])
        assert np.all(after[y0:y1, x0:x1] == after[y0, x0])  # the mask fills the face


def test_lossless_segments_join_to_the_verified_frames(clips, tmp_path):
    src = clips["silent"]
    source = ExplicitBoxes({f"silent.mkv#{i}": [list(FACE)] for i in range(6)})
    options = VideoOptions(VideoCodec("ffv1"), segment_seconds=0.12)  # 3 frames at 25 fps
    record, written = process(src, source, Settings(filter=Mask()), options, tmp_path)
    assert record.status.ok and record.segments == 2 and record.frame_count == 6
    original, decoded = read_video(src), read_video(written)
    assert decoded.pts == original.pts
    x0, y0, x1, y1 = FACE
    for before, after in zip(original.frames, decoded.frames, strict=True):
        outside = np.ones(before.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(before[outside], after[outside])
        assert np.all(after[y0:y1, x0:x1] == after[y0, x0])
    assert audio_packets(written) == audio_packets(src)  # the subtitle stream is copied


def test_lossy_segments_join_by_stream_copy_with_exact_times_and_audio(clips, tmp_path):
    # H.264 with B-frames in segments of 3 frames: the joined stream keeps every time
    # stamp, decodes to the frames each segment was checked on, and copies the audio.
    src = clips["audio"]
    source = ExplicitBoxes({f"clip.mp4#{i}": [list(FACE)] for i in range(8)})
    options = VideoOptions(VideoCodec("h264", threads=1), segment_seconds=0.1)
    record, written = process(src, source, Settings(filter=Mask()), options, tmp_path)
    assert record.segments == 3 and record.frame_count == 8
    assert packet_times(written) == packet_times(src)
    assert read_video(written).pts == read_video(src).pts
    assert audio_packets(written) == audio_packets(src) and audio_packets(src)
    kept = sorted((tmp_path / "work").rglob("segment-*.part"))
    assert len(kept) == 3
    joined = [f for _, f in iter_frames(written)]
    parts = [f for path in kept for _, f in iter_frames(path.read_bytes())]
    assert len(joined) == len(parts) == 8
    assert all(np.array_equal(a, b) for a, b in zip(joined, parts, strict=True))


def test_a_rotated_phone_clip_is_seen_upright_and_keeps_its_rotation(tmp_path):
    upright = frames(6)
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # as the camera wrote them
    src = tmp_path / "phone.mp4"
    make_clip(src, stored, 30, codec="ffv1", tone_hz=None, rotation=90)
    info = probe_video(src)
    height, width = upright[0].shape[:2]
    assert info.rotation == 90 and (info.width, info.height) == (width, height)
    source = ExplicitBoxes({f"phone.mp4#{i}": [list(FACE)] for i in range(6)})  # upright pixels
    record, written = process(
        src, source, Settings(filter=Mask()), VideoOptions(VideoCodec("ffv1")), tmp_path
    )
    assert record.rotation == 90 and probe_video(written).rotation == 90
    x0, y0, x1, y1 = FACE
    for (_, before), (_, after) in zip(iter_frames(src), iter_frames(written), strict=True):
        assert before.shape == after.shape == (height, width, 3)  # upright, as a player shows it
        assert np.all(after[y0:y1, x0:x1] == after[y0, x0])
        outside = np.ones(before.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(before[outside], after[outside])


class Stop(Exception):
    """Raised by a progress callback to stop a run at a known point."""


def test_a_stopped_run_resumes_at_its_first_unfinished_segment(clips, tmp_path):
    src = clips["audio"]
    source = ExplicitBoxes({f"clip.mp4#{i}": [list(FACE)] for i in range(8)})
    settings = Settings(filter=Mask(), criterion=SameClass(1.0))
    options = VideoOptions(VideoCodec("h264", threads=1), segment_seconds=0.1)
    classifier = tiny_factory.make()
    whole, _ = process(src, source, settings, options, tmp_path / "whole", classifier)
    done: list[int] = []

    def stop_after_two(n: int) -> None:
        done.append(n)
        if len(done) == 2:
            raise Stop  # as a kill after the second segment was kept

    with pytest.raises(Stop):
        process(src, source, settings, options, tmp_path / "again", classifier, stop_after_two)
    counted: list[int] = []
    resumed, _ = process(
        src, source, settings, options, tmp_path / "again", classifier, counted.append
    )
    assert resumed.resumed == 2 and resumed.segments == 3 and sum(counted) == 8
    assert per_frame(resumed) == per_frame(whole)
    assert resumed.frame_status == whole.frame_status


def test_a_face_missed_in_some_frames_is_held_forward_and_backward():
    found = [[Detection(FACE, 0.9, "face")] if t in (3, 4, 6, 7) else [] for t in range(12)]
    tracks = track(found, hold=2)
    assert len(tracks) == 1
    regions = hold_regions(tracks, 12, 160, 120, hold=2)
    covered = [t for t, regs in enumerate(regions) if regs]
    assert covered == list(range(1, 10))  # 2 before frame 3, the gap at 5, 2 after frame 7
    assert [r.held for r in regions[5]] == [True] and regions[5][0].detection.box == FACE
    assert not any(r.held for r in regions[4])


def test_tracker_follows_a_moving_box_and_keeps_two_objects_apart():
    moving = [(10 + 5 * t, 10, 50 + 5 * t, 50) for t in range(6)]
    found = [[Detection(moving[t], 1.0, "face"), Detection((100, 60, 140, 100), 1.0, "face")] for t in range(6)]  # fmt: skip
    found[2] = [found[2][1]]  # the moving face is missed once
    tracks = track(found, hold=3)
    assert len(tracks) == 2
    regions = hold_regions(tracks, 6, 160, 120, hold=3)
    held = [r for r in regions[2] if r.held]
    assert len(held) == 1 and held[0].detection.box == moving[2]  # interpolated exactly


def test_cli_hold_anonymizes_the_frame_the_detections_miss(clips, tmp_path):
    src = clips["audio"]
    boxes = boxes_file(tmp_path, src.name, [0, 1, 2, 4, 5, 6])  # frames 3 and 7 missed
    code, output = run_cli(
        "anonymize", src, "-o", tmp_path / "out", "--model", "tiny_factory:make",
        "--regions", f"boxes={boxes}", "--filter", "mask", "--hold-frames", "1",
        "--video-codec", "ffv1",
    )  # fmt: skip
    assert code == 0, output
    rec = records(tmp_path / "out")["clip.mp4"]
    stored = read_video(Path(rec["output"]).read_bytes())
    x0, y0, x1, y1 = FACE
    for t in (3, 7):
        assert np.all(stored.frames[t][y0:y1, x0:x1] == stored.frames[t][y0, x0])
    assert rec["tracks"] == [
        {"id": 1, "label": "box", "first": 0, "last": 7, "detected": 6, "held": 2}
    ]
    by_frame = {r["frames"][0]: r for r in rec["frame_records"]}
    assert by_frame[3]["held"] == [True] and by_frame[2]["held"] == [False]


def test_lossy_rounds_restore_the_decision_on_the_decoded_video(clips, tmp_path):
    # A 1-logit margin: the correction stops just above it, and H.264 pushes frames back
    # below; the rounds correct them against the decoded frames until they hold.
    src = clips["audio"]
    source = ExplicitBoxes({f"clip.mp4#{i}": [list(FACE)] for i in range(8)})
    settings = Settings(filter=Mask(), criterion=SameClass(1.0))
    classifier = tiny_factory.make()
    results = {}
    for rounds in (0, 3):
        options = VideoOptions(VideoCodec("h264", crf=23), rounds=rounds)
        results[rounds] = process(
            src, source, settings, options, tmp_path / str(rounds), classifier
        )
    (first, _), (fixed, written) = results[0], results[3]
    assert first.changed_frames and first.status == "partial"
    assert (
        fixed.rounds >= 1
        and not fixed.changed_frames
        and fixed.status in ("corrected", "unchanged")
    )
    decoded = read_video(written)
    target = torch.tensor([r["original_class"] for r in per_frame(fixed)])
    logits = classes_of(classifier, decoded.frames)
    assert bool(settings.criterion(logits, target, torch.softmax(logits, 1)).all())


def test_frames_the_rounds_cannot_restore_are_listed_and_the_video_is_kept(clips, tmp_path):
    src = clips["audio"]
    source = ExplicitBoxes({f"clip.mp4#{i}": [list(FACE)] for i in range(8)})
    settings = Settings(filter=Mask(), criterion=SameClass(1.0))
    options = VideoOptions(VideoCodec("h264", crf=40, threads=1), rounds=1)
    rec, written = process(src, source, settings, options, tmp_path)
    assert rec.rounds == 1 and rec.changed_frames and rec.status == "partial"
    assert written.is_file()  # one frame that falls short does not discard the recording
    frames_ = per_frame(rec)
    failed = [f["frames"][0] for f in frames_ if f["status"] == "failed"]
    assert failed == rec.changed_frames
    assert all("class changed on the decoded video" in frames_[i]["error"] for i in failed)
    assert rec.frame_status["failed"] == len(failed)
    assert f"{len(failed)} frame(s) fell short" in (rec.error or "")


def test_cli_writes_a_partial_video_into_the_output_and_exits_1(clips, tmp_path):
    src = clips["audio"]
    boxes = boxes_file(tmp_path, src.name, list(range(8)))
    code, output = run_cli(
        "anonymize", src, "-o", tmp_path / "out", "--model", "tiny_factory:make",
        "--regions", f"boxes={boxes}", "--filter", "mask", "--criterion", "margin:1",
        "--crf", "40", "--video-rounds", "0",
    )  # fmt: skip
    rec = records(tmp_path / "out")["clip.mp4"]
    assert rec["status"] == "partial" and code == 1, output
    assert Path(rec["output"]).parent == tmp_path / "out"  # not under _failed/
    assert "partial" in " ".join(output.split())


def test_truncated_video_is_an_error_and_nothing_is_written(clips, tmp_path):
    broken = tmp_path / "in" / "broken.mp4"
    broken.parent.mkdir()
    payload = clips["audio"].read_bytes()
    broken.write_bytes(payload[: len(payload) // 2])
    code, _ = run_cli("anonymize", broken, "-o", tmp_path / "out", "--model", "tiny_factory:make")
    assert code == 1
    rec = records(tmp_path / "out")["broken.mp4"]
    assert rec["status"] == "error" and rec["output"] is None
    assert "broken.mp4" in rec["error"] and "Traceback" not in rec["error"]
    assert broken.read_bytes() == payload[: len(payload) // 2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.jsonl"]


def test_folder_of_photos_and_videos_silent_and_variable_rate(clips, tmp_path):
    folder = clips["vfr"].parent
    photo = folder / "photo.png"
    from PIL import Image

    Image.fromarray(frames(1)[0]).save(photo)
    try:
        code, output = run_cli(
            "anonymize", folder, "-o", tmp_path / "out", "--model", "tiny_factory:make"
        )
        assert code == 0, output
        recs = records(tmp_path / "out")
        assert set(recs) == {"clip.mp4", "silent.mkv", "vfr.mp4", "photo.png"}
        assert "kind" not in recs["photo.png"]
        vfr = read_video(Path(recs["vfr.mp4"]["output"]))
        assert vfr.pts == read_video(clips["vfr"]).pts
        assert not (tmp_path / "out" / ".adaptanon-work").exists() or not any(
            (tmp_path / "out" / ".adaptanon-work").iterdir()
        )  # finished videos leave no work area
        silent = Path(recs["silent.mkv"]["output"])
        assert silent.suffix == ".mkv" and audio_packets(silent) == audio_packets(clips["silent"])
        # A rerun keeps every finished video and photo.
        code, output = run_cli(
            "anonymize", folder, "-o", tmp_path / "out", "--model", "tiny_factory:make"
        )
        assert code == 0 and "4 image(s) were finished by an earlier run" in " ".join(
            output.split()
        )
    finally:
        photo.unlink()


def test_frame_ranges_merge_runs_of_plain_frames_only():
    plain = {"status": "unchanged", "original_class": 1, "final_class": 1, "steps": 0}
    recs = [{**plain, "frames": [i, i]} for i in range(4)]
    recs.append({**plain, "frames": [4, 4], "steps": 2, "status": "corrected"})
    recs.append({**plain, "frames": [5, 5], "regions": [[0, 0, 1, 1]]})
    merged = frame_ranges(recs)
    assert [r["frames"] for r in merged] == [[0, 3], [4, 4], [5, 5]]


@pytest.mark.parametrize(("hold", "flicker"), [(0, [1, 2, 3, 4]), (5, [])])
def test_evaluate_counts_flicker_frames_and_measures_each_track(clips, tmp_path, hold, flicker):
    pytest.importorskip("matplotlib")
    src = clips["audio"]
    boxes = boxes_file(tmp_path, src.name, [0, 5])
    code, output = run_cli(
        "evaluate", src, "-o", tmp_path / "eval", "--model", "tiny_factory:make",
        "--regions", f"boxes={boxes}", "--hold-frames", hold, "-q",
    )  # fmt: skip
    assert code == 0, output
    (row,) = json.loads((tmp_path / "eval" / "videos.json").read_text())
    assert row["frames"] == 8 and row["flicker_frames"] == flicker
    assert row["vulnerable_initial_pct"] is not None and row["not_corrected"] == 0
    assert len(row["tracks"]) == (2 if hold == 0 else 1)
    assert all(t["mean_psnr"] is not None and t["mean_ssim"] < 0.9 for t in row["tracks"])
    assert "| clip.mp4 |" in (tmp_path / "eval" / "videos.md").read_text()


def test_videos_are_told_from_photos_by_extension_or_content(clips, tmp_path):
    from adaptanon.cli.video import split_videos
    from adaptanon.io import InputImage

    odd = tmp_path / "recording.dat"
    odd.write_bytes(clips["silent"].read_bytes())
    photo = tmp_path / "still.png"
    from PIL import Image

    Image.fromarray(frames(1)[0]).save(photo)
    text = tmp_path / "notes.dat"
    text.write_text("not a video")
    misnamed = tmp_path / "misnamed.jpg"  # an image's extension: the image reader reports it
    misnamed.write_bytes(clips["silent"].read_bytes())
    items = [InputImage(p, Path(p.name)) for p in (odd, photo, text, clips["vfr"], misnamed)]
    photos, videos = split_videos(items)
    assert [i.path for i in videos] == [odd, clips["vfr"]]
    assert [i.path for i in photos] == [photo, text, misnamed]


@pytest.mark.parametrize("keep", [False, True])
def test_metadata_is_dropped_unless_asked(tmp_path, keep):
    import av

    src = tmp_path / "tagged.mkv"
    make_clip(
        src,
        frames(3),
        25,
        codec="ffv1",
        metadata={"title": "secret place", "location": "+48.85+002.35/"},
    )
    extra = ["--keep-metadata"] if keep else []
    code, output = run_cli(
        "anonymize", src, "-o", tmp_path / "out", "--model", "tiny_factory:make", *extra
    )
    assert code == 0, output
    with av.open(records(tmp_path / "out")["tagged.mkv"]["output"]) as written:
        tags = {k.lower(): v for k, v in written.metadata.items()}
    assert ("title" in tags and "location" in tags) == keep
    assert "secret place" not in json.dumps(tags) or keep


def test_a_frame_that_cannot_be_processed_writes_nothing(clips, tmp_path):
    src = clips["audio"]
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"clip.mp4#2": [[500, 500, 600, 600]]}))  # outside the frame
    code, _ = run_cli(
        "anonymize", src, "-o", tmp_path / "out", "--model", "tiny_factory:make",
        "--regions", f"boxes={path}",
    )  # fmt: skip
    assert code == 1
    rec = records(tmp_path / "out")["clip.mp4"]
    assert rec["status"] == "error" and rec["output"] is None
    assert "frame 2" in rec["error"] and "outside" in rec["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.jsonl"]


def test_a_shifted_low_score_detection_does_not_replace_the_tracks_box():
    # A face partly covered is found lower and with a low score: its upper part must
    # stay covered by the box interpolated between the confident detections.
    shifted = (20, 40, 90, 110)
    found = [
        [Detection(shifted, 0.4, "face")] if t in (3, 4) else [Detection(FACE, 0.9, "face")]
        for t in range(8)
    ]
    tracks = track(found, hold=2)
    assert len(tracks) == 1
    regions = hold_regions(tracks, 8, 160, 120, hold=2)
    for t in (3, 4):
        boxes = {(r.detection.box, r.held) for r in regions[t]}
        assert boxes == {(shifted, False), (FACE, True)}
    assert [r.detection.box for r in regions[2]] == [FACE]


def test_a_detection_far_below_its_tracks_usual_score_is_not_trusted_alone():
    shifted = (20, 40, 90, 110)
    found = [
        [Detection(shifted, 0.55, "face")] if t == 3 else [Detection(FACE, 0.92, "face")]
        for t in range(6)
    ]
    regions = hold_regions(track(found, hold=1), 6, 160, 120, hold=1)
    assert {(r.detection.box, r.held) for r in regions[3]} == {(shifted, False), (FACE, True)}
