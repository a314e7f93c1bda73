import numpy as np
import pytest
import torch

from jodiffusion.data.classes import ClassInfo
from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.generation.filters import (
    DISAGREEMENT,
    EMPTY,
    MISSING_CLASSES,
    MOSTLY_IGNORE,
    FilterConfig,
    PairFilter,
    build_pair_filter,
)

CLASSES = ClassInfo(names=("background", "cat", "dog"), background=0)
BG, CAT, DOG, IGN = 0, 1, 2, 255


def _image(h=8, w=8):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask():
    """8x8: cat in the left half of the top rows, dog in the right half, background below."""
    m = np.zeros((8, 8), np.uint8)
    m[:4, :4] = CAT
    m[:4, 4:] = DOG
    return m


def _probs(pred: np.ndarray, conf: np.ndarray, k: int = 3) -> np.ndarray:
    """(K, H, W) probabilities whose argmax is ``pred`` with probability ``conf``."""
    probs = np.empty((k, *pred.shape), np.float32)
    probs[:] = ((1 - conf) / (k - 1))[None]
    for c in range(k):
        probs[c][pred == c] = conf[pred == c]
    return probs


def _predicting(probs: np.ndarray):
    calls = []

    def predict_fn(images):
        calls.append(len(images))
        return np.stack([probs] * len(images))

    predict_fn.calls = calls
    return predict_fn


# --- degenerate pairs -------------------------------------------------------------------------------

def test_good_pair_is_kept_unchanged():
    f = PairFilter(FilterConfig(), CLASSES)
    r = f(_image(), _mask(), {CAT, DOG})
    assert r.keep and r.reason is None
    np.testing.assert_array_equal(r.mask, _mask())
    assert r.scores["foreground"] == pytest.approx(0.5)
    assert r.scores["ignore"] == 0.0 and r.scores["missing_classes"] == []


def test_empty_mask_is_dropped():
    f = PairFilter(FilterConfig(min_foreground=0.05), CLASSES)
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0] = CAT  # 1/64 < 5 %
    r = f(_image(), mask, set())
    assert not r.keep and r.reason == EMPTY


def test_empty_means_only_the_datasets_background_at_any_id_or_none():
    # background at id 2: a mask of almost only 2 is empty, a mask of only 0 is not
    moved = ClassInfo(names=("cat", "dog", "background"), background=2)
    f = PairFilter(FilterConfig(min_foreground=0.05), moved)
    mask = np.full((8, 8), 2, np.uint8)
    mask[0, 0] = 0
    r = f(_image(), mask, set())
    assert not r.keep and r.reason == EMPTY
    assert f(_image(), np.zeros((8, 8), np.uint8), {0}).keep
    # no background (CamVid-like: id 0 is Sky): an all-Sky mask is a real scene
    sky = ClassInfo(names=("Sky", "Road"))
    r = PairFilter(FilterConfig(min_foreground=0.05), sky)(_image(), np.zeros((8, 8), np.uint8), {0})
    assert r.keep and r.scores["foreground"] == 1.0


def test_mostly_ignore_is_dropped():
    f = PairFilter(FilterConfig(max_ignore=0.5), CLASSES)
    mask = _mask()
    mask[4:] = IGN
    mask[3] = IGN  # 40 / 64 ignore
    r = f(_image(), mask, {CAT})
    assert not r.keep and r.reason == MOSTLY_IGNORE
    assert r.scores["ignore"] == pytest.approx(40 / 64)


def test_missing_prompted_class_is_dropped_unless_not_required():
    mask = _mask()
    mask[:4, 4:] = BG  # the dog is gone
    r = PairFilter(FilterConfig(), CLASSES)(_image(), mask, {CAT, DOG})
    assert not r.keep and r.reason == MISSING_CLASSES and r.scores["missing_classes"] == ["dog"]
    assert PairFilter(FilterConfig(require_prompted_classes=False), CLASSES)(_image(), mask, {CAT, DOG}).keep


def test_a_prompted_class_below_the_minimum_fraction_counts_as_missing():
    mask = _mask()
    mask[:4, 4:] = BG
    mask[0, 7] = DOG  # 1/64 of the labelled pixels
    assert PairFilter(FilterConfig(min_class_fraction=0.01), CLASSES)(_image(), mask, {DOG}).keep
    assert not PairFilter(FilterConfig(min_class_fraction=0.05), CLASSES)(_image(), mask, {DOG}).keep


