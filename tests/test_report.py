"""The demo's report: PNG figures (sizes follow rows x columns, content is the coloured masks), the HTML
page (every metric and figure, escaping, n/a for missing values) and the page in a real headless browser."""

import json
import math
import re

import numpy as np
import pytest
from chromium_helpers import dump_dom, find_chromium, images_loaded
from PIL import Image
from tiny_pipeline import build_tiny_pipeline

from jodiffusion.data.classes import ClassInfo
from jodiffusion.experiments.model_figures import trajectory_frames
from jodiffusion.report.figures import (
    class_histogram,
    frame_indices,
    pairs_figure,
    refinement_figure,
    trajectory_figure,
)
from jodiffusion.report.html import SUMMARY_ROWS, format_seconds, format_value, write_report
from jodiffusion.report.stats_plots import draw_class_histogram
from jodiffusion.report.viz import CHAR_W, LINE_H, colorize, grid, overlay, pairs_grid

CLASSES = ClassInfo(("background", "circle", "square"))
PAD = 4  # viz.grid's default


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


def grid_size(n_rows: int, n_cols: int, tile: int, scale: int, title_lines: int, label_chars: int) -> tuple[int, int]:
    """(width, height) of viz.grid's canvas, from its layout rules."""
    side = tile * scale
    label_w = 8 + CHAR_W * label_chars if label_chars else 0
    title_h = 2 + LINE_H * title_lines
    return label_w + n_cols * (side + PAD) + PAD, title_h + n_rows * (side + PAD) + PAD


