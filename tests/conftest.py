"""Shared test set-up: tests run offline and on CPU (nothing tries a model hub, whatever the environment
says; fp32 on every CPU), and modules of tiny models can run on one torch thread (`one_torch_thread`)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The same numbers on every CI machine: fp32 whether or not this CPU has bf16 instructions (the choice
# itself is tested in tests/test_precision.py, which sets the switch per test).
os.environ.setdefault("JODIFFUSION_CPU_BF16", "0")


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """Modules of tiny models use it (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): one
    thread avoids contention stalls on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
