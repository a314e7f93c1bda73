"""The pipeline's plan (experiments/plan.py): every stage's own config resolved from the pipeline config before
anything runs, each naming the folders the earlier stages will write."""

from pathlib import Path

import pytest

from jodiffusion.config.loader import load_config
from jodiffusion.data.shapes_folder import write_shapes_dataset
from jodiffusion.errors import JoDiffusionError
from jodiffusion.experiments.config import PipelineConfig
from jodiffusion.experiments.plan import plan_stages
from jodiffusion.experiments.stages import check_planned
from jodiffusion.generation.config import GenerateConfig
from jodiffusion.training.config import JointRunConfig, SegRunConfig, VAERunConfig


def quick(root: Path, *overrides: str) -> PipelineConfig:
    # the embedded shapes dataset: nothing on disk to write first
    return load_config(PipelineConfig, group="pipeline", preset="demo-quick",
                       overrides=["data.name=shapes", "data.num_train=12", "data.num_val=4", f"output_dir={root}",
                                  *overrides])


def test_the_plan_names_every_stage_config_without_running_anything(tmp_path):
    root = tmp_path / "run"
    plan = plan_stages(quick(root, "test_split=null"), root)
    assert not root.exists()  # nothing ran, nothing was written
    assert isinstance(plan.vae, VAERunConfig) and plan.vae.output_dir == str(root / "vae")
    # the joint model is told where the VAE and the real-only segmenter will export, before either trained
    assert isinstance(plan.joint, JointRunConfig)
    assert plan.joint.vae == str(root / "vae" / "annotation_vae")
    assert plan.joint.probe_segmenter == str(root / "seg-real" / "segmenter")
    assert plan.joint.output_dir == str(root / "joint") and plan.joint.train.steps == 4  # its preset's overrides
    assert set(plan.segmenters) == {"seg-real", "seg-synthetic"}
    assert all(isinstance(s, SegRunConfig) for s in (*plan.segmenters.values(), *plan.candidates.values()))
    assert plan.segmenters["seg-synthetic"].synthetic == str(root / "generate")
    # real+synthetic's candidates: mixed batches on the generated set, two-phase on the filtered pairs
    mix, two_phase = plan.candidates["mix"], plan.candidates["two-phase+filter"]
    assert (mix.mix, mix.synthetic, mix.output_dir) == ("real+synthetic", str(root / "generate"),
                                                        str(root / "seg-real+synthetic"))
    assert (two_phase.mix, two_phase.synthetic) == ("synthetic-then-real", str(root / "filter"))
    assert plan.filter.consistency_segmenter == plan.joint.probe_segmenter
    # synthetic_pairs: 8, prompted with the shapes' own captions (those the exported model carries)
    g = plan.generate["generate"]
    assert isinstance(g, GenerateConfig) and (g.num, g.out, g.steps, g.prompts.captions) == (
        8, str(root / "generate"), 2, None)
    assert (plan.eval_joint.num, plan.eval_joint.out) == (4, str(root / "eval-joint"))
    assert plan.real_pairs == 12 and plan.test_split is None and "seg-test" not in plan.settings
    # what each stage's record compares that is known now
    assert plan.settings["vae"] == {"data": plan.data.record(), "spec": {"preset": "tiny", "overrides": []}}
    assert plan.settings["seg-synthetic"]["synthetic"] == str(root / "generate")


def test_synthetic_pairs_zero_plans_as_many_pairs_as_real_training_pairs_and_x4(tmp_path):
    plan = plan_stages(quick(tmp_path, "test_split=null", "synthetic_pairs=0",
                             "experiments=[real,synthetic,synthetic_x4]"), tmp_path)
    assert {s: g.num for s, g in plan.generate.items()} == {"generate": 12, "generate_x4": 48}
    assert plan.segmenters["seg-synthetic_x4"].synthetic == str(tmp_path / "generate_x4")
    assert plan.candidates == {} and plan.filter is None
    assert plan.settings["generate"]["num"] == 0  # the record keeps the setting, not what it came to


def test_resized_data_and_template_captions_are_named_before_they_exist(tmp_path):
    """Resized shapes are a folder without captions: the stages read <root>/data and template captions."""
    plan = plan_stages(quick(tmp_path, "test_split=null", "resize_data=true", "data.resolution=16"), tmp_path)
    assert plan.resize is not None and plan.resize.source.name == "shapes"
    assert (plan.data.name, plan.data.root, plan.data.size) == ("folder", str(tmp_path / "data"), (16, 16))
    captions = tmp_path / "captions" / "captions.jsonl"
    assert plan.template_captions.path == captions == plan.captions
    assert plan.data.captions == str(captions) and plan.vae.data.captions == str(captions)
    assert plan.generate["generate"].prompts.captions == str(captions)
    assert plan.settings["captions"]["data"]["root"] == str(tmp_path / "data")


def test_a_missing_held_out_split_fails_when_planning(tmp_path):
    data = tmp_path / "folder"
    write_shapes_dataset(data, num_train=4, num_val=2, resolution=16, progress=False)  # no test split
    with pytest.raises(JoDiffusionError, match="test"):
        plan_stages(load_config(PipelineConfig, group="pipeline", preset="demo-quick",
                                overrides=[f"data.root={data}"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_stage_that_wrote_elsewhere_than_planned_is_refused():
    check_planned("/r/vae/annotation_vae", Path("/r/vae/annotation_vae"), "vae")
    with pytest.raises(JoDiffusionError, match="stage 'vae' wrote /r/vae/other.*planned on /r/vae/annotation_vae"):
        check_planned("/r/vae/other", "/r/vae/annotation_vae", "vae")
