"""bench.misses: every annotated sign gets the stage that lost it, on synthetic GTSDB-layout frames."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bench import misses
from runtime.annotations import Annotation, read_gtsdb
from runtime.builds import BUILDS, build_file, read_metadata
from runtime.classifier import Detection, Prediction
from runtime.proposals import Proposal, ProposalConfig, candidates
from runtime.roi import iou_matrix
from tests import synth


def _near_box(frame_path, truth):
    """A box centred on a painted sign but larger, whose best candidate IoU lies between 0.3 and 0.5."""
    frame = cv2.imread(str(frame_path))
    boxes = candidates(frame, ProposalConfig()).boxes
    for a in truth:
        x1, y1, x2, y2 = a.box
        cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        for k in np.arange(1.4, 2.6, 0.1):
            box = (round(cx - k * side / 2), round(cy - k * side / 2), round(cx + k * side / 2), round(cy + k * side / 2))
            if 0.32 <= iou_matrix([box], boxes).max() <= 0.48:
                return box, a.class_id
    raise AssertionError("no sign of the synthetic frame gives a near box")


@pytest.fixture(scope="module")
def gtsdb_dir(tmp_path_factory):
    """Three synthetic frames (12 painted signs), plus two annotations no candidate matches: a box on the empty
    road ("none") and a box centred on one of frame 0's signs but larger, its best candidate IoU 0.3-0.5 ("near")."""
    root = synth.write_gtsdb(tmp_path_factory.mktemp("gtsdb"))
    box, cls = _near_box(root / "00000.jpg", read_gtsdb(root / "gt.txt")["00000"])
    with (root / "gt.txt").open("a") as f:
        f.write(f"00001.ppm;300;250;340;290;1\n00000.ppm;{box[0]};{box[1]};{box[2]};{box[3]};{cls}\n")
    return root


def test_proposal_stage_reasons(gtsdb_dir, capsys):
    assert misses.main(["--frames", str(gtsdb_dir), "--json"]) == 0
    fates = json.loads(capsys.readouterr().out)
    assert len(fates) == 14
    reasons = {(f["frame"], f["reason"]) for f in fates}
    assert ("00001", "none") in reasons and ("00000", "near") in reasons
    assert sum(f["reason"] == "proposed" for f in fates) == 12
    road = next(f for f in fates if f["frame"] == "00001" and f["reason"] == "none")
    assert road["best_iou"] < 0.3 and road["side"] == 41  # gt.txt corners are inclusive: 300..340 is 41 px

    assert misses.main(["--frames", str(gtsdb_dir)]) == 0
    out = capsys.readouterr().out
    assert "the proposal stage on 3 frames" in out and "(14 signs)" in out
    assert "| all | 14 | 12 | 0 | 1 | 1 | 0.857 |" in out
    assert "| 30-45 px |" in out and "| 0-20 px |" not in out  # only the bins with signs


@pytest.mark.slow
def test_pipeline_reasons_with_a_build(exported, gtsdb_dir, capsys):
    build = build_file(exported, BUILDS["tflite-int8"])
    d = misses.diagnose(gtsdb_dir, build=build)
    assert len(d.fates) == 14 and d.frames == 3 and not d.fitted
    assert {f.reason for f in d.fates} <= set(misses.STAGES)
    by_frame = {(f.frame, f.reason) for f in d.fates}
    assert ("00001", "none") in by_frame and ("00000", "near") in by_frame
    assert d.class_names == list(read_metadata(build)["class_names"])
    assert misses.main(["--frames", str(gtsdb_dir), "--build", str(build)]) == 0
    out = capsys.readouterr().out
    assert "| group | signs | hit | misread | unconfirmed | rejected | loose | cut | near | none | hit share |" in out
    assert f"{len(d.false)} false detections, by the cue" in out
    assert "| cue | false detections | misread | double | loose | part | background |" in out
    assert f"| all | {len(d.false)} |" in out


def test_false_detections_get_the_kind_of_the_sign_they_overlap_most():
    truth = [Annotation((100, 100, 139, 139), 1), Annotation((300, 100, 339, 139), 2)]

    def det(box, cls, cue="red-hole"):
        return Detection(box, Prediction(cls, str(cls), 0.9, ()), Proposal(box, cue, 0.5))

    dets = [det((100, 100, 139, 139), 1),  # hits sign 0
            det((102, 102, 141, 141), 1, "map"),  # sign 0 again: double
            det((300, 100, 339, 139), 5),  # sign 1, another class: misread
            det((290, 90, 349, 149), 2),  # sign 1 at IoU 0.44, no hit there: loose
            det((130, 130, 169, 169), 1),  # IoU 0.03 with sign 0: part
            det((600, 400, 639, 439), 3, "map")]  # nothing there: background
    false = misses.false_detections("f", dets, truth, 0.5, 0.3)
    assert [(f.kind, f.class_id, f.cue) for f in false] == [
        ("double", 1, "map"), ("misread", 5, "red-hole"), ("loose", 2, "red-hole"), ("part", 1, "red-hole"),
        ("background", 3, "map")]
    assert not misses.false_detections("f", dets[:1], truth, 0.5, 0.3) and len(misses.false_detections("f", dets, [], 0.5, 0.3)) == 6
    table = misses.false_table(false)
    assert "| red-hole | 3 | 1 | 0 | 1 | 1 | 0 |" in table and "| map | 2 | 0 | 1 | 0 | 0 | 1 |" in table
    assert "| all | 5 | 1 | 1 | 1 | 1 | 1 |" in table


def test_bad_iou_flags_exit_2(gtsdb_dir):
    with pytest.raises(SystemExit) as e:
        misses.main(["--frames", str(gtsdb_dir), "--near", "0.6", "--iou", "0.5"])
    assert e.value.code == 2


def test_folder_without_gt_is_one_line(tmp_path, capsys):
    assert misses.main(["--frames", str(tmp_path)]) == 1
    assert "has no gt.txt" in capsys.readouterr().err
