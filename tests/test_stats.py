import json

import numpy as np
import pytest
from PIL import Image

from jodiffusion.cli.main import main
from jodiffusion.data.base import SegmentationDataset
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.errors import DatasetError
from jodiffusion.evaluation.dataset_stats import (
    PLOT_FILES,
    STATS_FILE,
    DatasetStats,
    compare_stats,
    compute_stats,
    write_stats_report,
)
from jodiffusion.report.stats_plots import class_histogram_figure

CLASSES = ClassInfo(names=("background", "cat", "dog"), background=0)


class MaskList(SegmentationDataset):
    def __init__(self, masks, classes=CLASSES):
        self.masks, self.classes = masks, classes

    def __len__(self):
        return len(self.masks)

    def load_mask(self, index):
        return self.masks[index]


def _masks():
    """Mask A (4x4): two cats touching only at a corner (one 8-connected object of 2 px), one dog of
    3 px, one ignore pixel. Mask B (2x4): background and one cat of 4 px."""
    a = np.zeros((4, 4), np.uint8)
    a[0, 0] = a[1, 1] = 1
    a[3, 1:4] = 2
    a[0, 3] = 255
    b = np.zeros((2, 4), np.uint8)
    b[:, 2:] = 1
    return [a, b]


@pytest.fixture(scope="module")
def shapes_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("stats")
    real = write_shapes_dataset(base / "real", num_train=6, num_val=2, resolution=32, seed=0, progress=False)
    synthetic = write_shapes_dataset(base / "synthetic", num_train=5, num_val=2, resolution=32, seed=3,
                                     progress=False)
    return real, synthetic


def test_frequencies_and_object_sizes_of_hand_made_masks():
    s = compute_stats(MaskList(_masks()), progress=False)
    assert s.num_images == 2 and s.total_pixels == 24 and s.ignore_pixels == 1 and s.invalid_pixels == 0
    # labelled pixels: background 10 + 4, cat 2 + 4, dog 3 -> 23
    np.testing.assert_array_equal(s.pixel_counts, [14, 6, 3])
    np.testing.assert_allclose(s.pixel_frequency(), np.array([14, 6, 3]) / 23)
    np.testing.assert_allclose(s.image_frequency(), [1.0, 1.0, 0.5])
    assert s.object_sizes[1] == pytest.approx([2 / 16, 4 / 8])
    assert s.object_sizes[2] == pytest.approx([3 / 16])
    assert s.object_sizes[0] == pytest.approx([10 / 16, 4 / 8])  # A's background is one 8-connected region
    assert s.classes_per_image == [2, 1]  # background does not count


def test_classes_per_image_leaves_out_the_datasets_background_only():
    masks = [np.array([[0, 1], [2, 2]], np.uint8), np.array([[2, 2], [2, 2]], np.uint8)]
    moved = ClassInfo(names=("cat", "dog", "background"), background=2)
    assert compute_stats(MaskList(masks, moved), progress=False).classes_per_image == [2, 0]
    none = ClassInfo(names=("Sky", "Road", "Car"))  # CamVid-like: every class counts
    assert compute_stats(MaskList(masks, none), progress=False).classes_per_image == [3, 1]


def test_values_outside_the_label_space_are_counted_as_invalid():
    s = DatasetStats(CLASSES)
    s.update(np.array([[0, 7], [255, 1]], np.uint8))
    assert s.invalid_pixels == 1 and s.ignore_pixels == 1 and s.pixel_counts.tolist() == [1, 1, 0]


