import numpy as np
import pytest

from jodiffusion.data.classes import ClassInfo, classes_named, classes_present
from jodiffusion.data.metadata import CAMVID_CLASSES
from jodiffusion.evaluation.joint_quality import evaluate_pairs

CLASSES = ClassInfo(names=("background", "circle", "star", "traffic_light"), background=0)


def test_classes_named_matches_whole_words_and_plurals():
    assert classes_named("a red circle and two stars", CLASSES) == {1, 2}
    assert classes_named("a traffic light near a circular thing", CLASSES) == {3}
    assert classes_named("the background only", CLASSES) == set()


def test_precision_recall_and_agreement_by_hand():
    mask_a = np.zeros((10, 10), np.uint8)
    mask_a[:5] = 1                      # circle present, as asked
    mask_b = np.zeros((10, 10), np.uint8)
    mask_b[0, 0] = 2                    # 1% star: present at min_fraction 0.005
    mask_b[5:, :] = 3                   # traffic light not asked for
    assert classes_present(mask_b, CLASSES, 0.02) == {3}
    images = [np.zeros((10, 10, 3), np.uint8)] * 2
    perfect = evaluate_pairs(["a circle", "a star and a circle"], images, [mask_a, mask_b], CLASSES,
                             predict=lambda ims: np.stack([mask_a, mask_b])[: len(ims)])
    # named: {1} and {1, 2}; present: {1} and {2, 3}; hits: 1 + 1 = 2
    assert perfect["prompt_precision"] == 100.0 * 2 / 3
    assert perfect["prompt_recall"] == 100.0 * 2 / 3
    assert perfect["agreement_miou"] == 100.0
    wrong = evaluate_pairs(["a circle"], images[:1], [mask_a], CLASSES,
                           predict=lambda ims: np.zeros((len(ims), 10, 10), np.uint8))
    assert wrong["agreement_iou"]["circle"] == 0.0 and wrong["agreement_iou"]["background"] == 50.0


def test_the_background_comes_from_the_class_metadata_at_any_id():
    street = ClassInfo(names=("sky", "road", "clutter", "car"), background=2)
    assert classes_named("sky, road, clutter and cars", street) == {0, 1, 3}
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 2                        # half clutter (the background)
    mask[5:] = 3                        # half car
    assert classes_present(mask, street) == {3}
    # asked: sky and car, then car alone; present: car (clutter never counts on either side). Two prompts
    # naming different classes: one prompt alone could not discriminate (not_applicable)
    black = [np.zeros((10, 10, 3), np.uint8)] * 2
    result = evaluate_pairs(["sky and car and clutter", "a car"], black, [mask, mask], street)
    assert result["prompt_precision"] == 100.0 and result["prompt_recall"] == pytest.approx(100 * 2 / 3)
    assert evaluate_pairs(["sky and car"], black[:1], [mask], street)["prompt_precision"] is None
    # the same names without a background: clutter is asked for and present
    plain = ClassInfo(names=street.names)
    assert classes_named("sky, road, clutter and cars", plain) == {0, 1, 2, 3}
    assert classes_present(mask, plain) == {2, 3}
    result = evaluate_pairs(["sky and car and clutter", "a car"], black, [mask, mask], plain)
    assert result["prompt_precision"] == 75.0 and result["prompt_recall"] == 75.0


def test_no_background_on_camvid_sky_is_counted():
    mask = np.zeros((10, 10), np.uint8)  # all Sky (id 0)
    mask[5:] = 3                         # Road
    assert classes_named("a road under the sky", CAMVID_CLASSES) == {0, 3}
    assert classes_present(mask, CAMVID_CLASSES) == {0, 3}
    result = evaluate_pairs(["sky", "road"], [np.zeros((10, 10, 3), np.uint8)] * 2, [mask, mask], CAMVID_CLASSES)
    assert result["prompt_precision"] == 50.0 and result["prompt_recall"] == 100.0
