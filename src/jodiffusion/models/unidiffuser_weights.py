"""Initialise a JointUViT from UniDiffuser-v1 weights, for fine-tuning: the files read, the weights copied in.

Two source formats:
- the thu-ml release ``uvit_v1.pth``, as ``.pth`` or ``.safetensors``;
- a diffusers ``UniDiffuserPipeline`` folder or its ``unet/`` subfolder (``UniDiffuserModel`` keys).

Torch files are read without executing pickled code. The CLIP 768 -> 64 text projection (our
``text_proj``) is read from ``caption_decoder.pth`` or the pipeline's ``text_decoder/`` folder. How the
keys map onto ours, and what is copied, interpolated or skipped: ``unidiffuser_keys.py``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from jodiffusion.errors import CheckpointError
from jodiffusion.models.unidiffuser_keys import (
    WHAT_TO_PASS,
    UniDiffuserLoadReport,
    convert_unidiffuser_state_dict,
    diffusers_to_original,
)
from jodiffusion.utils.safe_load import load_torch_weights, open_safetensors

DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                          "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")


def _load_tensors(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """A flat tensor dict from .safetensors or a torch file, without executing pickled code."""
    if path.suffix == ".safetensors":
        with open_safetensors(path, WHAT_TO_PASS) as f:
            wanted = [k for k in f.keys() if keys is None or k.removeprefix("module.") in keys]
            return {k: f.get_tensor(k) for k in wanted}
    if path.suffix not in (".pth", ".pt", ".ckpt", ".bin"):
        raise CheckpointError(f"{path}: unsupported file type {path.suffix!r}; {WHAT_TO_PASS}")
    state = load_torch_weights(path, WHAT_TO_PASS, mmap=True)  # one line for an empty, cut or pickled file
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a flat state dict (name -> tensor); {WHAT_TO_PASS}")
    return {k: v for k, v in state.items() if keys is None or k.removeprefix("module.") in keys}


def _diffusers_weights(folder: Path) -> Path:
    for name in DIFFUSERS_WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder} holds none of {', '.join(DIFFUSERS_WEIGHT_NAMES)}; {WHAT_TO_PASS}")


def read_unidiffuser_checkpoint(path: str | Path
                                ) -> tuple[dict[str, torch.Tensor], str, list[str], dict[str, str], Path | None]:
    """(state in release names, format, skipped diffusers keys, key names for messages, text_decoder folder)."""
    path = Path(path)
    decoder = None
    if path.is_dir():
        unet = path / "unet" if (path / "unet").is_dir() else path
        state = _load_tensors(_diffusers_weights(unet))
        decoder = unet.parent / "text_decoder" if (unet.parent / "text_decoder").is_dir() else None
    elif path.is_file():
        state = _load_tensors(path)
    else:
        raise CheckpointError(f"{path} not found: {WHAT_TO_PASS}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "vae_img_in.proj.weight" in state:
        state, ignored, names = diffusers_to_original(state)
        return state, "diffusers", ignored, names, decoder
    if "patch_embed.proj.weight" in state:
        return state, "original", [], {}, decoder
    raise CheckpointError(f"{path} has neither UniDiffuser's 'patch_embed.proj.weight' nor diffusers' "
                          f"'vae_img_in.proj.weight' (first keys: {', '.join(list(state)[:5])}); {WHAT_TO_PASS}")


def read_encode_prefix(path: str | Path) -> dict[str, torch.Tensor]:
    """The caption decoder's ``encode_prefix`` (CLIP 768 -> 64) from caption_decoder.pth or a text_decoder/
    folder (or the pipeline folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = _diffusers_weights(path / "text_decoder" if (path / "text_decoder").is_dir() else path)
    elif not path.is_file():
        raise CheckpointError(f"{path} not found: pass UniDiffuser's caption_decoder.pth or the pipeline's "
                              "text_decoder/ folder")
    state = {k.removeprefix("module."): v
             for k, v in _load_tensors(path, keys=("encode_prefix.weight", "encode_prefix.bias")).items()}
    if set(state) != {"encode_prefix.weight", "encode_prefix.bias"}:
        raise CheckpointError(f"{path} has no 'encode_prefix.weight' / 'encode_prefix.bias': is it UniDiffuser's "
                              "caption decoder?")
    return {"weight": state["encode_prefix.weight"], "bias": state["encode_prefix.bias"]}


def load_unidiffuser_weights(model: nn.Module, path: str | Path, *, caption_decoder: str | Path | None = None,
                             strict: bool = True) -> UniDiffuserLoadReport:
    """Copy UniDiffuser-v1 weights into ``model`` (a JointUViT, e.g. preset 'unidiffuser-v1') in place.

    ``path``: uvit_v1.pth / .safetensors, or a diffusers pipeline folder or its unet/ folder.
    ``caption_decoder``: where the 768 -> 64 text projection comes from (caption_decoder.pth or a
    text_decoder/ folder); found automatically next to a diffusers unet/ folder.
    ``strict``: raise on checkpoint keys that have no place in the model (else list them in the report).
    Shape mismatches always raise a CheckpointError naming the key and both shapes.
    """
    state, fmt, skipped, names, found_decoder = read_unidiffuser_checkpoint(path)
    decoder = caption_decoder if caption_decoder is not None else found_decoder
    prefix = read_encode_prefix(decoder) if decoder is not None and model.text_proj is not None else None
    tensors, report = convert_unidiffuser_state_dict(state, model, encode_prefix=prefix, strict=strict,
                                                     source=str(path), source_names=names)
    report.format = fmt
    report.ignored += skipped
    if prefix is not None:
        report.notes.append(f"text_proj loaded from the caption decoder's encode_prefix ({decoder})")
    elif caption_decoder is not None:
        report.notes.append(f"caption_decoder={caption_decoder} not used: this model has no text bottleneck")
    with torch.no_grad():
        params = model.state_dict()
        for key, tensor in tensors.items():
            params[key].copy_(tensor)
    return report


__all__ = ["load_unidiffuser_weights", "read_encode_prefix", "read_unidiffuser_checkpoint"]