def test_json_holds_every_statistic_and_the_comparison():
    real = compute_stats(MaskList(_masks()), name="real", progress=False)
    synth = compute_stats(MaskList([np.zeros((4, 4), np.uint8)]), name="synthetic", progress=False)
    report = compare_stats(real, synth)
    assert set(report) == {"real", "synthetic", "comparison"}
    r = report["real"]
    assert set(r) >= {"name", "num_images", "classes", "pixel_frequency", "image_frequency", "object_sizes",
                      "classes_per_image", "ignore_fraction", "invalid_pixels"}
    assert r["object_sizes"]["cat"]["count"] == 2 and r["object_sizes"]["cat"]["median"] == pytest.approx(5 / 16)
    assert r["classes_per_image"] == {"mean": 1.5, "histogram": {"0": 0, "1": 1, "2": 1}}
    assert report["synthetic"]["object_sizes"]["dog"]["count"] == 0
    c = report["comparison"]
    assert c["classes_never_in_synthetic"] == ["cat", "dog"]
    assert c["pixel_frequency_tv_distance"] == pytest.approx(9 / 23)
    assert c["classes_per_image_mean_difference"] == pytest.approx(-1.5)
    assert compare_stats(real, None)["comparison"] is None


def test_sets_with_other_classes_are_not_compared():
    other = compute_stats(MaskList(_masks(), ClassInfo(names=("background", "cat", "horse"))), progress=False)
    with pytest.raises(DatasetError, match="do not match"):
        compare_stats(compute_stats(MaskList(_masks()), progress=False), other)


def _is_png(path):
    with Image.open(path) as im:
        im.verify()
        return im.format == "PNG"


def test_report_writes_json_and_valid_pngs(tmp_path):
    real = compute_stats(MaskList(_masks()), name="real", progress=False)
    synth = compute_stats(MaskList(_masks()[:1]), name="synthetic", progress=False)
    report = write_stats_report(real, synth, tmp_path / "out")
    data = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    assert data["files"] == PLOT_FILES and report["comparison"]["pixel_frequency_tv_distance"] >= 0
    for name in PLOT_FILES.values():
        assert _is_png(tmp_path / "out" / name)
    single = write_stats_report(None, synth, tmp_path / "one")  # one set alone also works
    assert single["real"] is None and _is_png(tmp_path / "one" / PLOT_FILES["object_sizes"])


def test_class_histogram_figure_is_reusable(tmp_path):
    path = class_histogram_figure([0.5, 0.3, 0.2], None, CLASSES.names, tmp_path / "h.png")
    assert _is_png(path)
    with pytest.raises(ValueError, match="one per class"):
        class_histogram_figure([0.5, 0.5], [0.1, 0.2, 0.7], CLASSES.names, tmp_path / "bad.png")


def test_cli_compares_real_and_synthetic_folders(tmp_path, shapes_dirs, capsys):
    real, synthetic = shapes_dirs
    out = tmp_path / "stats"
    assert main(["stats", "--real", str(real), "--synthetic", str(synthetic), "--out", str(out)]) == 0
    data = json.loads((out / STATS_FILE).read_text())
    assert data["real"]["num_images"] == 6 and data["synthetic"]["num_images"] == 5
    assert data["comparison"] is not None and data["real"]["source"] == f"{real} (train)"
    for name in PLOT_FILES.values():
        assert _is_png(out / name)
    assert "stats.json" in capsys.readouterr().out


def test_cli_real_by_dataset_name_alone(tmp_path):
    out = tmp_path / "stats"
    assert main(["stats", "--real", "shapes", "--resolution", "32", "--num-images", "4", "--real-split", "val",
                 "--out", str(out)]) == 0
    data = json.loads((out / STATS_FILE).read_text())
    assert data["real"]["num_images"] == 4 and data["synthetic"] is None and data["comparison"] is None


def test_cli_synthetic_alone_with_max_images(tmp_path, shapes_dirs):
    out = tmp_path / "stats"
    assert main(["stats", "--synthetic", str(shapes_dirs[1]), "--max-images", "2", "--out", str(out)]) == 0
    assert json.loads((out / STATS_FILE).read_text())["synthetic"]["num_images"] == 2


def test_cli_errors(tmp_path, capsys):
    assert main(["stats", "--synthetic", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["stats", "--real", "voc", "--out", str(tmp_path / "o")]) == 1
    assert "--real-root" in capsys.readouterr().err
    assert main(["stats", "--out", str(tmp_path / "o")]) == 1
    assert "--real, --synthetic or both" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["stats", "--synthetic", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "error:" in capsys.readouterr().err
