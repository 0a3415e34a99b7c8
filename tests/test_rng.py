"""Seeds: image i of a batch is seeded seed + i and comes out the same alone or in a batch (A1111's CPU noise,
diffusers' list of CPU generators)."""
import pytest
import torch

from nanoldm.rng import MAX_SEED, ImageNoise, resolve_seed


def test_random_seed_for_none_and_minus_one():
    seeds = {resolve_seed(None) for _ in range(4)} | {resolve_seed(-1) for _ in range(4)}
    assert all(0 <= s <= MAX_SEED for s in seeds) and len(seeds) > 1


@pytest.mark.parametrize("seed", [-2, MAX_SEED + 1])
def test_out_of_range_seed_is_refused(seed):
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\] or -1 for random"):
        resolve_seed(seed)


def test_seed_is_kept():
    assert resolve_seed(0) == 0 and resolve_seed(MAX_SEED) == MAX_SEED and resolve_seed(7.0) == 7


def test_image_i_is_torch_randn_of_seed_plus_i():
    noise = ImageNoise([5, 6, 7], (4, 3, 2))
    first, second = noise(), noise()
    for i, seed in enumerate((5, 6, 7)):
        g = torch.Generator("cpu").manual_seed(seed)
        assert first[i].equal(torch.randn((1, 4, 3, 2), generator=g)[0])
        assert second[i].equal(torch.randn((1, 4, 3, 2), generator=g)[0])  # each image's generator continues


def test_an_image_is_the_same_alone_or_in_a_batch():
    alone, batch = ImageNoise([6], (4, 8, 8)), ImageNoise([5, 6], (4, 8, 8))
    for _ in range(3):
        assert batch()[1].equal(alone()[0])


def test_noise_is_drawn_in_float32_then_cast():
    half = ImageNoise([1], (4, 2, 2), dtype=torch.bfloat16)()
    assert half.dtype == torch.bfloat16 and half.equal(ImageNoise([1], (4, 2, 2))().to(torch.bfloat16))
