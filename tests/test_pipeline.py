"""The end-to-end pipeline and the demo built on it: every stage at toy sizes, the report folder (also
in a headless browser), skipping of complete stages, refusal of changed settings, resumption of an
interrupted stage, and the CamVid pipeline run end to end at a tiny size when the dataset is present."""

import json
from pathlib import Path

import pytest
from chromium_helpers import dump_dom, find_chromium, images_loaded

from jodiffusion.cli.main import main
from jodiffusion.config.loader import load_config
from jodiffusion.errors import ConfigError, JoDiffusionError
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.experiments.demo import run_demo
from jodiffusion.experiments.generation_stages import generation_fields, generation_record
from jodiffusion.experiments.results import DatasetFigures, GeneratedSet, JointStage
from jodiffusion.experiments.segmenters import choose
from jodiffusion.experiments.stages import MARKER, StageRunner, from_record, stage_config, to_record
from jodiffusion.experiments.summary import print_summary
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.pipelines.pipeline import JoDiffusionPipeline
from jodiffusion.training.segmenter import SegmenterResult
from jodiffusion.training.vae import VAEResult

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
REPORT_FIGURES = ("real_vs_generated.png", "pairs.png", "trajectory.png", "class_histogram.png", "mask_refinement.png",
                  "learning_curves.png")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    metrics = run_demo(out, quick=True, progress=False)
    return out, metrics


