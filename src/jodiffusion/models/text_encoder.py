"""Text encoders: captions -> the token sequence that conditions the joint diffusion model.

Every encoder has the same small interface (``TextEncoder``): ``encode(prompts)`` returns a
``(B, num_tokens, dim)`` float tensor, always padded or truncated to ``num_tokens``.

* ``CLIPTextEncoder``: a frozen transformers ``CLIPTextModel`` + ``CLIPTokenizer`` (the paper's
  choice; UniDiffuser and Stable Diffusion pipeline folders work too). Its outputs can be cached.
* ``CaptionTextEncoder``: a small transformer over a word vocabulary built from the training
  captions, trained together with the diffusion model (``trainable = True``): the offline default.

``to_dict()`` describes how to rebuild an encoder; ``build_text_encoder(spec)`` rebuilds it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from jodiffusion.errors import CheckpointError, ConfigError
from jodiffusion.models.image_codec import dtype_name, pretrained_source, resolve_dtype
from jodiffusion.utils.io import save_safetensors_atomic, write_json_atomic
from jodiffusion.utils.registry import Registry
from jodiffusion.utils.safe_load import check_weight_folder, load_safetensors, pickle_refusal

CONFIG_NAME = "config.json"
VOCAB_NAME = "vocab.json"
WEIGHTS_NAME = "model.safetensors"


class TextEncoder(nn.Module):
    """Prompts -> (B, num_tokens, dim) float tensor on the encoder's device."""

    kind: ClassVar[str] = ""
    trainable: ClassVar[bool] = False  # False: frozen, its outputs may be cached

    num_tokens: int
    dim: int

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """What ``build_text_encoder`` needs to rebuild this encoder (JSON-serialisable)."""
        raise NotImplementedError

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.encode(prompts)

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @staticmethod
    def _check_prompts(prompts: Sequence[str]) -> list[str]:
        if isinstance(prompts, str):
            raise TypeError("encode() takes a list of prompts, not a single string")
        prompts = list(prompts)
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"prompts must be strings, got {type(bad[0]).__name__}")
        return prompts


# --- CLIP -------------------------------------------------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def _pickle_weights(folder: Path) -> Path | None:
    """The pickle-based weight file transformers reads in ``folder`` (to name it in an error)."""
    for name in ("pytorch_model.bin", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.bin"))
    return found[0] if found else None


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _TOKENIZER_FILES)


class CLIPTextEncoder(TextEncoder):
    """Frozen CLIP text transformer: the last hidden state of the padded prompt (no attention mask,
    as in Stable Diffusion and UniDiffuser: CLIP's causal attention keeps padding out of the prompt)."""

    kind = "clip"
    trainable = False

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int | None = None, source: str | None = None,
                 subfolder: str | None = None, tokenizer_subfolder: str | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        limit = int(model.config.max_position_embeddings)
        tok_limit = getattr(tokenizer, "model_max_length", None)
        if tok_limit is not None and 0 < tok_limit < limit:
            limit = int(tok_limit)
        if max_length is not None and not 1 <= int(max_length) <= limit:
            raise ValueError(f"max_length={max_length} must lie in 1..{limit} for this CLIP model")
        self.num_tokens = int(max_length or limit)
        self.dim = int(model.config.hidden_size)
        self.source, self.subfolder, self.tokenizer_subfolder = source, subfolder, tokenizer_subfolder

    def train(self, mode: bool = True) -> CLIPTextEncoder:
        return super().train(False)  # frozen

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, subfolder: str | None = None,
                        tokenizer_subfolder: str | None = None, dtype: torch.dtype | str | None = torch.float32,
                        max_length: int | None = None, local_files_only: bool | None = None) -> CLIPTextEncoder:
        """Load from a folder holding a ``CLIPTextModel`` and its tokenizer, a pipeline folder with
        ``text_encoder/`` and ``tokenizer/`` subfolders, or a hub id (e.g. ``openai/clip-vit-large-patch14``)."""
        source, local, subfolder, folder = pretrained_source(
            path_or_hub_id, subfolder, "text_encoder", CONFIG_NAME, "CLIP",
            "holding a CLIPTextModel and its tokenizer, or a pipeline folder with text_encoder/ and tokenizer/")
        is_local = folder is not None
        if is_local:
            local_files_only = local
            if tokenizer_subfolder is None:
                if subfolder is not None and _has_tokenizer(folder / subfolder):
                    tokenizer_subfolder = subfolder
                elif not _has_tokenizer(folder) and (folder / "tokenizer").is_dir():
                    tokenizer_subfolder = "tokenizer"
            tries = [(subfolder, tokenizer_subfolder)]
        elif subfolder is None:
            tries = [(None, tokenizer_subfolder), ("text_encoder", tokenizer_subfolder or "tokenizer")]
        else:
            tries = [(subfolder, tokenizer_subfolder or subfolder)]
        error: Exception | None = None
        for sub, tok_sub in tries:
            if is_local:
                check_weight_folder(Path(source) / (sub or ""), "the CLIP text encoder")
            try:
                return cls._load(source, sub, tok_sub, resolve_dtype(dtype), max_length, bool(local_files_only))
            except pickle.UnpicklingError as exc:  # transformers' torch.load(weights_only=True) refused a payload
                weights = _pickle_weights(Path(source) / (sub or "")) if is_local else None
                raise CheckpointError(pickle_refusal(weights or source, exc, "give the CLIP text encoder as "
                                                     "model.safetensors")) from None
            except (OSError, ValueError, KeyError, TypeError, EOFError, RuntimeError) as exc:
                error = exc  # EOFError, RuntimeError: torch.load of a cut or corrupt pytorch_model.bin
        reason = str(error).rstrip(".")
        raise CheckpointError(f"cannot load a CLIP text encoder from '{source}': {reason}. Pass a folder with a "
                              "CLIPTextModel and CLIPTokenizer, a pipeline folder (text_encoder/ + tokenizer/), or a "
                              "hub id such as 'openai/clip-vit-large-patch14' (needs internet access the first "
                              "time).") from None

    @classmethod
    def _load(cls, source, subfolder, tokenizer_subfolder, dtype, max_length, local_files_only):
        # imported here: transformers takes seconds to import; only this path needs it (CLI start-up)
        from transformers import CLIPTextModel, CLIPTokenizer

        def sub_kwargs(sub):
            return {"subfolder": sub} if sub else {}

        tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local_files_only,
                                                  **sub_kwargs(tokenizer_subfolder))
        model = CLIPTextModel.from_pretrained(source, dtype=dtype, local_files_only=local_files_only,
                                              **sub_kwargs(subfolder))
        return cls(model, tokenizer, max_length=max_length, source=source, subfolder=subfolder,
                   tokenizer_subfolder=tokenizer_subfolder)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = self._check_prompts(prompts)
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.num_tokens, truncation=True,
                             return_tensors="pt").input_ids
        return self.model(ids.to(self.device)).last_hidden_state.float()  # (B, L, D)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.source, "subfolder": self.subfolder,
                "tokenizer_subfolder": self.tokenizer_subfolder, "max_length": self.num_tokens,
                "dtype": dtype_name(next(self.model.parameters()).dtype)}


