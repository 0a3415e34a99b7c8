"""The small SD 1.x model every parity test of this folder samples (``SMALL`` in ``test_a1111``)."""
import pytest
import torch

from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.pipeline import Pipeline
from tests.samplers.test_a1111 import SMALL


@pytest.fixture(scope="module")
def pipe(tokenizer):
    torch.manual_seed(0)
    model = LatentDiffusion.from_config(SMALL, tokenizer=tokenizer)
    with torch.no_grad():  # a random UNet's eps is tiny; scale its output so samplers' differences show in pixels
        model.unet.conv_out.weight.mul_(20)
    return Pipeline(model)
