"""ConfusionMatrix / mIoU against hand-computed confusion matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jodiffusion.errors import DatasetError
from jodiffusion.segmentation.metrics import ConfusionMatrix

# 6 pixels, the last one ignored. Counted (target, prediction) pairs:
# (0,0) (0,1) (1,1) (1,2) (2,2)  ->  rows = target, columns = prediction:
#   [[1, 1, 0],
#    [0, 1, 1],
#    [0, 0, 1]]
# IoU0 = 1 / (1 + 1 FN + 0 FP) = 50 %;  IoU1 = 1 / (1 + 1 FN + 1 FP) = 33.33 %;
# IoU2 = 1 / (1 + 0 FN + 1 FP) = 50 %;  mIoU = 44.44 %;  pixel accuracy = 3 / 5 = 60 %.
TARGET = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [2, 2, 0]], dtype=np.uint8)
MATRIX = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])


def test_hand_computed_matrix_iou_miou_and_accuracy():
    cm = ConfusionMatrix(3).update(PRED, TARGET)
    assert np.array_equal(cm.matrix, MATRIX)
    assert cm.total == 5
    np.testing.assert_allclose(cm.iou(), [50.0, 100 / 3, 50.0])
    assert cm.miou() == pytest.approx((50 + 100 / 3 + 50) / 3)
    assert cm.pixel_accuracy() == pytest.approx(60.0)
    assert np.array_equal(cm.class_pixels(), [2, 2, 1])


def test_ignore_pixels_are_skipped_whatever_the_prediction():
    target = np.array([255, 255, 1, 255])
    pred = np.array([0, 7, 1, 255])
    cm = ConfusionMatrix(2).update(pred, target)
    assert cm.total == 1 and cm.matrix[1, 1] == 1 and cm.invalid_predictions.sum() == 0
    assert math.isnan(cm.iou()[0]) and cm.iou()[1] == 100.0
    other = ConfusionMatrix(2, ignore_index=0).update(np.array([1, 1]), np.array([0, 1]))
    assert other.total == 1 and other.matrix[1, 1] == 1


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = ConfusionMatrix(4).update(PRED, TARGET)
    iou = cm.iou()
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((50 + 100 / 3 + 50) / 3)
    # class 3 predicted but never in the target: IoU 0, and it counts in the mean
    cm.update(np.array([3]), np.array([0]))
    assert cm.iou()[3] == 0.0
    # class 0 now: TP 1, FN 2 (predicted 1 and 3), FP 0 -> 33.33
    assert cm.iou()[0] == pytest.approx(100 / 3)
    assert cm.miou() == pytest.approx((100 / 3 + 100 / 3 + 50 + 0) / 4)


def test_predictions_outside_the_classes_count_as_wrong():
    target = np.array([1, 1, 1, 0])
    pred = np.array([1, 255, 9, 0])
    cm = ConfusionMatrix(3).update(pred, target)
    assert np.array_equal(cm.invalid_predictions, [0, 2, 0])
    assert np.array_equal(cm.matrix, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # class 1: TP 1, FN 2 (the invalid predictions), FP 0 -> 33.33; no class gets an FP from them
    np.testing.assert_allclose(cm.iou()[:2], [100.0, 100 / 3])
    assert math.isnan(cm.iou()[2])
    assert cm.pixel_accuracy() == pytest.approx(50.0)
    cm.update(np.array([-1], dtype=np.int64), np.array([2]))
    assert cm.invalid_predictions[2] == 1 and cm.iou()[2] == 0.0


def test_target_outside_the_classes_is_an_error():
    with pytest.raises(DatasetError, match=r"\[3, 7\].*outside 0..2"):
        ConfusionMatrix(3).update(np.array([0, 0, 0]), np.array([3, 7, 255]))
    with pytest.raises(DatasetError, match="outside"):
        ConfusionMatrix(3).update(torch.tensor([0]), torch.tensor([-1]))


def test_merge_and_add_sum_across_shards():
    whole = ConfusionMatrix(3).update(PRED, TARGET)
    a = ConfusionMatrix(3).update(PRED[0], TARGET[0])
    b = ConfusionMatrix(3).update(PRED[1], TARGET[1])
    total = a + b
    assert np.array_equal(total.matrix, whole.matrix)
    assert np.array_equal(a.matrix, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])  # operands unchanged
    assert total.miou() == pytest.approx(whole.miou())
    assert a.merge(b) is a and np.array_equal(a.matrix, whole.matrix)
    c = ConfusionMatrix(3)
    c += whole
    assert np.array_equal(c.counts, whole.counts)
    with pytest.raises(ValueError, match="3 classes"):
        ConfusionMatrix(4).merge(whole)
    with pytest.raises(ValueError, match="ignore"):
        ConfusionMatrix(3, ignore_index=0).merge(whole)


def test_torch_tensors_and_batches_give_the_same_counts():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(2, 16, 16))
    target[:, :2] = 255
    pred = rng.integers(0, 6, size=(2, 16, 16))  # 5 is out of range
    ref = ConfusionMatrix(5)
    for p, t in zip(pred, target, strict=True):
        ref.update(p, t)
    assert ref.total == 2 * 14 * 16
    via_torch = ConfusionMatrix(5).update(torch.from_numpy(pred), torch.from_numpy(target))
    mixed = ConfusionMatrix(5).update(torch.from_numpy(pred), target.astype(np.uint8))
    assert np.array_equal(via_torch.counts, ref.counts)
    assert np.array_equal(mixed.counts, ref.counts)
    # brute-force check of the matrix
    valid = target != 255
    expected = np.zeros((5, 6), np.int64)
    for t, p in zip(target[valid], pred[valid], strict=True):
        expected[t, min(p, 5)] += 1
    assert np.array_equal(ref.counts, expected)


def test_input_checks():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(3).update(np.zeros((2, 2), int), np.zeros((4,), int))
    with pytest.raises(TypeError, match="argmax"):
        ConfusionMatrix(3).update(np.zeros((2, 2), np.float32), np.zeros((2, 2), int))
    with pytest.raises(TypeError, match="integer"):
        ConfusionMatrix(3).update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))


def test_empty_matrix_and_reset():
    cm = ConfusionMatrix(2)
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())
    cm.update(np.array([1]), np.array([1]))
    cm.reset()
    assert cm.total == 0


def test_table_and_to_dict():
    cm = ConfusionMatrix(4).update(PRED, TARGET)
    text = cm.table(["background", "cat", "dog", "bird"])
    lines = text.splitlines()
    assert lines[0].split() == ["class", "IoU", "(%)", "pixels"]
    assert lines[2].split() == ["background", "50.00", "2"]
    assert lines[3].split() == ["cat", "33.33", "2"]
    assert lines[5].split() == ["bird", "-", "0"]
    assert lines[7].split() == ["mIoU", "44.44", "5"]
    assert lines[8].split() == ["pixel", "acc.", "60.00"]
    with pytest.raises(ValueError, match="2 class names for 4"):
        cm.table(["a", "b"])
    d = cm.to_dict(["background", "cat", "dog", "bird"])
    assert d["iou"]["bird"] is None and d["miou"] == pytest.approx(44.444, abs=1e-3)
    assert d["pixels"] == 5
