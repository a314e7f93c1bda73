"""bf16 selection (utils/precision.py): auto picks bf16 where the hardware runs it natively, the switch
turns it off, and the training engine and generation follow the choice."""

import pytest
import torch

from jodiffusion.engine.config import TrainConfig
from jodiffusion.engine.runtime import make_accelerator
from jodiffusion.utils import precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend the CPU does (True) or does not (False) have bf16 instructions."""
    def set_(value: bool):
        monkeypatch.delenv(precision.ENV_SWITCH, raising=False)
        monkeypatch.setattr(precision, "_cpu_has_bf16_instructions", lambda: value)
    return set_


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags : x\n")
    assert {"avx2", "avx512_bf16"} <= precision.cpu_flags(info)
    assert precision.cpu_flags(tmp_path / "missing") == set()


def test_auto_picks_bf16_only_on_a_cpu_with_bf16_instructions(cpu_bf16):
    cpu_bf16(True)
    assert precision.resolve_mixed_precision("auto", "cpu") == "bf16"
    assert precision.autocast_dtype("auto", "cpu") == torch.bfloat16
    cpu_bf16(False)
    assert precision.resolve_mixed_precision("auto", "cpu") == "no"
    assert precision.autocast_dtype("auto", "cpu") is None


def test_switches_turn_bf16_off_or_on(cpu_bf16, monkeypatch):
    cpu_bf16(True)
    assert precision.resolve_mixed_precision("no", "cpu") == "no"
    assert precision.autocast_dtype("fp32", "cpu") is None
    monkeypatch.setenv(precision.ENV_SWITCH, "0")
    assert precision.resolve_mixed_precision("auto", "cpu") == "no"
    monkeypatch.setenv(precision.ENV_SWITCH, "1")
    assert precision.resolve_mixed_precision("auto", "cpu") == "bf16"
    assert precision.resolve_mixed_precision("fp16", "cpu") == "no"  # not a CPU format


def test_the_training_engine_autocasts_in_bf16_when_auto_chooses_it(cpu_bf16):
    cpu_bf16(True)
    accelerator = make_accelerator(TrainConfig(steps=1, mixed_precision="auto"))
    assert accelerator.mixed_precision == "bf16"
    layer = torch.nn.Linear(4, 4)
    with accelerator.autocast():
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    cpu_bf16(False)
    assert make_accelerator(TrainConfig(steps=1, mixed_precision="auto")).mixed_precision == "no"
