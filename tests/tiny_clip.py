"""A tiny randomly initialised CLIP text model and tokenizer, written offline for the tests."""

from __future__ import annotations

import json
import string
from pathlib import Path


def save_tiny_clip(folder: Path, hidden_size: int = 32, max_positions: int = 16, seed: int = 0) -> Path:
    """Write a CLIPTextModel + CLIPTokenizer folder: byte-level BPE over single characters, no merges."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + ".,!?-"
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "_vocab.json").write_text(json.dumps(vocab))
    (folder / "_merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "_vocab.json"), str(folder / "_merges.txt"))
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=max_positions,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    CLIPTextModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