def test_demo_runs_every_stage_and_reports_every_metric(demo):
    out, metrics = demo
    # the real-only segmenter comes before the joint model: its learning curves score agreement with it
    stages = ["data", "vae", "seg-real", "joint", "generate", "eval-joint", "seg-synthetic", "filter",
              "seg-real+synthetic", "seg-real+synthetic-two-phase+filter", "seg-test"]
    for stage in stages:
        assert (out / stage / MARKER).is_file(), stage
    assert list(metrics["stage_seconds"]) == [*stages, "dataset-figures", "model-figures", "report"]
    for key in ("vae_reconstruction_miou", "prompt_precision", "prompt_recall", "agreement_miou", "seg_miou_real",
                "seg_miou_synthetic", "seg_miou_real_synthetic"):
        assert isinstance(metrics[key], float) and 0.0 <= metrics[key] <= 100.0, key
    assert metrics["pairs"] == 8
    # the conditioning probe on generated pairs and its reference on real ones; the learning curves
    assert {"background_dark", "background_light", "colour_accuracy", "count_accuracy"} <= set(metrics["probe_real"])
    assert metrics["probe_real"]["background_accuracy"] == 100.0 and "not_applicable" in metrics["probe"]
    joint_log = [json.loads(r) for r in (out / "joint" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in joint_log if "probe/agreement_miou" in r] == [2, 4]
    # the joint model's own training speed (probes excluded) is in the stage record and the metrics
    step_s = [r["step_s"] for r in joint_log if "step_s" in r]
    assert step_s and all(s > 0 for s in step_s)
    record = json.loads((out / "joint" / MARKER).read_text())
    assert record["result"]["samples_per_second"] == metrics["joint_samples_per_second"] > 0
    saved = json.loads((out / "report" / "metrics.json").read_text())
    assert saved["seg_miou_real"] == metrics["seg_miou_real"]
    # the three segmenters were really trained on different data
    configs = {e: (out / f"seg-{e}" / "config.yaml").read_text() for e in ("real", "synthetic", "real+synthetic")}
    assert "mix: real\n" in configs["real"] and "mix: synthetic\n" in configs["synthetic"]
    assert "mix: real+synthetic" in configs["real+synthetic"] and str(out / "generate") in configs["synthetic"]
    # real+synthetic draws the synthetic set's share of the union: 8 generated / (16 real + 8 generated)
    assert f"synthetic_ratio: {8 / 24}" in configs["real+synthetic"]


def test_real_synthetic_is_the_best_candidate_on_val_and_every_candidate_is_reported(demo, capsys):
    out, metrics = demo
    selection = metrics["seg_selection"]
    assert selection["split"] == "val" and list(selection["candidates"]) == ["mix", "two-phase+filter"]
    vals = {name: json.loads((out / stage / "eval.json").read_text()) for name, stage in
            (("mix", "seg-real+synthetic"), ("two-phase+filter", "seg-real+synthetic-two-phase+filter"))}
    assert {n: r["split"] for n, r in vals.items()} == {"mix": "val", "two-phase+filter": "val"}
    assert selection["candidates"] == {n: r["miou"] for n, r in vals.items()}
    best = max(vals, key=lambda n: (vals[n]["miou"], n == "mix"))  # the first of a tie
    assert metrics["seg_real_synthetic_candidate"] == selection["chosen"] == best
    assert metrics["seg_miou_real_synthetic"] == vals[best]["miou"]
    assert selection["selected"] == (best if vals[best]["miou"] > metrics["seg_miou_real"] else "real")
    # the two-phase candidate trained on the filtered pairs, synthetic first
    two = vals["two-phase+filter"]
    assert two["mix"] == "synthetic-then-real" and two["synthetic"] == str(out / "filter")
    assert metrics["filter"]["seen"] == 8 and metrics["filter"]["kept"] == two["num_synthetic_train"] == 8
    # how each candidate drew the synthetic set: mix 1 of every 4 samples (8 / 24 of the union, rounded), two-phase
    # the first of the 4 steps (0.2 of them, at least one)
    assert selection["recipes"] == {
        "mix": {"mix": "real+synthetic", "pairs": 8, "synthetic_ratio": 0.25, "synthetic_phase": None},
        "two-phase+filter": {"mix": "synthetic-then-real", "pairs": 8, "synthetic_ratio": 0.25, "synthetic_phase": 0.2}}
    # the held-out split scores real only and the chosen candidate, after the choice
    assert metrics["test_split"] == "test" and len(list((out / "data" / "images" / "test").iterdir())) == 8
    held_out = json.loads((out / "seg-test" / MARKER).read_text())["result"]["miou"]
    assert set(held_out) == {"real", best}
    assert metrics["test_miou_real"] == held_out["real"] and metrics["test_miou_real_synthetic"] == held_out[best]
    page = (out / "report" / "index.html").read_text()
    assert "two-phase+filter" in page and "(chosen)" in page and "Held-out split" in page
    saved = json.loads((out / "report" / "metrics.json").read_text())
    assert saved["seg_selection"]["candidates"] == selection["candidates"]
    print_summary(metrics, out)
    summary = capsys.readouterr().out
    assert f"best on val of 2: {best}" in summary and "candidates on val: mix " in summary
    assert "quality filter: 8 of 8 pairs kept (dropped: none)" in summary
    assert "held-out test split (never used to choose)" in summary


def test_the_choice_reads_val_figures_and_keeps_real_only_unless_a_candidate_beats_it():
    candidates = {"mix": {"miou": 50.0}, "two-phase": {"miou": 55.0},
                  "mix+filter": {"miou": None, "skipped": "no generated pair passed the quality filter"}}
    kept = choose(60.0, candidates)
    assert kept["chosen"] == "two-phase" and kept["selected"] == "real" and not kept["synthetic_helps"]
    assert kept["candidates"] == {"mix": 50.0, "two-phase": 55.0, "mix+filter": None}
    assert kept["skipped"] == {"mix+filter": "no generated pair passed the quality filter"}
    beaten = choose(52.0, candidates)
    assert beaten["selected"] == "two-phase" and beaten["synthetic_helps"]
    assert choose(0.0, {"b": {"miou": 5.0}, "a": {"miou": 5.0}})["chosen"] == "b"  # a tie: the first listed
    assert choose(60.0, {"mix+filter": candidates["mix+filter"]})["chosen"] is None


def test_report_folder_holds_the_figures_and_a_page_that_shows_them(demo):
    out, metrics = demo
    page = out / "report" / "index.html"
    text = page.read_text()
    for name in REPORT_FIGURES:
        assert (out / "report" / name).stat().st_size > 0
        assert f'src="{name}"' in text
    assert f"{metrics['seg_miou_real']:.1f}" in text
    browser = find_chromium()
    if browser is None:
        pytest.skip("headless Chromium not installed: run scripts/install_chromium.sh")
    dom = dump_dom(browser, page, out / "chromium-profile")
    assert images_loaded(dom) == str(len(REPORT_FIGURES))


def test_the_report_draws_from_the_saved_results_without_a_model(demo, monkeypatch):
    """The model-figures stage sampled what the report shows; redrawing the report loads no model and draws
    the same pictures byte for byte."""
    out, _ = demo
    figures = sorted((out / "report").glob("*.png"))
    before = {p.name: p.read_bytes() for p in figures}
    saved = json.loads((out / "model-figures" / MARKER).read_text())["result"]
    assert {"trajectory.npz", "refinement.npz"} <= {p.name for p in (out / "model-figures").iterdir()}
    assert len(saved["prompts"]) == 3 and saved["steps"][-1] + 1 == saved["num_steps"]

    def no_model(*args, **kwargs):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(JoDiffusionPipeline, "from_pretrained", no_model)
    for figure in figures:
        figure.unlink()
    again = run_demo(out, quick=True, progress=False)
    assert "model-figures" in again["skipped_stages"]
    assert {p.name: p.read_bytes() for p in sorted((out / "report").glob("*.png"))} == before


def test_rerun_skips_complete_stages_and_keeps_their_results(demo, capsys):
    out, metrics = demo
    vae_weights = out / "vae" / "annotation_vae" / "model.safetensors"
    before = vae_weights.stat().st_mtime_ns
    again = run_demo(out, quick=True, progress=False)
    assert vae_weights.stat().st_mtime_ns == before
    assert set(again["skipped_stages"]) >= {"vae", "joint", "generate", "seg-real", "seg-synthetic"}
    assert again["seg_miou_synthetic"] == metrics["seg_miou_synthetic"]
    assert "skipped (already complete)" in capsys.readouterr().out


def test_stage_results_are_typed_and_round_trip_through_their_records(demo):
    """Each stage's STAGE.json holds its typed result field by field (paths as text), and a skipped stage
    returns the same typed result the run that completed it returned."""
    out, metrics = demo
    kinds = {"vae": VAEResult, "seg-real": SegmenterResult, "joint": JointStage, "generate": GeneratedSet,
             "dataset-figures": DatasetFigures}
    typed = {}
    for stage, kind in kinds.items():
        record = json.loads((out / stage / MARKER).read_text())["result"]
        typed[stage] = from_record(kind, record)
        assert to_record(typed[stage]) == record, stage
    assert typed["vae"].export == out / "vae" / "annotation_vae" and typed["vae"].export.is_dir()
    assert (typed["vae"].miou, typed["vae"].parameters) == (metrics["vae_reconstruction_miou"],
                                                            metrics["vae_parameters"])
    assert typed["seg-real"].per_class == metrics["seg_per_class"]["real"]
    # the joint stage records no "fit" key when the data stage did not fit the pairs (as records before it)
    assert typed["joint"].fit == metrics["data_fit"] and set(to_record(typed["joint"])) == {
        "export", "samples_per_second", "fit"}
    assert set(to_record(JointStage(Path("x"), None))) == {"export", "samples_per_second"}
    assert typed["generate"].pairs == metrics["pairs"] == 8
    assert typed["dataset-figures"].probe_real == metrics["probe_real"]
    assert set(typed["dataset-figures"].class_pixel_frequency) == {"real", "synthetic"}
    runner = StageRunner(out)  # a rerun returns the typed result from the record, without calling the stage
    again = runner.run("vae", json.loads((out / "vae" / MARKER).read_text())["settings"],
                       lambda f, r: pytest.fail("a complete stage ran again"), VAEResult)
    assert again == typed["vae"] and runner.skipped == ["vae"]


def test_without_the_report_the_summary_has_the_real_figures_and_the_stage_times(demo, capsys):
    out, metrics = demo
    report = out / "report" / "metrics.json"
    written = report.stat().st_mtime_ns
    quiet = run_demo(out, quick=True, progress=False, overrides=("report=false",))
    assert report.stat().st_mtime_ns == written  # nothing drawn, nothing written
    assert quiet["probe_real"] == metrics["probe_real"]
    assert quiet["class_pixel_frequency"] == metrics["class_pixel_frequency"]
    seconds = quiet["stage_seconds"]
    assert "report" not in seconds and seconds == {k: v for k, v in metrics["stage_seconds"].items() if k != "report"}
    assert quiet["total_seconds"] == round(sum(seconds.values()), 2) > 0
    summary = capsys.readouterr().out
    real = metrics["probe_real"]
    assert f"(real {real['background_dark']:.0f} / {real['background_light']:.0f})" in summary
    assert f"(total {sum(seconds.values()) / 60:.1f} min)" in summary
    assert "report: " not in summary  # none drawn by this run


def test_a_stage_done_with_other_settings_is_refused_not_overwritten(demo):
    out, _ = demo
    weights = out / "vae" / "annotation_vae" / "model.safetensors"
    content = weights.read_bytes()
    with pytest.raises(JoDiffusionError, match="stage 'vae'.*other settings"):
        run_demo(out, quick=True, progress=False, overrides=("vae.overrides=[train.steps=5]",))
    assert weights.read_bytes() == content


def test_an_interrupted_stage_resumes_from_its_checkpoint(tmp_path):
    """A stage folder without its completion marker is resumed; later stages then run on its output."""
    runner = StageRunner(tmp_path)
    calls = []

    def stage(folder, resume):
        calls.append(resume)
        (folder / "partial.txt").write_text("x")
        return {"value": 1}

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "leftover.txt").write_text("from a killed run")
    assert runner.run("s", {"a": 1}, stage) == {"value": 1}
    assert runner.run("s", {"a": 1}, stage) == {"value": 1}
    assert calls == [True]  # resumed once, then skipped
    assert runner.skipped == ["s"]


