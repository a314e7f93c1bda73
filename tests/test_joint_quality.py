import numpy as np

from jodiffusion.data.classes import ClassInfo
from jodiffusion.evaluation.joint_quality import classes_named, classes_present, evaluate_pairs

CLASSES = ClassInfo(names=("background", "circle", "star", "traffic_light"))


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
