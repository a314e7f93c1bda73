"""Real data as it is found: pairs of any aspect ratio fitted without losing a pixel (and
counted), figures that cannot discriminate reported as not applicable, warm-ups longer than the run,
progress bars in log files, and stage records that hold only the settings that apply."""

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jodiffusion.cli.main import main
from jodiffusion.data.classes import ClassInfo
from jodiffusion.data.config import DataConfig
from jodiffusion.data.importer.folder import import_folder
from jodiffusion.data.importer.options import ImportOptions
from jodiffusion.data.layout import write_classes, write_pair
from jodiffusion.data.transforms import FitCounter, describe_fit, fit_change, resize_pair
from jodiffusion.engine.config import TrainConfig
from jodiffusion.engine.runtime import make_lr_scheduler
from jodiffusion.evaluation.joint_quality import evaluate_pairs
from jodiffusion.experiments.summary import print_summary
from jodiffusion.report.html import render_report
from jodiffusion.utils.progress import LineProgress, progress_bar

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HORSE = ClassInfo(names=("background", "horse"), background=0)


# --- letterbox ------------------------------------------------------------------------------------------

def portrait_pair(h: int = 40, w: int = 20):
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 4] = 1   # the horse's head at the top: a centre crop to a wide frame cuts it off
    return image, mask


def test_letterbox_keeps_every_pixel_and_pads_the_mask_with_ignore():
    image, mask = portrait_pair()
    out_image, out_mask = resize_pair(image, mask, (20, 40), "letterbox", ignore_index=255)
    assert out_image.shape == (20, 40, 3) and out_mask.shape == (20, 40)
    # scaled by 1/2 into the middle 10 columns; 15 columns of padding each side
    assert (out_mask[:, :15] == 255).all() and (out_mask[:, 25:] == 255).all()
    assert (out_image[:, :15] == 0).all() and (out_image[:, 25:] == 0).all()
    inside = out_mask[:, 15:25]
    assert set(np.unique(inside)) == {0, 1} and (inside[:5] == 1).all()  # the head is still there
    # the same pair centre-cropped loses the head entirely
    _, cropped = resize_pair(image, mask, (20, 40), "crop")
    assert 1 not in cropped
    with pytest.raises(ValueError, match="resize mode 'stretch'"):
        resize_pair(image, mask, (20, 40), "stretch")


def test_fit_change_and_counter_from_sizes():
    assert fit_change(40, 20, (20, 40), "letterbox") == {"padded": 0.75, "lost": 0.0}
    assert fit_change(40, 20, (20, 40), "crop") == {"padded": 0.0, "lost": 0.75}
    assert fit_change(30, 40, (24, 32), "letterbox") == {"padded": 0.0, "lost": 0.0}  # same aspect
    counter = FitCounter((20, 40), "letterbox")
    for stem, (h, w) in {"a": (40, 20), "b": (10, 20), "c": (20, 20)}.items():
        counter.add(stem, h, w)
    fit = counter.to_dict()
    assert fit["pairs"] == 3 and fit["changed"] == 2 and fit["worst"]["stem"] == "a"
    assert fit["padded_share"] == pytest.approx((0.75 + 0 + 0.5) / 3, abs=1e-4) and fit["lost_share"] == 0
    assert "2 of 3 pairs letterboxed to 20x40" in describe_fit(fit) and "nothing cropped" in describe_fit(fit)
    # median aspect 1:1 (0.5, 1, 2): at height 20 the data asks for width 16 (a multiple of 8), not 40
    assert fit["suggested_width"] == 16 and "suggests data.width=16" in describe_fit(fit)


def mixed_folder(root: Path, classes: ClassInfo = HORSE) -> Path:
    """Portrait, wide, square and 4:3 pairs (train 8, val 4), a horse in each."""
    sizes = [(40, 20), (24, 64), (32, 32), (24, 32)]
    rng = np.random.default_rng(0)
    write_classes(root, classes)
    for split, n in (("train", 8), ("val", 4)):
        for i in range(n):
            h, w = sizes[i % 4]
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
            image[mask == 1] = (200, 120, 40)
            write_pair(root, split, f"{split}{i}", image, mask, classes)
    return root