def test_pipeline_config_is_validated():
    def demo_with(*overrides):
        return load_config(PipelineConfig, group="pipeline", preset="demo", overrides=["data.root=/x", *overrides])

    with pytest.raises(ConfigError, match="experiments"):
        demo_with("experiments=[real,fake]")
    with pytest.raises(ConfigError, match="include 'real'"):
        demo_with("experiments=[synthetic]")
    with pytest.raises(ConfigError, match="synthetic_pairs"):
        demo_with("synthetic_pairs=-1")
    with pytest.raises(ConfigError, match="candidates"):
        demo_with("candidates=[mix,mix]")
    with pytest.raises(ConfigError, match="candidates"):
        demo_with("candidates=[mix,three-phase]")
    with pytest.raises(ConfigError, match="set by the pipeline"):
        demo_with("filter.consistency_segmenter=/some/seg")
    with pytest.raises(ConfigError, match="test_split"):
        demo_with("test_split=val")
    cfg = load_config(PipelineConfig, group="pipeline", preset="camvid", overrides=["data.root=/x"])
    assert cfg.experiments == ["real", "synthetic", "synthetic_x4", "real+synthetic"]


def test_the_generate_stage_is_the_generate_commands_preset_and_overrides():
    """The pipeline fills only the pairs, the folder, the split and the prompts; the record its stages
    compare names every other setting that is not the generate command's default."""
    cfg = load_config(PipelineConfig, group="pipeline", preset="demo", overrides=["data.root=/x"])
    g = stage_config(GenerateConfig, "generate", cfg.generate,  # as the plan builds it
                     **generation_fields(12, "/out", Path("/data/captions.jsonl"), "train"))
    assert (g.num, g.out, g.split, g.prompts.captions, g.prompts.split) == (12, "/out", "train",
                                                                          "/data/captions.jsonl", "train")
    assert (g.steps, g.batch_size, g.workers, g.tau, g.seed) == (10, 32, 2, 20, 0)  # demo over generate/pipeline
    assert generation_record(cfg.synthetic_pairs, g) == {"num": 512, "seed": 0, "steps": 10, "guidance": None,
                                                         "batch_size": 32, "tau": 20, "workers": 2}
    other = load_config(PipelineConfig, group="pipeline", preset="demo",
                        overrides=["data.root=/x", "generate.overrides=[steps=10,min_confidence=0.5]"])
    g = stage_config(GenerateConfig, "generate", other.generate, **generation_fields(12, "/out", None, "train"))
    record = generation_record(other.synthetic_pairs, g)
    assert record["other"] == {"min_confidence": 0.5}