# --- consistency ------------------------------------------------------------------------------------

def _disagreeing_setup():
    """The segmenter agrees everywhere but on three groups of pixels (label -> prediction, confidence):
    row 0 of the cat (cat -> dog, 0.95), row 1 of the cat (cat -> dog, 0.8), row 6 (bg -> cat, 0.95)."""
    mask = _mask()
    pred, conf = mask.astype(np.int64).copy(), np.full((8, 8), 0.97, np.float32)
    pred[0, :4], conf[0, :4] = DOG, 0.95
    pred[1, :4], conf[1, :4] = DOG, 0.8
    pred[6, :], conf[6, :] = CAT, 0.95
    return mask, _probs(pred, conf)


def test_ignore_mode_sets_exactly_the_confidently_disagreeing_pixels_to_ignore():
    mask, probs = _disagreeing_setup()
    f = PairFilter(FilterConfig(confidence=0.9), CLASSES, predict_fn=_predicting(probs))
    r = f(_image(), mask, {CAT, DOG})
    expected = mask.copy()
    expected[0, :4] = IGN   # 0.95 >= 0.9
    expected[6, :] = IGN    # row 1 (0.8) stays
    assert r.keep
    np.testing.assert_array_equal(r.mask, expected)
    np.testing.assert_array_equal(mask, _mask())  # the input is not modified
    assert r.scores["ignored_pixels"] == 12
    assert r.scores["disagreement"] == pytest.approx(12 / 64)
    assert f.summary()["ignored_pixels"] == {"background": 8, "cat": 4, "dog": 0}


def test_class_wise_thresholds_protect_the_classes_they_name():
    mask, probs = _disagreeing_setup()
    cfg = FilterConfig(confidence=0.9, class_confidence={"cat": 0.99, "background": 0.5})
    r = PairFilter(cfg, CLASSES, predict_fn=_predicting(probs))(_image(), mask, {CAT, DOG})
    expected = mask.copy()
    expected[6, :] = IGN  # cat pixels need 0.99 now: rows 0 and 1 stay cat
    np.testing.assert_array_equal(r.mask, expected)
    cfg = FilterConfig(confidence=0.99, class_confidence={"cat": 0.75})
    r = PairFilter(cfg, CLASSES, predict_fn=_predicting(probs))(_image(), mask, {CAT, DOG})
    expected = mask.copy()
    expected[:2, :4] = IGN  # both cat rows (0.95 and 0.8 >= 0.75); background needs 0.99
    np.testing.assert_array_equal(r.mask, expected)


def test_ignore_mode_drops_a_pair_left_with_too_little_label():
    mask = _mask()
    pred = np.where(mask == BG, CAT, BG)  # disagrees everywhere
    probs = _probs(pred, np.full((8, 8), 0.99, np.float32))
    r = PairFilter(FilterConfig(), CLASSES, predict_fn=_predicting(probs))(_image(), mask, {CAT, DOG})
    assert not r.keep and r.reason == MOSTLY_IGNORE and r.scores["ignore"] == 1.0


def test_drop_mode_drops_above_max_disagreement_and_keeps_the_mask_otherwise():
    mask, probs = _disagreeing_setup()  # 12 / 64 = 0.1875 disagree
    keep = PairFilter(FilterConfig(consistency_mode="drop", max_disagreement=0.2), CLASSES,
                      predict_fn=_predicting(probs))(_image(), mask, {CAT, DOG})
    assert keep.keep
    np.testing.assert_array_equal(keep.mask, mask)
    f = PairFilter(FilterConfig(consistency_mode="drop", max_disagreement=0.1), CLASSES,
                   predict_fn=_predicting(probs))
    drop = f(_image(), mask, {CAT, DOG})
    assert not drop.keep and drop.reason == DISAGREEMENT
    assert drop.scores["disagreement"] == pytest.approx(12 / 64)
    assert f.summary()["ignored_pixels"] == {"background": 0, "cat": 0, "dog": 0}


