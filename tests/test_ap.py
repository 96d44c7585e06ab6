"""Detection-ranked AP (bench.ap) on cases small enough to count by hand."""

from __future__ import annotations

import pytest

from bench.ap import Scored, average_precision, mean_ap

SIGN = (100, 100, 140, 140)  # a 40 px sign: "medium"


def test_all_point_ap_by_hand():
    truth = {"f": [(SIGN, 1)]}
    assert average_precision([Scored("f", SIGN, 1, 0.9)], truth) == 1.0
    # a false detection ranked first: precision 1/2 when the sign is found, so AP 0.5
    assert average_precision([Scored("f", (0, 0, 10, 10), 1, 0.95), Scored("f", SIGN, 1, 0.9)], truth) == 0.5
    # ranked after the hit it costs nothing: the envelope is 1 up to recall 1
    assert average_precision([Scored("f", SIGN, 1, 0.95), Scored("f", (0, 0, 10, 10), 1, 0.9)], truth) == 1.0
    # a second read of the same sign is a false detection (each sign is matched once)
    assert average_precision([Scored("f", SIGN, 1, 0.95), Scored("f", SIGN, 1, 0.9)], truth) == 1.0
    two = {"f": [(SIGN, 1), ((300, 300, 330, 330), 1)]}
    assert average_precision([Scored("f", SIGN, 1, 0.9)], two) == 0.5  # half the signs, at precision 1
    assert average_precision([], {"f": []}) is None  # nothing to find: no AP, not 0


def test_classes_superclasses_and_sizes():
    small, large = (10, 10, 30, 30), (200, 200, 260, 260)  # 20 px and 60 px
    truth = {"a": [(small, 14), (large, 1)], "b": [(SIGN, 38)]}  # stop (not in a superclass), 30 km/h, keep right
    dets = [Scored("a", small, 14, 0.9), Scored("a", large, 2, 0.8), Scored("b", SIGN, 38, 0.7)]
    ap = mean_ap(dets, truth)
    assert ap["map_43"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)  # stop found, 30 read as 50, keep right found
    assert ap["prohibitory"] == 1.0  # 30 read as 50 is still prohibitory
    assert ap["mandatory"] == 1.0 and ap["danger"] is None
    assert ap["prohibitory_large"] == 1.0 and ap["prohibitory_small"] is None and ap["mandatory_medium"] == 1.0
    assert ap["superclass_map"] == 1.0


def test_a_detection_of_a_sign_of_another_size_is_ignored_not_false():
    small, large = (10, 10, 30, 30), (200, 200, 260, 260)
    truth = {"a": [(small, 1), (large, 1)]}
    dets = [Scored("a", large, 1, 0.95), Scored("a", small, 1, 0.9)]
    assert average_precision(dets, truth, (0, 32)) == 1.0  # the large one's hit does not count against the small bin
    assert average_precision([Scored("a", (400, 400, 470, 470), 1, 0.99), *dets], truth, (0, 32)) == 1.0  # a large FP
