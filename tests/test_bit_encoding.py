import pytest
import torch

from jodiffusion.models.bit_encoding import decode_bits, encode_bits, num_bits


@pytest.mark.parametrize("k", list(range(2, 257)))
def test_every_class_gets_a_distinct_code_and_round_trips(k):
    ids = torch.arange(k).view(1, 1, k)
    codes = encode_bits(ids, k, ignore_index=1000)
    assert codes.shape == (1, num_bits(k), 1, k)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}  # classes never use the ignore code 0
    flat = codes[0, :, 0, :].T  # (k, bits)
    assert len({tuple(row.tolist()) for row in flat}) == k
    assert torch.equal(decode_bits(codes, k, ignore_index=1000), ids)


@pytest.mark.parametrize("k,bits", [(2, 1), (3, 2), (4, 2), (5, 3), (21, 5), (81, 7), (150, 8), (256, 8)])
def test_bit_counts(k, bits):
    assert num_bits(k) == bits


def test_ignore_is_kept_apart_from_background():
    mask = torch.tensor([[[0, 255, 3]]])
    codes = encode_bits(mask, 4, ignore_index=255)
    assert torch.all(codes[0, :, 0, 1] == 0)  # ignore: all-zero code
    assert torch.all(codes[0, :, 0, 0] == -1)  # background: a real code, not zero
    assert decode_bits(codes, 4, 255).tolist() == [[[0, 255, 3]]]


def test_out_of_range_labels_are_an_error():
    with pytest.raises(ValueError, match="outside classes 0..3"):
        encode_bits(torch.tensor([[[0, 4]]]), 4)
    with pytest.raises(ValueError):
        num_bits(257)
