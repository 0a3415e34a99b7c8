"""Fixtures of the latent trainers' tests (ldm, embedding, hypernetwork): the tiny model and its data at 16x16."""
import pytest

from nanoldm.training.ldm import load_data


@pytest.fixture
def model(tiny_model_16px):
    return tiny_model_16px


@pytest.fixture(scope="module")
def data():
    """24 shapes-world images (uint8 pixels) and their captions."""
    return load_data("shapes", 16, count=24, seed=0)