@pytest.mark.slow
@pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason="../shared/data/camvid is not present")
def test_camvid_pipeline_runs_end_to_end_at_a_tiny_size(tmp_path, capsys):
    """The GPU preset's stages, shrunk to seconds: template captions, 1x and 4x synthetic sets, 4 segmenters."""
    out = tmp_path / "camvid"
    args = ["pipeline", "--preset", "camvid", f"data.root={CAMVID}", f"output_dir={out}", "data.resolution=32",
            "vae.overrides=[train.steps=2,train.save_every=0,train.num_workers=0,model.base_channels=8,"
            "model.max_channels=16,model.blocks_per_stage=0,crop_size=32,model.downsample=8]",
            "joint.overrides=[train.steps=2,train.batch_size=4,train.num_workers=0,model.preset=tiny,"
            "model.arch.width=32,model.arch.depth=3,model.arch.num_heads=2,text.dim=32,text.num_layers=1,text.num_heads=2,"
            "codec.factor=8,sampler.steps=2]",
            "synthetic_pairs=4", "generate.overrides=[steps=2,batch_size=4,workers=1]", "eval_pairs=4",
            "seg.preset=tiny", "seg.overrides=[input_size=32]"]
    assert main(args) == 0
    captions = (out / "captions" / "captions.jsonl").read_text().splitlines()
    assert len(captions) == 367 and "a photo of" in captions[0]
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    for key in ("seg_miou_real", "seg_miou_synthetic", "seg_miou_synthetic_x4", "seg_miou_real_synthetic"):
        assert metrics[key] is not None
    assert len(list((out / "generate_x4" / "masks" / "train").glob("*.png"))) == 16
    assert "segmenter mIoU" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not (CAMVID / "train").is_dir(), reason="../shared/data/camvid is not present")
