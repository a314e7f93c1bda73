"""Where each input lives in the joint U-ViT's token sequence, defined once.

The sequence is ``[t_img, t_mask, *extra, text..., img..., mask...]``: one timestep token per noised
modality, optional single tokens (UniDiffuser compatibility: ``t_text``, ``data_type``, ``clip_img``),
then the text tokens and the two latent grids. The network concatenates its inputs in this order and
splits its output with these slices; the UniDiffuser weight loader assembles position embeddings with
them. Nothing else slices the sequence by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

#: CLIP's context length: the text tokens of a CLIP text encoder, of the U-ViT and UNet "base" presets and of
#: UniDiffuser-v1 (whose position embedding holds this many text positions). Defined here only.
CLIP_TEXT_TOKENS = 77

#: Single tokens a layout always has, first in the sequence.
TIMESTEP_TOKENS = ("t_img", "t_mask")
#: The multi-token segments, last in the sequence.
DATA_SEGMENTS = ("text", "img", "mask")
#: The extra single tokens that make UniDiffuser-v1 weights load exactly, in UniDiffuser's order.
UNIDIFFUSER_EXTRA = ("t_text", "data_type", "clip_img")


@dataclass(frozen=True)
class TokenLayout:
    num_text: int
    img_tokens: int
    mask_tokens: int
    extra: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "extra", tuple(self.extra))
        if self.num_text < 0:
            raise ValueError(f"TokenLayout.num_text={self.num_text} must be >= 0")
        for name in ("img_tokens", "mask_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"TokenLayout.{name}={getattr(self, name)} must be >= 1")
        reserved = set(TIMESTEP_TOKENS) | set(DATA_SEGMENTS)
        for name in self.extra:
            if not isinstance(name, str) or not name.isidentifier() or name in reserved:
                raise ValueError(f"TokenLayout.extra: {name!r} is not a valid extra token name "
                                 f"(an identifier other than {sorted(reserved)})")
        if len(set(self.extra)) != len(self.extra):
            raise ValueError(f"TokenLayout.extra={self.extra} names a token twice")

    # -- the sequence -------------------------------------------------------------------------
    @property
    def segments(self) -> tuple[tuple[str, int], ...]:
        """(name, number of tokens) in sequence order."""
        singles = tuple((name, 1) for name in TIMESTEP_TOKENS + self.extra)
        return singles + (("text", self.num_text), ("img", self.img_tokens), ("mask", self.mask_tokens))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.segments)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Segment lengths in order, for ``torch.split``."""
        return tuple(n for _, n in self.segments)

    @property
    def length(self) -> int:
        return sum(self.sizes)

    def slice(self, name: str) -> slice:
        start = 0
        for seg, n in self.segments:
            if seg == name:
                return slice(start, start + n)
            start += n
        raise KeyError(f"no segment {name!r} in this token layout; segments: {', '.join(self.names)}")

    def index(self, name: str) -> int:
        """Position of a single-token segment (a timestep or extra token)."""
        s = self.slice(name)
        if s.stop - s.start != 1:
            raise ValueError(f"segment {name!r} holds {s.stop - s.start} tokens, not one")
        return s.start

    # -- named slices -----------------------------------------------------------------------------
    @property
    def t_img(self) -> slice:
        return self.slice("t_img")

    @property
    def t_mask(self) -> slice:
        return self.slice("t_mask")

    @property
    def text(self) -> slice:
        return self.slice("text")

    @property
    def img(self) -> slice:
        return self.slice("img")

    @property
    def mask(self) -> slice:
        return self.slice("mask")

    def __str__(self) -> str:
        return " | ".join(f"{name}[{self.slice(name).start}:{self.slice(name).stop}]" for name in self.names)


__all__ = ["DATA_SEGMENTS", "TIMESTEP_TOKENS", "UNIDIFFUSER_EXTRA", "TokenLayout"]
