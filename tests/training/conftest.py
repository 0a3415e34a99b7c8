"""Fixtures of the latent trainers' tests (ldm, embedding, hypernetwork): the tiny model and its data at 16x16."""
import pytest

from nanoldm.data.sources import shapes_images


@pytest.fixture
def model(tiny_model_16px):
    return tiny_model_16px


@pytest.fixture(scope="module")
def data():
    """24 shapes-world images (uint8 pixels) and their captions."""
    images = shapes_images(24, 16, seed=0)
    return images.pixels, images.captions