# --- word vocabulary ------------------------------------------------------------------------------

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0..3, in this order
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
_WORD_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, with every punctuation character a token of its own."""
    return _WORD_RE.findall(text.lower())


class Vocabulary:
    """Word <-> id. Ids 0..3 are ``<pad> <unk> <bos> <eos>``; unknown words map to ``<unk>``."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not hold a token twice")
        self.tokens = tokens
        self.ids = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def encode(self, text: str, length: int) -> list[int]:
        """``<bos> words <eos> <pad>...`` of exactly ``length`` ids (the words are truncated to fit)."""
        if length < 2:
            raise ValueError("length must be at least 2 (<bos> and <eos>)")
        words = [self.ids.get(w, UNK_ID) for w in tokenize(text)][: length - 2]
        ids = [BOS_ID, *words, EOS_ID]
        return ids + [PAD_ID] * (length - len(ids))

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[i] for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID))

    def to_json(self) -> dict[str, Any]:
        return {"format": "jodiffusion-words", "tokens": self.tokens}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise ValueError('expected {"tokens": [...]}')
        return cls(data["tokens"])


def build_vocabulary(captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
    """The words of ``captions`` seen at least ``min_count`` times, most frequent first (ties
    alphabetical, so the result does not depend on caption order); ``max_size`` caps the total
    number of tokens, special tokens included."""
    if max_size is not None and max_size < len(SPECIAL_TOKENS):
        raise ValueError(f"max_size={max_size} must be at least {len(SPECIAL_TOKENS)} (the special tokens)")
    counts = Counter(w for text in captions for w in tokenize(text))
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS),
                   key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max_size - len(SPECIAL_TOKENS)]
    return Vocabulary([*SPECIAL_TOKENS, *words])


# --- trainable caption encoder ----------------------------------------------------------------------