def test_pipeline_on_a_mixed_aspect_folder_letterboxes_counts_and_says_so(tmp_path, capsys, caplog):
    """Nothing is cropped silently: the summary, metrics.json, the report and the stage record say what
    was padded; val masks keep every labelled pixel; two classes make prompt adherence n/a, not 100."""
    data = mixed_folder(tmp_path / "horses")
    out = tmp_path / "run"
    args = ["pipeline", "--preset", "camvid-cpu", "data.name=folder", f"data.root={data}", f"output_dir={out}",
            "data.resolution=24", "data.width=32",
            "vae.overrides=[train.steps=2,model.base_channels=8,model.max_channels=16]",
            "joint.overrides=[train.steps=2,train.batch_size=4,model.preset=tiny,text.dim=32,text.num_layers=1,"
            "text.num_heads=2,codec.kind=pca,codec.components=6,codec.fit_images=4,sampler.steps=2,"
            "probe_every=0]",
            "synthetic_pairs=4", "generate.overrides=[steps=2,batch_size=4,workers=1]", "eval_pairs=4",
            "seg.preset=tiny", "experiments=[real,synthetic]"]
    with caplog.at_level(logging.INFO, logger="jodiffusion"):
        assert main(args) == 0
    text = capsys.readouterr().out
    # a fresh stage folder is a new start, not "a run stopped before its first checkpoint"
    assert not any("stopped before its first checkpoint" in r.getMessage() for r in caplog.records)
    assert "real + synthetic" not in text  # not among the experiments asked for: not shown as n/a
    stage = json.loads((out / "data" / "STAGE.json").read_text())
    fit = stage["result"]["fit"]
    assert fit["train"]["changed"] == 6 and fit["val"]["changed"] == 3  # all but the 4:3 pairs
    assert fit["train"]["lost_share"] == 0 and fit["train"]["padded_share"] > 0.2
    # the stage record holds what applies to a folder dataset, not the embedded generator's settings
    assert "num_train" not in stage["settings"]["data"] and "difficulty" not in stage["settings"]["data"]
    assert stage["settings"]["data"]["resize"] == "letterbox"
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["data_fit"] == fit
    assert "data train: 6 of 8 pairs letterboxed to 24x32" in text
    assert "letterboxed to 24x32" in (out / "report" / "index.html").read_text()
    # val scored on whole images: every horse pixel of the portrait pair survives (scaled), none cut
    with Image.open(out / "data" / "masks" / "val" / "val0.png") as im:
        val0 = np.asarray(im)
    # 40x20 scaled by 0.6 to 24x12 in the middle of 24x32: 10 columns of padding each side
    assert (val0[:, :10] == 255).all() and (val0[:, 22:] == 255).all() and (val0[:, 10:22] != 255).all()
    assert (val0 == 1).sum() == pytest.approx(0.36 * 20 * 10, rel=0.1)
    # two classes: every prompt names "horse", so prompt adherence cannot discriminate
    reason = metrics["not_applicable"]["prompt_precision"]
    assert metrics["prompt_precision"] is None and reason.startswith("one class (horse) besides the background")
    assert f"precision / recall   n/a ({reason})" in text
    # the presets' warm-ups (50 to 100 steps) against train.steps=2: scaled, with a notice
    assert any("is not shorter than train.steps=2" in r.getMessage() for r in caplog.records)


# --- figures that cannot discriminate -------------------------------------------------------------------

def test_prompt_adherence_is_not_applicable_for_one_caption_or_one_class():
    masks = [np.ones((8, 8), np.uint8)] * 3
    images = [np.zeros((8, 8, 3), np.uint8)] * 3
    one = evaluate_pairs(["a photo of a horse"] * 3, images, masks, HORSE)
    assert one["prompt_precision"] is None and one["prompt_recall"] is None
    assert "one class (horse) besides the background" in one["not_applicable"]["prompt_precision"]
    three = ClassInfo(names=("background", "horse", "person"), background=0)
    same = evaluate_pairs(["a horse and a person"] * 3, images, masks, three)
    assert same["prompt_precision"] is None
    assert "same classes (horse, person)" in same["not_applicable"]["prompt_recall"]
    varied = evaluate_pairs(["a horse", "a person", "a horse"], images, masks, three)
    # every mask holds a horse: 2 of 3 present classes were asked for, 2 of 3 named ones are present
    assert varied["prompt_precision"] == pytest.approx(200 / 3) and varied["prompt_recall"] == pytest.approx(200 / 3)
    assert "not_applicable" not in varied


def test_nothing_drawn_leaves_recall_a_real_zero(tmp_path, capsys):
    """No class in any generated mask: precision (present classes asked for) is undefined, but recall
    (asked-for classes drawn) is 0, a score that says the model failed, not n/a."""
    three = ClassInfo(names=("background", "horse", "person"), background=0)
    empty = [np.zeros((8, 8), np.uint8)] * 2
    result = evaluate_pairs(["a horse", "a person"], [np.zeros((8, 8, 3), np.uint8)] * 2, empty, three)
    assert result["prompt_precision"] is None and result["prompt_recall"] == 0.0
    assert result["not_applicable"] == {"prompt_precision": "no class present in any generated mask"}
    print_summary({**result, "agreement_miou": None}, tmp_path)
    text = capsys.readouterr().out
    assert "precision   n/a   recall   0.0" in text and "(precision n/a: no class present" in text


