"""Decisions the main process takes for a group of processes (torchrun / accelerate launch).

Taking an output folder's lock or preparing it happens on the main process only. If it refuses (another
run holds the folder, a run is already there), the other processes must learn it at once and stop with
the same one-line error: left waiting at the next barrier, they hang until the group's timeout (30
minutes by default) under a launcher that does not stop them (torchrun's agent does, as soon as the main
process exits, but then they end with no message of their own).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch.distributed as dist

from jodiffusion.errors import JoDiffusionError

T = TypeVar("T")


def main_decides(is_main: bool, world: int, action: Callable[[], T]) -> T | None:
    """Run ``action`` on the main process (global rank 0) and tell every process whether it failed: the
    main process re-raises its error, every other raises a ``JoDiffusionError`` with the same message.
    Returns ``action``'s result on the main process, None elsewhere."""
    result, error = None, None
    if is_main:
        try:
            result = action()
        except Exception as exc:  # every failure is shared; the main process re-raises it as it was
            error = exc
    if world > 1 and dist.is_available() and dist.is_initialized():
        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            raise JoDiffusionError(box[0])
    if error is not None:
        raise error
    return result


def launched_rank() -> int:
    """This process's global rank as the launcher set it (torchrun and accelerate launch set ``RANK``): known
    before accelerate starts, so work done first (reading the data) can show one progress bar, not one per
    process. 0 when run alone."""
    return int(os.environ.get("RANK", "0"))


__all__ = ["launched_rank", "main_decides"]
