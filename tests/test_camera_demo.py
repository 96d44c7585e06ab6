"""python -m camera_demo in-process: sources, outputs, the MJPEG server, smoothing, tracking and failures."""

from __future__ import annotations

import itertools
import json
import threading
import types
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import drive
from camera_demo import __main__ as demo_cli
from camera_demo.demo import DemoOptions, Sinks, run_demo
from camera_demo.display import window_unavailable
from camera_demo.outputs import JsonlWriter, VideoSaver
from camera_demo.server import FrameBoard, MjpegServer
from camera_demo.sources import Frame, Picamera2Source, SourceError, open_source
from runtime.builds import BUILDS, build_file
from runtime.classifier import Classifier, Detection, Prediction
from runtime.machine import describe_cpu
from runtime.pipeline import FramePipeline
from runtime.stream import StreamOptions
from runtime.tracking import Tracker
from tests import synth


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    return synth.write_gtsdb(tmp_path_factory.mktemp("demo_frames"), frames=3, seed=7)


@pytest.fixture(scope="module")
def video(frames_dir, tmp_path_factory):
    """A short clip of the synthetic road frames (each shown 3 times), written with OpenCV's VideoWriter."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    imgs = [cv2.imread(str(p)) for p in sorted(frames_dir.glob("*.jpg"))]
    h, w = imgs[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (w, h))
    for img in imgs:
        for _ in range(3):
            writer.write(img)
    writer.release()
    return path


def _count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_video_to_jsonl_video_snapshots_and_summary(exported, video, tmp_path, capsys):
    build = build_file(exported, BUILDS["tflite-int8"])
    out = tmp_path / "out"
    assert demo_cli.main(["--build", str(build), "--source", str(video), "--headless", "--threshold", "0",
                          "--jsonl", str(out / "d.jsonl"), "--save", str(out / "d.avi"), "--snapshots", str(out / "snaps"),
                          "--summary-json", str(out / "summary.json"), "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "running headless" not in captured.err  # --headless: asked for, so not announced
    lines = _lines(out / "d.jsonl")
    assert [r["frame"] for r in lines] == list(range(9))
    assert all(r["proposed"] and set(r["ms"]) >= {"proposals", "invoke", "total"} for r in lines)
    dets = [d for r in lines for d in r["detections"]]
    assert dets and all(set(d) >= {"box", "class_id", "label", "score", "track"} for d in dets)
    assert _count_frames(out / "d.avi") == 9
    snaps = sorted((out / "snaps").glob("*.png"))
    assert snaps and all(p.name.split("_")[0].isdigit() for p in snaps)
    assert len(snaps) == json.loads((out / "summary.json").read_text())["snapshots"]  # one per new track
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 9 and summary["fps_median"] > 0 and summary["frames_dropped"] == 0
    assert summary["cpu"] == describe_cpu()  # a frame rate names the hardware it was taken on
    assert summary["unconfirmed"] == sum(r["unconfirmed"] for r in lines)  # what the second look dropped
    assert "9 frames" in captured.out and "detections per class" in captured.out


@pytest.mark.slow
def test_image_folder_loops_and_fixed_rois(exported, frames_dir, tmp_path):
    build = build_file(exported, BUILDS["onnx-int8"])
    jsonl = tmp_path / "f.jsonl"
    assert demo_cli.main(["--build", str(build), "--source", str(frames_dir), "--headless", "--loop", "--max-frames", "7",
                          "--roi", "10,10,60,60", "30,20,90,80", "--threshold", "0", "--jsonl", str(jsonl)]) == 0
    lines = _lines(jsonl)
    assert [r["frame"] for r in lines] == list(range(7))  # 3 images, played again and again
    assert all(not r["proposed"] and len(r["detections"]) <= 2 for r in lines)


@pytest.mark.slow
def test_detect_every_k_proposes_every_kth_frame_and_follows_in_between(exported, video, tmp_path):
    jsonl = tmp_path / "k.jsonl"
    assert demo_cli.main(["--build", str(build_file(exported, BUILDS["tflite-int8"])), "--source", str(video), "--headless",
                          "--detect-every", "3", "--threshold", "0", "--jsonl", str(jsonl)]) == 0
    lines = _lines(jsonl)
    assert [r["proposed"] for r in lines] == [i % 3 == 0 for i in range(9)]
    followed = [r for r in lines if not r["proposed"]]
    assert any(r["detections"] for r in followed)
    from runtime.roi import iou_matrix

    # in between, the proposal stage runs only in windows around the signs followed: nothing appears elsewhere
    for prev, r in itertools.pairwise(lines):
        if not r["proposed"] and r["detections"]:
            near = iou_matrix([d["box"] for d in r["detections"]], [d["box"] for d in prev["detections"]])
            assert (near.max(axis=1) > 0).all()


@pytest.mark.slow
def test_between_carry_reads_nothing_between_full_detections(exported, video, tmp_path):
    jsonl = tmp_path / "c.jsonl"
    assert demo_cli.main(["--build", str(build_file(exported, BUILDS["tflite-int8"])), "--source", str(video), "--headless",
                          "--detect-every", "3", "--between", "carry", "--threshold", "0", "--jsonl", str(jsonl)]) == 0
    lines = _lines(jsonl)
    assert [r["proposed"] for r in lines] == [i % 3 == 0 for i in range(9)]
    for prev, r in itertools.pairwise(lines):
        if not r["proposed"]:
            assert r["cost"]["crops"] == 0 and r["cost"]["macs"] == r["cost"]["track_macs"]
            # the clip shows each frame 3 times: a sign carried stays where it was found (within half-size matching's
            # 2 pixels), with its track
            before = {d["track"]: d["box"] for d in prev["detections"]}
            assert all(np.abs(np.subtract(d["box"], before[d["track"]])).max() <= 2 for d in r["detections"])
    assert any(r["detections"] for r in lines if not r["proposed"])


def test_mjpeg_server_streams_frames_and_detections():
    board = FrameBoard()
    server = MjpegServer(board, 0)
    try:
        image = np.zeros((48, 64, 3), np.uint8)
        image[:, :32] = (0, 0, 255)
        info = {"frame": 5, "fps": 12.5, "detections": [{"label": "Stop", "score": 0.9, "box": [1, 2, 3, 4], "track": 0}]}
        board.publish(image, info)
        page = urllib.request.urlopen(server.url, timeout=5).read().decode()
        assert '<img id="stream" src="/stream.mjpg"' in page and "detections.json" in page
        frame = cv2.imdecode(np.frombuffer(urllib.request.urlopen(server.url + "frame.jpg", timeout=5).read(), np.uint8),
                             cv2.IMREAD_COLOR)
        assert frame.shape == (48, 64, 3) and frame[10, 5, 2] > 200 and frame[10, 50, 2] < 50
        assert json.loads(urllib.request.urlopen(server.url + "detections.json", timeout=5).read()) == info
        with urllib.request.urlopen(server.url + "stream.mjpg", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            threading.Timer(0.2, board.publish, (image, info)).start()
            head = resp.read(200)
        assert b"--signkitframe" in head and b"image/jpeg" in head
    finally:
        server.close()


def _det(box, cls, score=0.9):
    return Detection(box, Prediction(cls, f"c{cls}", score, ()))


def test_smoothing_reports_a_label_steadily_through_one_flickering_frame():
    names = [f"c{i}" for i in range(5)]
    steady, raw = Tracker(window=5), Tracker(window=1)
    sequence = [1, 1, 2, 1, 1, 1, 3, 1]  # one frame in five read as another sign
    reported = [steady.update([_det((100 + i, 50, 140 + i, 90), c)], i, names)[0].class_id for i, c in enumerate(sequence)]
    unsmoothed = [raw.update([_det((100 + i, 50, 140 + i, 90), c)], i, names)[0].class_id for i, c in enumerate(sequence)]
    assert reported == [1] * len(sequence) and unsmoothed == sequence
    assert steady.created == 1  # one sign, one track


def test_tracker_starts_new_tracks_and_predicts_motion():
    names = ["a", "b"]
    t = Tracker()
    first = t.update([_det((0, 0, 20, 20), 0), _det((100, 100, 120, 120), 1)], 0, names)
    assert [x.new for x in first] == [True, True]
    second = t.update([_det((4, 2, 26, 24), 0)], 1, names)
    assert not second[0].new and second[0].track == first[0].track
    assert (8, 4, 32, 28) in t.predicted_boxes(2)  # moving 4,2,6,4 a frame


class _Flicker:
    """A pipeline stand-in that reads one sign, misreading it in one frame of five."""

    def __init__(self, classifier):
        self.classifier = classifier

    def propose(self, image, learned=True):
        from runtime.pipeline import Proposed

        return Proposed((), 0.0)

    def run(self, image, boxes=None, proposed=None):
        n = int(image[0, 0, 0])
        cls = 2 if n % 5 == 2 else 1
        from runtime.pipeline import FrameResult, StageTimes

        return FrameResult((_det((40, 40, 80, 80), cls),), (), (), StageTimes(0, 0, 0, 0, 0))


class _Frames:
    live, fps, name = False, None, "fake"

    def __init__(self, n, die_after=None):
        self.n, self.k, self.die_after = n, 0, die_after

    def read(self):
        if self.die_after is not None and self.k == self.die_after:
            raise SourceError("--source fake stopped delivering frames (unplugged); pass --reconnect SECONDS")
        if self.k == self.n:
            return None
        img = np.full((120, 160, 3), self.k, np.uint8)
        self.k += 1
        return Frame(img, self.k / 10, self.k - 1)

    def close(self):
        pass


def test_smoothing_in_the_demo_loop(tmp_path):
    clf = types.SimpleNamespace(class_names=("c0", "c1", "c2"))
    jsonl = tmp_path / "s.jsonl"
    run_demo(_Frames(10), _Flicker(clf), DemoOptions(StreamOptions(smooth=5)), Sinks(jsonl=JsonlWriter(jsonl)), log=lambda m: None)
    labels = [r["detections"][0]["class_id"] for r in _lines(jsonl)]
    raw = [r["detections"][0]["frame_class_id"] for r in _lines(jsonl)]
    assert labels == [1] * 10 and 2 in raw


def test_a_source_that_dies_mid_stream_closes_the_outputs(tmp_path):
    clf = types.SimpleNamespace(class_names=("c0", "c1", "c2"))
    jsonl, video = tmp_path / "d.jsonl", tmp_path / "d.avi"
    summary = run_demo(_Frames(10, die_after=4), _Flicker(clf), DemoOptions(),
                       Sinks(jsonl=JsonlWriter(jsonl), video=VideoSaver(video, 10)), log=lambda m: None)
    assert summary.error and "stopped delivering frames" in summary.error and summary.frames == 4
    assert len(_lines(jsonl)) == 4 and _count_frames(video) == 4


@pytest.mark.slow
def test_main_reports_a_lost_camera_in_one_line_and_exits_1(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_cli, "open_source", lambda spec, **kw: _Frames(10, die_after=3))
    jsonl = tmp_path / "l.jsonl"
    rc = demo_cli.main(["--build", str(build_file(exported, BUILDS["tflite-int8"])), "--source", "0", "--headless",
                        "--jsonl", str(jsonl)])
    captured = capsys.readouterr()
    assert rc == 1 and "3 frames" in captured.out
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("python -m camera_demo: error:") and "--reconnect" in err and "Traceback" not in captured.err
    assert len(_lines(jsonl)) == 3


def test_reconnect_waits_for_the_camera_to_come_back():
    from camera_demo.sources import Reconnecting

    opened = []

    def opener():
        opened.append(1)
        return _Frames(5, die_after=2 if len(opened) == 1 else None)

    src = Reconnecting(opener, 2.0, log=lambda m: None)
    got = []
    while (f := src.read()) is not None:
        got.append(f.index)
    assert got == [0, 1, 0, 1, 2, 3, 4] and src.reconnects == 1


class _FakePicamera2:
    """The picamera2 API the adapter uses: configure, start, capture_request/make_array/get_metadata/release, stop."""

    def __init__(self, fail=False, gap_after=None):
        self.fail, self.gap_after, self.n, self.released = fail, gap_after, 0, 0
        self.config = None

    def create_video_configuration(self, main, controls=None, buffer_count=4):
        return {"main": main, "controls": controls, "buffer_count": buffer_count}

    def configure(self, config):
        self.config = config

    def start(self):
        if self.fail:
            raise RuntimeError("Camera __init__ sequence did not complete")

    def capture_request(self):
        cam = self
        k = self.n + (1 if self.gap_after is not None and self.n >= self.gap_after else 0)  # one frame lost
        self.n += 1
        w, h = cam.config["main"]["size"]

        class Request:
            def make_array(self, name):
                img = np.zeros((h, w, 3), np.uint8)
                img[..., 0] = 200  # blue in BGR byte order, as RGB888 is laid out
                return img

            def get_metadata(self):
                return {"SensorTimestamp": 1_000_000_000 + k * 33_333_333, "FrameDuration": 33333}

            def release(self):
                cam.released += 1

        return Request()

    def stop(self):
        pass

    def close(self):
        pass


def test_picamera2_adapter_with_a_fake_module():
    cam = _FakePicamera2(gap_after=2)
    src = Picamera2Source((320, 240), 30, module=types.SimpleNamespace(Picamera2=lambda: cam))
    assert cam.config["main"] == {"size": (320, 240), "format": "RGB888"} and cam.config["controls"] == {"FrameRate": 30.0}
    got = [src.read() for _ in range(4)]
    assert [f.index for f in got] == [0, 1, 3, 4]  # the sensor clock shows the lost frame
    assert got[0].image.shape == (240, 320, 3) and got[0].image[0, 0, 0] == 200  # BGR as delivered, not flipped
    assert cam.released == 4  # every request handed back at once
    with pytest.raises(SourceError, match="cannot be started.*ribbon cable"):
        Picamera2Source(module=types.SimpleNamespace(Picamera2=lambda: _FakePicamera2(fail=True)))


def test_picamera2_missing_names_the_apt_package(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_picamera2(name, *args, **kwargs):
        if name == "picamera2":
            raise ImportError("No module named 'picamera2'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_picamera2)
    monkeypatch.delitem(__import__("sys").modules, "picamera2", raising=False)
    with pytest.raises(SourceError, match="sudo apt install python3-picamera2.*--system-site-packages"):
        open_source("picamera2")


def test_sources_that_cannot_be_opened(tmp_path):
    with pytest.raises(SourceError, match="no such file, folder or camera"):
        open_source(str(tmp_path / "nope.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "not_video.mp4").write_bytes(b"nothing")
    with pytest.raises(SourceError, match="cannot be opened"):
        open_source(str(tmp_path / "not_video.mp4"))


def test_headless_without_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert "DISPLAY is not set" in window_unavailable()
    monkeypatch.setenv("DISPLAY", ":0")
    if "GUI:                           NONE" in cv2.getBuildInformation():
        assert "--serve" in window_unavailable() and "python3-opencv" in window_unavailable()


@pytest.mark.slow
def test_no_display_means_headless_said_once(exported, frames_dir, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert demo_cli.main(["--build", str(build_file(exported, BUILDS["tflite-int8"])), "--source", str(frames_dir)]) == 0
    assert capsys.readouterr().err.count("running headless: no display") == 1


def test_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        demo_cli.main(["--build", "x.tflite", "--roi", "1,2,3,4", "--detect-every", "3"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        demo_cli.main(["--build", "x.tflite", "--roi", "1,2,3,4", "--between", "carry"])
    assert e.value.code == 2
    assert "--between needs --detect" in capsys.readouterr().err
    assert demo_cli.main(["--build", str(tmp_path / "missing_int8.tflite"), "--source", "0"]) == 1
    assert "not found" in capsys.readouterr().err


# --- the drive video -----------------------------------------------------------------------------

def test_drive_video_and_its_ground_truth(frames_dir, tmp_path):
    out = tmp_path / "drive.avi"
    assert drive.main(["--frames", str(frames_dir), "--out", str(out), "--steps", "4", "--zoom", "1.5", "--quiet"]) == 0
    gt = drive.read_jsonl(tmp_path / "drive_gt.jsonl", "--gt")
    assert _count_frames(out) == len(gt) == 12
    first, last = gt[0], gt[3]
    assert first["scale"] == 1.0 and last["scale"] == pytest.approx(1.5)
    for a in first["signs"]:  # signs grow by the zoom, tracked by one id across the clip
        later = [s for s in last["signs"] + [] if s["track"] == a["track"]]
        if later:
            b = later[0]["box"]
            assert (b[2] - b[0]) == pytest.approx(1.5 * (a["box"][2] - a["box"][0]), abs=2)
    perfect = [{"frame": t["frame"], "detections": [{"box": s["box"], "class_id": s["class_id"]} for s in t["signs"]]} for t in gt]
    score = drive.score_drive(perfect, gt)
    assert score.precision == score.recall == score.f1 == 1.0 and score.label_flips == 0
    assert score.gmacs is None  # the JSONL says nothing of the cost
    costed = [{**r, "cost": {"crops": 2 * (i % 2), "second_look_crops": 3, "macs": 10**9 * (i % 2)}} for i, r in enumerate(perfect)]
    cost = drive.score_drive(costed, gt)
    assert cost.gmacs == pytest.approx(0.5) and cost.crops == pytest.approx(4.0)  # a frame's mean, the second look counted
    flicker = [{"frame": t["frame"], "detections": [{"box": s["box"], "class_id": (s["class_id"] + 1) if t["step"] == 1 else s["class_id"]}
                                                   for s in t["signs"]]} for t in gt]
    flicked = drive.score_drive(flicker, gt)
    steps: dict[str, list[int]] = {}
    for t in gt:
        for s in t["signs"]:
            steps.setdefault(s["track"], []).append(t["step"])
    # misread at step 1: a flip there, and one back where the sign is still in the frame at step 2
    expected = sum((1 in seen) + (1 in seen and 2 in seen) for seen in steps.values())
    assert flicked.label_flips == expected > 0 and flicked.recall < 1.0


def test_drive_refuses_a_bad_jsonl(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    (tmp_path / "gt.jsonl").write_text("")
    assert drive.main(["--score", str(tmp_path / "bad.jsonl"), "--gt", str(tmp_path / "gt.jsonl")]) == 1
    assert "line 1 is not JSON" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("every", ["1", "3"])  # 3: a file is read ahead to the next full frame, proposed early
def test_overlapping_the_stages_changes_nothing_but_the_speed(exported, video, tmp_path, every):
    build = str(build_file(exported, BUILDS["tflite-int8"]))
    runs = {}
    for flag in ("--no-overlap", "--detect"):
        jsonl = tmp_path / f"{flag}.jsonl"
        assert demo_cli.main(["--build", build, "--source", str(video), "--headless", "--threshold", "0", flag,
                              "--detect-every", every, "--jsonl", str(jsonl)]) == 0
        runs[flag] = [[(tuple(d["box"]), d["class_id"]) for d in r["detections"]] for r in _lines(jsonl)]
    assert runs["--no-overlap"] == runs["--detect"] and any(runs["--detect"])


@pytest.mark.slow
def test_the_demo_runs_the_same_pipeline_as_bench(exported, video, tmp_path):
    """One code path: the demo's detections on a frame are FramePipeline.run's on that frame."""
    build = build_file(exported, BUILDS["tflite-int8"])
    jsonl = tmp_path / "p.jsonl"
    assert demo_cli.main(["--build", str(build), "--source", str(video), "--headless", "--max-frames", "1", "--threshold", "0",
                          "--jsonl", str(jsonl), "--threads", "1"]) == 0
    frame = cv2.VideoCapture(str(video)).read()[1]
    expected = FramePipeline(Classifier.from_build(build, threads=1, threshold=0.0)).run(frame)
    line = _lines(jsonl)[0]
    assert [d["box"] for d in line["detections"]] == [list(d.box) for d in expected.detections]
    assert line["unconfirmed"] == len(expected.unconfirmed)


def test_a_followed_sign_is_searched_with_the_colour_of_its_cue():
    from runtime.proposals import Proposal

    t = Tracker()
    blue = Detection((100, 100, 140, 140), Prediction(1, "c1", 0.9, ()), Proposal((100, 100, 140, 140), "blue-solid", 0.8))
    given = Detection((300, 100, 340, 140), Prediction(0, "c0", 0.9, ()), Proposal((300, 100, 340, 140), "given", 1.0))
    t.update([blue, given], 0, ["c0", "c1"])
    windows = t.search_windows(1)
    assert [w.colour for w in windows] == ["blue", None]  # a given box: every cue
    assert windows[0].box == (36, 36, 204, 204)  # grown by 1.6 of its side on every side
    assert [w.colour for w in t.search_windows(1, same_colour=False)] == [None, None]
