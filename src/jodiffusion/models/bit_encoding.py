"""Binary encoding of class ids: the annotation VAE's input representation (paper, "Annotation VAE").

Class id ``k`` becomes ``B = ceil(log2 K)`` channels, bit ``i`` of ``k`` mapped to -1 / +1. Every id
``0..K-1`` gets a distinct code for every K from 2 to 256, powers of two included (K = 2**B uses all
2**B codes; no id is reserved). Ignore pixels become the all-zero vector, which is no class's code,
so the encoder can tell "unlabelled" from background; the decoder's loss skips them.
"""

from __future__ import annotations

import math

import torch


def num_bits(num_classes: int) -> int:
    if not 2 <= num_classes <= 256:
        raise ValueError(f"num_classes must lie in 2..256, got {num_classes}")
    return max(1, math.ceil(math.log2(num_classes)))


def encode_bits(mask: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(B, H, W) integer class ids -> (B, num_bits, H, W) float codes in {-1, 0, +1}.

    Values that are neither a class id nor ``ignore_index`` raise: silently encoding them would train
    the VAE on garbage labels.
    """
    if mask.dim() != 3:
        raise ValueError(f"expected a (B, H, W) mask, got shape {tuple(mask.shape)}")
    mask = mask.long()
    ignore = mask == ignore_index
    bad = ~ignore & ((mask < 0) | (mask >= num_classes))
    if bad.any():
        values = torch.unique(mask[bad]).tolist()[:10]
        raise ValueError(f"mask holds values {values} outside classes 0..{num_classes - 1} "
                         f"and ignore {ignore_index}; run `jodiffusion validate` on the dataset")
    nb = num_bits(num_classes)
    shifts = torch.arange(nb, device=mask.device).view(1, nb, 1, 1)
    bits = (mask.clamp(min=0).unsqueeze(1) >> shifts) & 1  # (B, nb, H, W)
    codes = bits.float() * 2.0 - 1.0
    return codes.masked_fill(ignore.unsqueeze(1), 0.0)


def decode_bits(codes: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Inverse of :func:`encode_bits` (sign of each bit); all-zero vectors decode to ``ignore_index``."""
    nb = codes.shape[1]
    weights = (2 ** torch.arange(nb, device=codes.device)).view(1, nb, 1, 1)
    ids = ((codes > 0).long() * weights).sum(1)
    ignore = (codes == 0).all(1)
    ids = ids.masked_fill(ignore, ignore_index)
    return ids
