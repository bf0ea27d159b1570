"""Bit packing: Triton (interpreter on CPU) and the torch twin agree and round-trip exactly."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from kernels import pack_bits, pack_bits_reference, packed_words, unpack_bits, unpack_bits_reference
from kernels.runtime import device_for_tests

DEVICE = device_for_tests()  # cpu (Triton's interpreter) unless KERNELS_TEST_DEVICE says otherwise


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=0, max_value=5000), p=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
       words=st.sampled_from([1, 16, 128]), seed=st.integers(0, 2**16))
def test_triton_and_twin_agree_and_round_trip(n, p, words, seed):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, generator=g) < p).to(DEVICE)
    packed = pack_bits(mask, words_per_program=words, backend="triton")
    assert packed.dtype == torch.int32 and packed.shape == (packed_words(n),)
    assert torch.equal(packed, pack_bits_reference(mask))
    assert torch.equal(unpack_bits(packed, n, block=256, backend="triton"), mask)
    assert torch.equal(unpack_bits_reference(packed, n), mask)


def test_layout_is_element_i_at_bit_i_mod_32_of_word_i_div_32():
    mask = torch.zeros(70, dtype=torch.bool)
    mask[[0, 5, 31, 32, 69]] = True
    words = pack_bits_reference(mask)
    assert words.tolist() == [1 + 2**5 - 2**31, 1, 2**5]  # bit 31 is the int32 sign bit
    assert torch.equal(pack_bits(mask, backend="triton"), words)


def test_any_shape_packs_in_flatten_order_and_is_32x_smaller_than_float32():
    mask = torch.rand(2, 3, 7, 5) > 0.5
    words = pack_bits(mask, backend="triton")
    assert torch.equal(unpack_bits(words, mask.numel(), backend="triton").view(mask.shape), mask)
    x = torch.randn(8, 32, 16, 16)
    assert pack_bits_reference(x > 0).nbytes * 32 == x.nbytes


@pytest.mark.parametrize("bad, error, words", [
    (torch.ones(4), TypeError, "mask must have dtype torch.bool"),
    ([True, False], TypeError, "mask must be a torch.Tensor"),
])
def test_bad_masks_are_named(bad, error, words):
    with pytest.raises(error, match=words):
        pack_bits(bad)


def test_bad_words_and_sizes_are_named():
    with pytest.raises(TypeError, match="words must be a 1-D torch.int32"):
        unpack_bits(torch.zeros(2, dtype=torch.int64), 10)
    with pytest.raises(ValueError, match="numel=65 needs 3 words"):
        unpack_bits(torch.zeros(2, dtype=torch.int32), 65)
    with pytest.raises(ValueError, match="numel must be an int >= 0"):
        unpack_bits(torch.zeros(2, dtype=torch.int32), -1)
    with pytest.raises(ValueError, match="words_per_program must be a positive power of two"):
        pack_bits(torch.ones(3, dtype=torch.bool), words_per_program=3)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 31, 32, 33, 1000])
def test_the_torch_byte_path_packs_like_numpy(n):
    # pack_bits_reference packs bytes with NumPy on CPU and with torch elsewhere (CUDA tensors
    # with backend="torch"); both must give the layout of the module docstring
    from kernels.bits import _pack_bytes_torch

    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5
    words = pack_bits_reference(mask)
    if n:
        assert torch.equal(_pack_bytes_torch(mask), words.view(torch.uint8)[:(n + 7) // 8])
    assert torch.equal(unpack_bits_reference(words, n), mask)