def test_camvid_cpu_pipeline_resizes_the_data_keeping_its_aspect(tmp_path):
    """The CPU preset writes CamVid at 96x128 (3:4 like 360x480) first; every stage then runs at that size."""
    from PIL import Image

    out = tmp_path / "camvid-cpu"
    args = ["pipeline", "--preset", "camvid-cpu", f"data.root={CAMVID}", f"output_dir={out}",
            "data.resolution=24", "data.width=32",
            "vae.overrides=[train.steps=2,model.base_channels=8,model.max_channels=16]",
            "joint.overrides=[train.steps=2,train.batch_size=4,model.preset=tiny,text.dim=32,text.num_layers=1,"
            "text.num_heads=2,codec.kind=pca,codec.components=6,codec.fit_images=8,sampler.steps=2]",
            "synthetic_pairs=4", "generate.overrides=[steps=2,batch_size=4,workers=1]", "eval_pairs=4",
            "seg.preset=tiny", "experiments=[real,synthetic]"]
    assert main(args) == 0
    with Image.open(next((out / "data" / "images" / "val").glob("*.png"))) as im:
        assert im.size == (32, 24)  # (width, height): CamVid's 4:3 kept
    assert len(list((out / "data" / "masks" / "train").glob("*.png"))) == 367
    with Image.open(next((out / "generate" / "images" / "train").glob("*.png"))) as im:
        assert im.size == (32, 24)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["seg_miou_synthetic"] is not None and (out / "report" / "real_vs_generated.png").is_file()


def test_demo_overwrite_refuses_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(JoDiffusionError, match="notes.txt"):
        run_demo(out, overwrite=True, quick=True, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