def test_filter_batch_runs_the_segmenter_once_on_the_pairs_that_pass_and_counts_reasons():
    mask, probs = _disagreeing_setup()
    predict_fn = _predicting(probs)
    f = PairFilter(FilterConfig(), CLASSES, predict_fn=predict_fn)
    empty = np.zeros((8, 8), np.uint8)
    results = f.filter_batch([_image()] * 4, [mask, empty, mask, mask], [{CAT}, set(), {CAT}, {DOG, 5}])
    assert [r.keep for r in results] == [True, False, True, True]
    assert predict_fn.calls == [3]  # one call, without the empty pair
    s = f.summary()
    assert s["seen"] == 4 and s["kept"] == 3 and s["dropped"] == {EMPTY: 1} and s["dropped_total"] == 1
    assert s["thresholds"]["confidence"] == 0.9 and s["class_thresholds"]["cat"] == pytest.approx(0.9)
    assert s["ignored_pixels"] == {"background": 24, "cat": 12, "dog": 0}


def test_filter_batch_checks_its_inputs():
    f = PairFilter(FilterConfig(), CLASSES)
    with pytest.raises(ValueError, match="one of each"):
        f.filter_batch([_image()], [], [set()])
    with pytest.raises(ValueError, match="differ in size"):
        f(_image(4, 4), _mask(), set())


# --- configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [
    ({"min_foreground": -0.1}, "min_foreground"),
    ({"max_ignore": 1.5}, "max_ignore"),
    ({"min_class_fraction": 2}, "min_class_fraction"),
    ({"confidence": 0.0}, "confidence"),
    ({"max_disagreement": -1}, "max_disagreement"),
    ({"consistency_mode": "mask"}, "consistency_mode"),
    ({"class_confidence": {"cat": 1.2}}, r"class_confidence\[cat\]"),
    ({"class_confidence": [0.5]}, "class_confidence"),
    ({"consistency_segmenter": " "}, "consistency_segmenter"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FilterConfig(**kwargs)


def test_disabled_filter_is_none():
    assert build_pair_filter(FilterConfig(enabled=False), CLASSES, "cpu") is None
    assert build_pair_filter(FilterConfig(), CLASSES, "cpu").predict_fn is None


def test_unknown_class_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="horse.*valid names: background, cat, dog"):
        build_pair_filter(FilterConfig(class_confidence={"horse": 0.9}), CLASSES, "cpu")


def test_missing_segmenter_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="train-seg"):
        build_pair_filter(FilterConfig(consistency_segmenter=str(tmp_path / "nope")), CLASSES, "cpu")


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory):
    from jodiffusion.segmentation.models import SegmenterConfig, build_segmenter, save_segmenter

    torch.manual_seed(0)
    model, _ = build_segmenter("small", CLASSES.num_classes)
    folder = tmp_path_factory.mktemp("seg") / "segmenter"
    return save_segmenter(model.eval(), SegmenterConfig(model="small", num_classes=3,
                                                        class_names=list(CLASSES.names)), folder)


def test_a_real_exported_segmenter_overrules_the_pixels_it_contradicts(segmenter_dir):
    from jodiffusion.segmentation.inference import predict_proba

    images = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, :8] = CAT
    masks[:, 8:, :8] = DOG
    probs = predict_proba(segmenter_dir, images, device="cpu")
    # an untrained net is barely sure of anything: a median threshold leaves both sides non-empty
    threshold = float(np.quantile(probs.max(1), 0.5))
    f = build_pair_filter(FilterConfig(confidence=threshold, max_ignore=1.0), CLASSES, "cpu")
    f_seg = build_pair_filter(FilterConfig(confidence=threshold, max_ignore=1.0,
                                           consistency_segmenter=str(segmenter_dir)), CLASSES, "cpu")
    assert f is not None and f_seg.segmenter == str(segmenter_dir)
    results = f_seg.filter_batch(list(images), list(masks), [{CAT, DOG}] * 2)
    overruled = 0
    for r, mask, p in zip(results, masks, probs, strict=True):
        bad = (p.argmax(0) != mask) & (p.max(0) >= threshold)
        np.testing.assert_array_equal(r.mask, np.where(bad, IGN, mask))
        assert r.keep and r.scores["ignored_pixels"] == int(bad.sum())
        overruled += int(bad.sum())
    assert 0 < overruled < masks.size


def test_segmenter_with_other_classes_is_refused(segmenter_dir):
    other = ClassInfo(names=("background", "cat", "horse"))
    with pytest.raises(ConfigError, match="trained on classes"):
        build_pair_filter(FilterConfig(consistency_segmenter=str(segmenter_dir)), other, "cpu")


