"""The BLIP-2 image captioner (``jodiffusion caption --method blip2``): a pretrained captioning model from a
local folder or a hub id, run in batches; ``data/captions.py`` writes what it says."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jodiffusion.errors import CheckpointError
from jodiffusion.utils.safe_load import check_weight_folder, pickle_refusal

DEFAULT_BLIP2_MODEL = "Salesforce/blip2-opt-2.7b"


def _resolve_dtype(dtype: Any, device: str):
    if dtype is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if str(dtype) not in names:
        raise ValueError(f"unknown dtype '{dtype}'; choose one of {', '.join(names)}")
    return names[str(dtype)]


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _as_rgb(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"images must be (H, W, 3) arrays, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


class Blip2Captioner:
    """Captions images with a BLIP-2 model (``Blip2ForConditionalGeneration`` and its processor).

    Build it with ``Blip2Captioner.from_pretrained(path_or_hub_id)``; the constructor takes objects
    already loaded. ``prompt`` (e.g. ``"a photo of"``) is given to the language model before the
    answer; the returned captions do not repeat it.
    """

    def __init__(self, model: Any, processor: Any, device: str | None = None, dtype: Any = None,
                 prompt: str | None = None, max_new_tokens: int = 30, num_beams: int = 1,
                 batch_size: int = 8, generate_kwargs: dict | None = None):
        self.device = device or _default_device()
        self.dtype = _resolve_dtype(dtype, self.device) if dtype is not None else model.dtype
        self.model = model.to(self.device).eval()
        if self.model.dtype != self.dtype:
            self.model = self.model.to(self.dtype)
        self.processor = processor
        self.prompt = prompt or None
        self.max_new_tokens = int(max_new_tokens)
        self.num_beams = int(num_beams)
        self.batch_size = int(batch_size)
        self.generate_kwargs = dict(generate_kwargs or {})
        if self.batch_size < 1:
            raise ValueError("batch_size must be positive")
        self._link_image_tokens()

    def _link_image_tokens(self) -> None:
        """Make processor and model agree on the image placeholder tokens (older saved checkpoints
        lack ``num_query_tokens`` in the processor or ``image_token_index`` in the model config)."""
        config = self.model.config
        if getattr(self.processor, "num_query_tokens", None) is None:
            self.processor.num_query_tokens = config.num_query_tokens
        tokenizer = self.processor.tokenizer
        image_token = getattr(self.processor, "image_token", None)
        token_text = getattr(image_token, "content", image_token) or "<image>"
        token_id = tokenizer.convert_tokens_to_ids(str(token_text))
        if getattr(config, "image_token_index", None) is None:
            config.image_token_index = token_id
        embeddings = self.model.get_input_embeddings()
        if config.image_token_index >= embeddings.num_embeddings:
            self.model.resize_token_embeddings(len(tokenizer))

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike = DEFAULT_BLIP2_MODEL, device: str | None = None,
                        dtype: Any = None, local_files_only: bool | None = None, **kwargs: Any
                        ) -> Blip2Captioner:
        """Load model and processor from a local folder (as written by ``save_pretrained``) or a hub
        id. A local folder is never looked up online. ``kwargs`` go to the constructor."""
        # transformers is imported here, not at the top: it takes seconds, and only BLIP-2 captioning needs it
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        source = str(path_or_id)
        is_local = Path(source).expanduser().is_dir()
        looks_like_path = source.startswith(("/", ".", "~", "\\")) or source.count("/") > 1 or (
            len(source) > 1 and source[1] == ":")
        if not is_local and (looks_like_path or Path(source).expanduser().exists()):
            raise CheckpointError(f"BLIP-2 model folder '{source}' does not exist (or is not a folder)")
        if is_local:
            source = str(Path(source).expanduser())
            local_files_only = True
        device = device or _default_device()
        torch_dtype = _resolve_dtype(dtype, device)
        if is_local:
            check_weight_folder(source, "the BLIP-2 captioning model")
        try:
            processor = AutoProcessor.from_pretrained(source, local_files_only=bool(local_files_only))
            model = Blip2ForConditionalGeneration.from_pretrained(
                source, dtype=torch_dtype, local_files_only=bool(local_files_only))
        except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused a payload
            raise CheckpointError(pickle_refusal(source, exc, "give the model as safetensors")) from None
        except (OSError, ValueError, EOFError, RuntimeError) as exc:
            where = "local folder" if is_local else "hub id"
            raise CheckpointError(
                f"cannot load a BLIP-2 captioning model from {where} '{source}': {exc}. Pass a folder "
                "holding a saved Blip2ForConditionalGeneration and its processor, or a hub id such as "
                f"'{DEFAULT_BLIP2_MODEL}' (needs internet access the first time).") from None
        return cls(model, processor, device=device, dtype=torch_dtype, **kwargs)

    def caption(self, images: Sequence[Any], batch_size: int | None = None) -> list[str]:
        """One caption per image (``(H, W, 3)`` uint8 arrays or PIL images), in order."""
        batch_size = int(batch_size or self.batch_size)
        images = [_as_rgb(im) for im in images]
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            text = [self.prompt] * len(batch) if self.prompt else None
            inputs = self.processor(images=batch, text=text, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                      **self.generate_kwargs}
            with torch.inference_mode():
                out = self.model.generate(**inputs, **kwargs)
            out = self._strip_prompt(out, inputs.get("input_ids"))
            decoded = self.processor.batch_decode(out, skip_special_tokens=True)
            captions.extend(" ".join(t.split()) for t in decoded)
        return captions

    def _strip_prompt(self, out, input_ids):
        """Decoder-only language models return the prompt (image tokens, BOS, prompt) before the answer."""
        config = self.model.config
        if input_ids is None:
            prefix = [config.image_token_index] * config.num_query_tokens + [config.text_config.bos_token_id]
            input_ids = torch.tensor([prefix] * out.shape[0], dtype=out.dtype)
        n = input_ids.shape[1]
        if out.shape[1] >= n and torch.equal(out[:, :n].cpu(), input_ids.to(out.dtype).cpu()):
            return out[:, n:]
        return out