@dataclass
class CaptionTextEncoderConfig:
    vocab_size: int = 0        # set from the vocabulary
    dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_tokens: int = 16       # output length: <bos> + up to max_tokens - 2 words + <eos>, then padding
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self):
        if self.dim < 1 or self.num_heads < 1 or self.dim % self.num_heads:
            raise ConfigError(f"text_encoder.dim={self.dim} must be a positive multiple of num_heads={self.num_heads}")
        if self.max_tokens < 2:
            raise ConfigError("text_encoder.max_tokens must be at least 2 (<bos> and <eos>)")
        if self.num_layers < 0:
            raise ConfigError("text_encoder.num_layers must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError("text_encoder.dropout must lie in [0, 1)")


class CaptionTextEncoder(TextEncoder):
    """Word embeddings + learned positions + a pre-norm transformer encoder, trained with the
    diffusion model. Padding is masked out of attention; the output keeps all ``max_tokens``."""

    kind = "caption"
    trainable = True

    def __init__(self, vocab: Vocabulary, config: CaptionTextEncoderConfig | None = None):
        super().__init__()
        config = config or CaptionTextEncoderConfig()
        if config.vocab_size in (0, len(vocab)):
            config = CaptionTextEncoderConfig(**{**asdict(config), "vocab_size": len(vocab)})
        else:
            raise ValueError(f"config.vocab_size={config.vocab_size} does not match the vocabulary ({len(vocab)})")
        self.vocab, self.config = vocab, config
        self.num_tokens, self.dim = config.max_tokens, config.dim
        self.source: str | None = None
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim, padding_idx=PAD_ID)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.max_tokens, config.dim))
        layer = nn.TransformerEncoderLayer(config.dim, config.num_heads, int(config.dim * config.mlp_ratio),
                                           config.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[PAD_ID].zero_()
        nn.init.normal_(self.position_embedding, std=0.02)

    @classmethod
    def from_captions(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None,
                      **config: Any) -> CaptionTextEncoder:
        """A fresh encoder whose vocabulary is built from ``captions``; ``config`` fields as keywords."""
        return cls(build_vocabulary(captions, min_count, max_size), CaptionTextEncoderConfig(**config))

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = self._check_prompts(prompts)
        ids = [self.vocab.encode(p, self.num_tokens) for p in prompts]
        return torch.tensor(ids, dtype=torch.long, device=self.device).view(len(prompts), self.num_tokens)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = self.token_ids(prompts)  # (B, L)
        x = self.token_embedding(ids) + self.position_embedding  # (B, L, D)
        x = self.transformer(x, src_key_padding_mask=ids == PAD_ID)
        return self.final_norm(x)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.source, **asdict(self.config)}

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        save_safetensors_atomic(self.state_dict(), folder / WEIGHTS_NAME)
        write_json_atomic(folder / VOCAB_NAME, self.vocab.to_json())
        write_json_atomic(folder / CONFIG_NAME, {"class": "CaptionTextEncoder", **asdict(self.config)})
        self.source = str(folder.expanduser().absolute())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location: str = "cpu") -> CaptionTextEncoder:
        folder = Path(folder).expanduser().absolute()
        paths = [folder / CONFIG_NAME, folder / VOCAB_NAME, folder / WEIGHTS_NAME]
        for p in paths:
            if not p.is_file():
                raise CheckpointError(f"{p} not found: a caption text encoder folder holds {CONFIG_NAME}, "
                                      f"{VOCAB_NAME} and {WEIGHTS_NAME} (written by save_pretrained)")
        try:
            data = json.loads(paths[0].read_text())
            data.pop("class", None)
            config = CaptionTextEncoderConfig(**data)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{paths[0]}: invalid caption text encoder config: {exc}") from None
        try:
            vocab = Vocabulary.from_json(json.loads(paths[1].read_text()))
            model = cls(vocab, config)
        except (json.JSONDecodeError, ValueError) as exc:
            raise CheckpointError(f"{paths[1]}: invalid vocabulary: {exc}") from None
        try:
            model.load_state_dict(load_safetensors(paths[2], map_location, "export the model again"))
        except RuntimeError as exc:
            raise CheckpointError(f"{paths[2]} does not match {paths[0]}: {str(exc).splitlines()[0]}") from None
        model.source = str(folder)
        return model


# --- registry --------------------------------------------------------------------------------------

def _build_clip(spec: dict[str, Any]) -> TextEncoder:
    if not spec.get("path"):
        raise ConfigError("a 'clip' text encoder needs 'path' (a folder, a pipeline folder or a hub id)")
    return CLIPTextEncoder.from_pretrained(spec["path"], subfolder=spec.get("subfolder"),
                                           tokenizer_subfolder=spec.get("tokenizer_subfolder"),
                                           dtype=spec.get("dtype"), max_length=spec.get("max_length"))


def _build_caption(spec: dict[str, Any]) -> TextEncoder:
    if not spec.get("path"):
        raise ConfigError("a 'caption' text encoder is rebuilt from its saved folder ('path'); a new one is "
                          "made from the training captions with CaptionTextEncoder.from_captions")
    return CaptionTextEncoder.from_pretrained(spec["path"])


# A spec's "kind" -> the builder that rebuilds it from the spec (the form to_dict() writes).
TEXT_ENCODERS: Registry[Callable[[dict[str, Any]], TextEncoder]] = Registry(
    "text encoder kind", error=ConfigError, valid="kinds")
TEXT_ENCODERS.register(CLIPTextEncoder.kind, _build_clip)
TEXT_ENCODERS.register(CaptionTextEncoder.kind, _build_caption)


def build_text_encoder(spec: dict[str, Any]) -> TextEncoder:
    """Rebuild a text encoder from ``to_dict()`` output (or a config section of the same shape)."""
    return TEXT_ENCODERS.get(spec.get("kind"))(dict(spec))


__all__ = ["TEXT_ENCODERS", "CLIPTextEncoder", "CaptionTextEncoder", "CaptionTextEncoderConfig", "TextEncoder",
           "Vocabulary", "build_text_encoder", "build_vocabulary", "tokenize"]