def test_summary_and_report_say_why_a_figure_is_not_applicable(tmp_path, capsys):
    reason = "every prompt names the same classes (horse), so the figure cannot tell a prompt followed from one ignored"
    metrics = {"prompt_precision": None, "prompt_recall": None, "agreement_miou": 55.0,
               "not_applicable": {"prompt_precision": reason, "prompt_recall": reason}}
    print_summary(metrics, tmp_path)
    text = capsys.readouterr().out
    assert f"n/a ({reason})" in text and "100.0" not in text
    page = render_report(tmp_path, metrics, [], "t")
    assert f"n/a: {reason}" in page


# --- warm-up --------------------------------------------------------------------------------------------

def test_a_warmup_longer_than_the_run_is_scaled_down_with_a_notice(caplog):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    with caplog.at_level(logging.WARNING, logger="jodiffusion"):
        sched = make_lr_scheduler(opt, TrainConfig(steps=30, warmup_steps=100, lr=1.0))
    assert any("train.warmup_steps=100 is not shorter than train.steps=30: warming up over 3 steps" in r.getMessage()
               for r in caplog.records)
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)  # at full learning rate after the 3-step warm-up
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jodiffusion"):
        make_lr_scheduler(torch.optim.SGD([param], lr=1.0), TrainConfig(steps=300, warmup_steps=100))
    assert not caplog.records
    assert TrainConfig(steps=300, warmup_steps=100).warmup() == (100, None)


# --- progress bars in a file ----------------------------------------------------------------------------

def test_a_bar_in_a_file_writes_few_lines_its_final_line_once_and_nothing_when_empty(monkeypatch):
    monkeypatch.setenv("JODIFFUSION_PROGRESS_SECONDS", "3600")
    buf = io.StringIO()
    bar = progress_bar(total=500, desc="work", file=buf)
    assert isinstance(bar, LineProgress)
    for i in range(500):
        bar.update(1)
        bar.set_postfix(loss=i)  # a terminal bar redraws on every call
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in buf.getvalue()  # the first move and the final line, once each
    assert lines[-1].startswith("work: 100%") and "500/500" in lines[-1]
    empty = io.StringIO()
    progress_bar(total=0, desc="generate", unit="pair", file=empty).close()
    assert empty.getvalue() == ""
    cleared = io.StringIO()  # leave=False clears a terminal bar; a log keeps its final line
    for _ in progress_bar(range(5), desc="eval", file=cleared, leave=False):
        pass
    assert cleared.getvalue().splitlines()[-1].startswith("eval: 100%")


def test_a_bar_in_a_file_writes_again_after_the_interval(monkeypatch):
    monkeypatch.setenv("JODIFFUSION_PROGRESS_SECONDS", "0")
    buf = io.StringIO()
    with progress_bar(total=3, desc="w", file=buf, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert [line.split("|")[0].strip() for line in buf.getvalue().splitlines()] == ["w:  33%", "w:  67%", "w: 100%"]


# --- stage records --------------------------------------------------------------------------------------

def test_data_record_holds_only_what_applies():
    folder = DataConfig(name="folder", root="/data").record()
    assert "num_train" not in folder and "difficulty" not in folder and "voc_trainaug" not in folder
    assert folder["root"] == "/data" and folder["resize"] == "letterbox"
    shapes = DataConfig().record()
    assert shapes["num_train"] == 512 and "root" not in shapes
    with pytest.raises(ValueError, match="data.resize='stretch'"):
        DataConfig(resize="stretch")


CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


@pytest.mark.skipif(not (CAMVID / "trainannot").is_dir(), reason="../shared/data/camvid is not present")
def test_segnet_camvid_imports_without_naming_a_folder(tmp_path):
    """The real download (train/ + trainannot/, val/ + valannot/): found by content, splits kept."""
    names = "Sky,Building,Pole,Road,Pavement,Tree,SignSymbol,Fence,Car,Pedestrian,Bicyclist".split(",")
    summary = import_folder(CAMVID, tmp_path / "camvid", ImportOptions(names=names, value_map="11=ignore"),
                            progress=False)
    assert summary.found_by == "content" and summary.splits == {"train": 367, "val": 101}
    assert summary.splits_from == "splits from the source folders" and not summary.left_out and not summary.unused