def random_pairs(n: int, size: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    masks = rng.integers(0, CLASSES.num_classes, (n, size, size)).astype(np.uint8)
    masks[:, :2, :2] = CLASSES.ignore_index
    return images, masks


def open_png(path) -> Image.Image:
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    im = Image.open(path)
    im.load()
    return im


# -- figures ---------------------------------------------------------------------------------------
def test_pairs_grid_draws_one_row_per_pair_image_mask_and_overlay():
    images, masks = random_pairs(3)
    im = pairs_grid(images, masks, CLASSES, ["one", "two", "three"])
    assert im.size == grid_size(3, 3, 16, 2, title_lines=1, label_chars=len("three"))
    label_w = im.size[0] - (3 * (32 + PAD) + PAD)
    y = 14 + PAD + 2 * (32 + PAD)  # the last row
    tiles = [np.asarray(im)[y: y + 32, label_w + PAD + c * (32 + PAD):][:, :32] for c in range(3)]
    up = np.ones((2, 2, 1), np.uint8)
    expected = [images[2], colorize(masks[2], CLASSES), overlay(images[2], masks[2], CLASSES)]
    assert all(np.array_equal(t, np.kron(e, up)) for t, e in zip(tiles, expected, strict=True))
    # max_rows and the number of titles both cap the rows
    assert pairs_grid(images, masks, CLASSES, ["one", "two", "three"], max_rows=2).size[1] == grid_size(
        2, 3, 16, 2, 1, 0)[1]
    assert pairs_grid(images, masks, CLASSES, ["one"]).size[1] == grid_size(1, 3, 16, 2, 1, 0)[1]
    with pytest.raises(ValueError, match="at least one"):
        pairs_grid(images[:0], masks[:0], CLASSES, [])


def test_pairs_figure_has_a_row_per_pair_and_shows_the_coloured_masks(tmp_path):
    images, masks = random_pairs(3)
    prompts = ["a circle", "a red square", "a circle and a square"]
    path = pairs_figure(images, masks, prompts, CLASSES, tmp_path / "pairs.png", scale=2)
    im = open_png(path)
    assert im.size == grid_size(3, 3, 16, 2, title_lines=1, label_chars=len("a circle and a square"))
    # the mask tile of row 2 is that mask coloured and scaled up
    label_w = im.size[0] - (3 * (32 + PAD) + PAD)
    x, y = label_w + PAD + (32 + PAD), 14 + PAD + (32 + PAD)
    tile = np.asarray(im)[y: y + 32, x: x + 32]
    assert np.array_equal(tile, np.kron(colorize(masks[1], CLASSES), np.ones((2, 2, 1), np.uint8)))
    # max_rows caps the rows; long prompts wrap instead of widening the figure without bound
    path = pairs_figure(images, masks, ["word " * 40] * 3, CLASSES, tmp_path / "two.png", max_rows=2, scale=2)
    width, height = open_png(path).size
    assert height == grid_size(2, 3, 16, 2, 1, 0)[1] and width <= grid_size(2, 3, 16, 2, 1, 28)[0]


def test_refinement_figure_columns_with_and_without_truth(tmp_path):
    images, before = random_pairs(4)
    after = before.copy()
    after[:, 4:8, 4:8] = 1
    path = refinement_figure(images, before, after, CLASSES, tmp_path / "refine.png", scale=3)
    assert open_png(path).size == grid_size(4, 3, 16, 3, title_lines=1, label_chars=len("changed"))
    path = refinement_figure(images, before, after, CLASSES, tmp_path / "refine4.png", truths=before, max_rows=2,
                             scale=3)
    assert open_png(path).size == grid_size(2, 4, 16, 3, title_lines=1, label_chars=len("changed"))


def test_frame_indices_are_even_and_end_on_the_last_step():
    assert frame_indices(25, 6) == [0, 5, 10, 14, 19, 24]
    assert frame_indices(5, 3) == [0, 2, 4]
    assert frame_indices(4, 10) == [0, 1, 2, 3]
    assert frame_indices(7, 1) == [6]
    with pytest.raises(ValueError):
        frame_indices(5, 0)


@pytest.fixture(scope="module")
def tiny_pipe():
    return build_tiny_pipeline(CLASSES)


def test_trajectory_figure_has_an_image_and_a_mask_row_per_prompt_and_a_column_per_frame(tmp_path, tiny_pipe):
    prompts = ["a red circle", "a blue square"]  # short: row titles "1: a red circle" stay on one line
    drawn = tiny_pipe(prompts, seed=0, trajectory_every=1)
    frames = trajectory_frames(tiny_pipe, drawn.trajectory, num_frames=3)
    assert frames.images.shape == (3, 2, 32, 32, 3) and frames.masks.shape == (3, 2, 32, 32)
    path = trajectory_figure(frames, prompts, CLASSES, tmp_path / "traj.png", scale=2)
    im = open_png(path)
    assert im.size == grid_size(4, 3, 32, 2, title_lines=2, label_chars=len("2: a blue square"))
    # the masks' rows are the decoded masks in the classes' colours
    top, left = 2 + 2 * LINE_H + 32 * 2 + 2 * PAD, 8 + CHAR_W * len("2: a blue square") + PAD
    mask_tile = np.asarray(im)[top:top + 64, left:left + 64]
    assert (mask_tile[::2, ::2] == colorize(frames.masks[0, 0], CLASSES)).all()
    # more frames than sampler steps: one column per step
    drawn = tiny_pipe(prompts[:1], seed=1, sampler=tiny_pipe.sampler.override(steps=2), trajectory_every=1)
    frames = trajectory_frames(tiny_pipe, drawn.trajectory, num_frames=6)
    path = trajectory_figure(frames, prompts[:1], CLASSES, tmp_path / "t2.png")
    assert open_png(path).size == grid_size(2, 2, 32, 2, title_lines=2, label_chars=len("1: a red circle"))
    with pytest.raises(ValueError, match="at least one prompt"):
        trajectory_figure(frames, [], CLASSES, tmp_path / "none.png")


def test_trajectory_figure_columns_name_the_step_and_timestep_the_trajectory_gives(tmp_path, tiny_pipe, monkeypatch):
    import jodiffusion.report.figures as figures

    drawn = tiny_pipe(["a red circle"], seed=0, trajectory_every=2)  # steps 0, 2 and 4 of 5
    frames = trajectory_frames(tiny_pipe, drawn.trajectory, num_frames=3)
    columns = []
    monkeypatch.setattr(figures, "grid", lambda rows, cols, **kw: columns.extend(cols) or grid(rows, cols, **kw))
    trajectory_figure(frames, ["a red circle"], CLASSES, tmp_path / "traj.png")
    t = drawn.trajectory.timesteps
    assert columns == [f"step 1/5\nt={t[0]}", f"step 3/5\nt={t[1]}", f"step 5/5\nt={t[2]}"]


def test_class_histogram_draws_the_frequencies_it_is_given(tmp_path):
    real, synth = np.array([0.6, 0.3, 0.1]), np.array([0.5, 0.25, 0.25])
    path = class_histogram(real, synth, CLASSES, tmp_path / "hist.png")
    width, height = open_png(path).size
    assert width > 50 and height > 50
    # the bars the report's figure is drawn from: one per class and set, real first, at the given heights
    ax = draw_class_histogram(real, synth, CLASSES.names).axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([*real, *synth])
    assert [label.get_text() for label in ax.get_xticklabels()] == list(CLASSES.names)
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["real", "synthetic"]
    # one set alone: only its bars
    ax = draw_class_histogram(None, synth, CLASSES.names).axes[0]
    assert [bar.get_height() for bar in ax.patches] == pytest.approx(synth)


# -- html ------------------------------------------------------------------------------------------
def test_format_helpers():
    assert format_seconds(0) == "0:00" and format_seconds(75.4) == "1:15" and format_seconds(59.6) == "1:00"
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(None) == format_seconds(float("nan")) == format_seconds("x") == "n/a"
    assert format_value(71.234, "percent") == "71.2%" and format_value(12345, "count") == "12,345"
    assert format_value(None, "percent") == format_value(math.nan, "percent") == format_value(True, "percent") == "n/a"


def _make_figures(folder, names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / name)


def test_html_holds_every_metric_and_figure_and_escapes_text(tmp_path):
    names = ["pairs.png", "figures/trajectory.png", "refine.png"]
    _make_figures(tmp_path, names)
    metrics = {key: 10.0 + i for i, (key, _, _) in enumerate(SUMMARY_ROWS)}
    metrics.update(raw_mask_miou=55.55, refined_mask_miou=66.66, vae_parameters=123456,
                   refine_summary={"masks": 8, "changed_fraction": 0.25}, note="<b>bold</b>",
                   stage_seconds={"make-data": 1.0})
    evil = "a <script>alert('x')</script> & co"
    figures = [(names[0], f"Generated pairs; prompt: {evil}"), (names[1], "Denoising trajectory"),
               (str(tmp_path / names[2]), "Mask optimisation")]  # an absolute path inside the folder is fine
    stage_times = {"make-data": 3.2, "train-vae": 125.0, "generate": 61}
    path = write_report(tmp_path, metrics, figures, title=f"Demo {evil}", stage_times=stage_times, classes=CLASSES)
    assert path == tmp_path / "index.html"
    text = path.read_text(encoding="utf-8")
    for i, _ in enumerate(SUMMARY_ROWS):
        assert f"{10.0 + i:.1f}%" in text
    for value in ("55.5%", "66.7%", "123,456", "refine_summary.changed_fraction", "0.25", "&lt;b&gt;bold"):
        assert value in text
    for label, seconds in (("train-vae", "2:05"), ("generate", "1:01"), ("make-data", "0:03"), ("total", "3:09")):
        assert re.search(rf">{re.escape(label)}</th><td class=\"value\">{seconds}<", text), label
    for name in names:
        assert f'src="{name}"' in text
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in text
    assert "<title>Demo a &lt;script&gt;" in text
    for name in CLASSES.names:
        assert name in text
    assert "rgb(255, 255, 255)" in text  # the ignore colour in the legend
    assert "http://" not in text and "https://" not in text  # nothing external
    assert not list(tmp_path.glob(".index.html.*"))  # written atomically: no temporary left behind


def test_html_shows_missing_values_and_figures_without_failing(tmp_path):
    path = write_report(tmp_path, {"vae_reconstruction_miou": float("nan"), "prompt_recall": None},
                        [("absent.png", "not drawn")], title="Empty", stage_times=None)
    text = path.read_text()
    assert text.count("n/a") >= len(SUMMARY_ROWS) + 1  # every summary value and the total time
    assert "figure not written: absent.png" in text and '<img src="absent.png"' not in text
    # stage times default to metrics["stage_seconds"]
    (tmp_path / "metrics.json").write_text(json.dumps({}))
    text = write_report(tmp_path, {"stage_seconds": {"refine": 70}}, [], title="T").read_text()
    assert "1:10" in text and 'href="metrics.json"' in text
    with pytest.raises(ValueError, match="outside the report folder"):
        write_report(tmp_path, {}, [("../elsewhere.png", "x")], title="T")
    with pytest.raises(ValueError, match="outside the report folder"):
        write_report(tmp_path / "sub", {}, [(str(tmp_path / "x.png"), "x")], title="T")


# -- in a browser ----------------------------------------------------------------------------------
def test_report_opens_in_headless_chromium_with_every_image_loaded(tmp_path):
    browser = find_chromium()
    if browser is None:
        pytest.skip("headless Chromium not installed: run scripts/install_chromium.sh")
    folder = tmp_path / "report folder"  # a space: the file:// URL and the relative srcs must be quoted
    images, masks = random_pairs(2)
    pairs_figure(images, masks, ["a <circle>", "a square"], CLASSES, folder / "figures" / "pairs grid.png")
    refinement_figure(images, masks, masks, CLASSES, folder / "refine.png")
    page = write_report(folder, {"vae_reconstruction_miou": 91.0},
                        [("figures/pairs grid.png", "pairs"), ("refine.png", "refinement")],
                        title="Browser check", stage_times={"demo": 5})
    dom = dump_dom(browser, page, tmp_path / "profile")
    assert "<h1>Browser check</h1>" in dom, dom[:2000]
    assert images_loaded(dom) == "2", f"images decoded by the browser: {images_loaded(dom)} of 2"
    # the check is not vacuous: a PNG the browser cannot decode is not counted
    (folder / "refine.png").write_bytes(b"not a png")
    assert images_loaded(dump_dom(browser, page, tmp_path / "profile")) == "1"


def test_real_vs_generated_puts_each_real_pair_beside_a_generated_one(tmp_path):
    from jodiffusion.report.figures import real_vs_generated

    real_images, real_masks = random_pairs(3, size=32)
    gen_images, gen_masks = random_pairs(3, size=32, seed=1)
    path = real_vs_generated(list(zip(real_images, real_masks, strict=True)),
                             list(zip(gen_images, gen_masks, strict=True)), CLASSES, tmp_path / "rg.png", scale=1)
    im = np.asarray(open_png(path))
    assert (im.shape[1], im.shape[0]) == grid_size(3, 4, 32, 1, title_lines=1, label_chars=0)
    # row 1: the real image in column 0, the generated image in column 2
    y = 2 + LINE_H + PAD + (32 + PAD)
    assert np.array_equal(im[y: y + 32, PAD: PAD + 32], real_images[1])
    x = PAD + 2 * (32 + PAD)
    assert np.array_equal(im[y: y + 32, x: x + 32], gen_images[1])
    with pytest.raises(ValueError, match="at least one"):
        real_vs_generated([], [], CLASSES, tmp_path / "none.png")