def test_config_loads_from_overrides_with_class_wise_thresholds():
    from jodiffusion.config.loader import load_config

    cfg = load_config(FilterConfig, overrides=["class_confidence={cat: 0.95}", "consistency_mode=drop"])
    assert cfg.class_confidence == {"cat": 0.95} and cfg.consistency_mode == "drop"
    with pytest.raises(ConfigError, match="max_ignore"):
        load_config(FilterConfig, overrides=["max_ignore=3"])


def test_the_models_padding_does_not_count_as_ignore():
    """Square data in a wide frame: generated masks are ignore in the padding columns by design; the
    shares of foreground and ignore are taken over the picture inside them."""
    mask = np.zeros((8, 16), np.uint8)
    mask[:, :5] = mask[:, 11:] = IGN   # 10 of 16 columns padding
    mask[:4, 5:8] = CAT
    f = PairFilter(FilterConfig(max_ignore=0.5), CLASSES)
    assert f(_image(8, 16), mask, {CAT}).reason == MOSTLY_IGNORE   # 62% of the frame is ignore
    f.padding = (0, 0, 5, 5)
    r = f(_image(8, 16), mask, {CAT})
    assert r.keep and r.scores["ignore"] == 0.0 and r.scores["foreground"] == pytest.approx(12 / 48)


# --- filtering a generated folder after the fact (the pipeline's "+filter" candidates) -----------------

def _generated_folder(root):
    """A folder as `generate` writes it: four pairs, their prompts' classes in manifest.jsonl."""
    import json

    from jodiffusion.data.layout import write_classes, write_pair

    write_classes(root, CLASSES)
    no_dog = _mask()
    no_dog[no_dog == DOG] = CAT
    pairs = {"a": (_mask(), ["cat", "dog"]), "b": (np.zeros((8, 8), np.uint8), ["cat"]),
             "c": (no_dog, ["cat", "dog"]), "d": (_mask(), ["cat"])}
    for i, (stem, (mask, _)) in enumerate(pairs.items()):
        write_pair(root, "train", stem, np.full((8, 8, 3), 40 * i, np.uint8), mask, CLASSES)
    (root / "manifest.jsonl").write_text("".join(
        json.dumps({"index": i, "stem": s, "kept": True, "prompt_classes": c}) + "\n"
        for i, (s, (_, c)) in enumerate(pairs.items())))
    return root


def test_filter_folder_writes_the_kept_pairs_and_counts_the_rest(tmp_path, segmenter_dir):
    import json

    from jodiffusion.data.readers.folder import read_folder
    from jodiffusion.generation.filter_folder import filter_folder

    source = _generated_folder(tmp_path / "generated")
    summary = filter_folder(source, tmp_path / "kept", FilterConfig(consistency_mode="drop"), progress=False)
    assert summary["seen"] == 4 and summary["kept"] == summary["pairs"] == 2
    assert summary["dropped"] == {EMPTY: 1, MISSING_CLASSES: 1}  # c: the prompt asked for a dog it has not
    kept = read_folder(tmp_path / "kept", "train")
    assert [kept.stem(i) for i in range(len(kept))] == ["a", "d"]
    assert (tmp_path / "kept" / "images" / "train" / "d.png").read_bytes() == \
        (source / "images" / "train" / "d.png").read_bytes()
    np.testing.assert_array_equal(kept.load_mask(0), _mask())
    assert json.loads((tmp_path / "kept" / "filter.json").read_text())["kept"] == 2
    decisions = [json.loads(r) for r in (tmp_path / "kept" / "manifest.jsonl").read_text().splitlines()]
    assert [(r["stem"], r["kept"], r["reason"]) for r in decisions] == [
        ("a", True, None), ("b", False, EMPTY), ("c", False, MISSING_CLASSES), ("d", True, None)]

    # with the real-data segmenter as judge and no tolerance, every pair it contradicts goes too; run again
    # into the same folder, which is replaced whole
    strict = FilterConfig(consistency_mode="drop", consistency_segmenter=str(segmenter_dir), confidence=1e-6,
                          max_disagreement=0.0)
    summary = filter_folder(source, tmp_path / "kept", strict, progress=False)
    assert summary["dropped"].get(DISAGREEMENT, 0) == 2 and summary["kept"] == 0
    assert not list((tmp_path / "kept" / "images" / "train").iterdir())
