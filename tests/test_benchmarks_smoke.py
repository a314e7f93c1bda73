"""The GPU benchmark scripts run end to end on CPU at the tiny preset (no timing assertions), and their
analytic FLOP count agrees with PyTorch's FLOP counter."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from jodiffusion.models.uvit import JointUViT, uvit_config

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """Both scripts set torch's thread count; give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield 1
    torch.set_num_threads(threads)


def positive(*values):
    return all(isinstance(v, (int, float)) and v > 0 for v in values)


def test_bench_denoiser_smoke(tmp_path, one_thread):
    bench = load("bench_denoiser")
    out = tmp_path / "denoiser.json"
    md = tmp_path / "denoiser.md"
    result = bench.main(["--preset", "tiny", "--device", "cpu", "--steps", "2", "--default-steps", "2",
                         "--batch", "2", "--warmup-steps", "1", "--peak-size", "64", "--peak-iters", "2",
                         "--threads", str(one_thread), "--out", str(out), "--markdown", str(md)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved["modes"]) == {"authors", "ours_equal", "ours_default"}
    for name, mode in saved["modes"].items():
        assert positive(mode["seconds_per_pair"], mode["pairs_per_s"], mode["tflops"], mode["share_of_peak"]), name
        assert mode["steps"] == 2 and mode["pairs_timed"] >= 1
    assert saved["modes"]["authors"]["batch"] == 1 and saved["modes"]["authors"]["network_calls_per_step"] == 2
    assert saved["modes"]["ours_equal"]["batch"] == 2 and saved["modes"]["ours_equal"]["network_calls_per_step"] == 1
    assert set(saved["speedups"]) == {"ours_equal", "ours_default"} and positive(*saved["speedups"].values())
    assert positive(saved["peak"]["tflops"], saved["flops"]["forward_per_sample"], saved["parameters"])
    assert saved["flops"]["forward_per_sample"] == saved["flops"]["forward_per_sample_counted"]
    assert {"meets_targets", "targets", "max_steps_for_default_target", "command", "date_utc"} <= set(saved)
    assert "| authors |" in md.read_text()


def test_bench_training_smoke(tmp_path, one_thread):
    bench = load("bench_training")
    out = tmp_path / "training.json"
    result = bench.main(["--preset", "tiny", "--device", "cpu", "--batch", "2", "--steps", "2", "--warmup", "1",
                         "--peak-size", "64", "--peak-iters", "2", "--threads", str(one_thread), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert "error" not in saved and saved["loss_finite"]
    assert saved["batch"] == 2 and saved["steps_timed"] == 2
    assert positive(saved["seconds_per_step"], saved["steps_per_s"], saved["samples_per_s"], saved["tflops"],
                    saved["share_of_peak"], saved["peak"]["tflops"], saved["flops"]["forward_per_sample"])
    assert saved["samples_per_s"] == pytest.approx(2 * saved["steps_per_s"])
    assert saved["optimizer"]["class"] == "AdamW"


@pytest.mark.parametrize("preset", ["tiny", "small", "base", "unidiffuser-v1"])
def test_forward_flops_match_the_counter(preset):
    bench = load("bench_denoiser")
    cfg = uvit_config(preset)
    with torch.device("meta"):  # shapes only: the counter needs no arithmetic
        model = JointUViT(cfg)
    assert bench.forward_flops(cfg) == bench.counted_forward_flops(model)


def test_unidiffuser_forward_flops_match_the_authors_measurement():
    # reference-official.md: 4.9 TFLOP per forward at batch 1 (they have one token fewer: no t_mask)
    bench = load("bench_denoiser")
    assert bench.forward_flops(uvit_config("unidiffuser-v1")) / 1e12 == pytest.approx(4.9, rel=0.01)


def test_bench_cpu_precision_smoke(tmp_path, one_thread):
    bench = load("bench_cpu_precision")
    out = tmp_path / "precision.json"
    result = bench.main(["--batch", "2", "--steps", "1", "--threads", str(one_thread), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["train_samples_per_s"]) == {"fp32", "bf16", "fp32_channels_last"}
    assert positive(*result["train_samples_per_s"].values(), *result["sampling_pair_steps_per_s"].values())
    assert result["auto_picks_bf16"] is False  # conftest sets JODIFFUSION_CPU_BF16=0: the same on every machine


def test_bench_joint_stage_smoke(tmp_path, one_thread):
    """The stage-against-bare-model benchmark runs the real training stage and the bare step at a tiny
    size and reports both rates and their ratio (no timing assertion: speed is for benchmarks)."""
    bench = load("bench_joint_stage")
    out = tmp_path / "stage.json"
    result = bench.main(["--preset", "tiny", "--steps", "4", "--log-every", "2", "--bare-steps", "2",
                         "--warmup-steps", "1", "--num-train", "8", "--resolution", "32", "--threads",
                         str(one_thread), "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["stage"]["steps_timed"] == 2 and saved["bare"]["steps_timed"] == 4  # bare: before and after
    assert positive(saved["stage"]["samples_per_s"], saved["bare"]["samples_per_s"], saved["ratio"])
    assert saved["ratio"] == pytest.approx(saved["stage"]["samples_per_s"] / saved["bare"]["samples_per_s"])
