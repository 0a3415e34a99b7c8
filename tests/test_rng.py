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


# --- A1111's seed extras against its own ImageRNG (tests/a1111_reference.py, from modules/rng.py) ---------------

from nanoldm.rng import batch_seeds  # noqa: E402
from tests import a1111_reference as a1111  # noqa: E402

EXTRAS = [
    dict(subseed_strength=0.0),
    dict(subseed_strength=0.35),
    dict(subseed_strength=1.0),
    dict(subseed_strength=0.5, resize_from=(6, 10)),  # the seed's noise drawn smaller, pasted in the middle
    dict(subseed_strength=0.0, resize_from=(12, 6)),  # taller than the image, narrower: cropped and pasted
    dict(subseed_strength=0.2, ensd=31337),
    dict(subseed_strength=0.0, ensd=-3),
]


@pytest.mark.parametrize("extras", EXTRAS, ids=[str(e) for e in EXTRAS])
def test_first_and_later_draws_are_a1111s(extras):
    shape, seed, subseed, batch = (4, 8, 10), 1234, 77, 3
    strength, resize, ensd = extras["subseed_strength"], extras.get("resize_from"), extras.get("ensd", 0)
    seeds, subseeds = batch_seeds(seed, batch, subseed, strength)
    assert (seeds, subseeds) == a1111.all_seeds(seed, subseed, strength, batch)
    ours = ImageNoise(seeds, shape, subseeds=subseeds, subseed_strength=strength, resize_from=resize, ensd=ensd)
    h, w = resize if resize else (0, 0)
    theirs = a1111.ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=strength,
                            seed_resize_from_h=h * a1111.OPT_F, seed_resize_from_w=w * a1111.OPT_F,
                            eta_noise_seed_delta=ensd)
    for _ in range(3):  # the starting noise, then the samplers' draws
        assert ours().equal(theirs.next())


def test_variation_strength_moves_from_the_seed_to_the_subseed():
    def first(strength):
        return ImageNoise([5], (4, 6, 6), subseeds=[9], subseed_strength=strength)()
    assert first(0.0).equal(ImageNoise([5], (4, 6, 6))())
    assert torch.allclose(first(1.0), ImageNoise([9], (4, 6, 6))(), atol=1e-5)
    assert 0 < (first(0.5) - first(0.0)).abs().mean() < (first(1.0) - first(0.0)).abs().mean()


def test_a_variation_seed_gives_every_image_the_seed_and_its_own_subseed():
    assert batch_seeds(10, 3, 50, 0.5) == ([10, 10, 10], [50, 51, 52])
    assert batch_seeds(10, 3) == ([10, 11, 12], [])
