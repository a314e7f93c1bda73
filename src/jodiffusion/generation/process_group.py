"""The process group ``generate`` runs under torchrun / accelerate launch (gloo on CPU, so ranks agree
without a GPU), or a one-process stand-in."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger("jodiffusion")

class ProcessGroup:
    """Rank, world size and a barrier; one plain process when not launched by torchrun / accelerate."""

    def __init__(self):
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # imported here: accelerate only under a launcher (several processes); the CLI imports this module at start
            from accelerate import PartialState

            # a CPU-only group (gloo) must be asked for: accelerate reads the flag, torchrun does not set it
            flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
            cpu = flag or not torch.cuda.is_available()
            self.state = PartialState(cpu=cpu)
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def device(self) -> torch.device:
        if self.state is not None:
            return self.state.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
