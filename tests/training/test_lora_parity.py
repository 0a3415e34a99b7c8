"""A LoRA that ``train_lora`` trained and exported loads in diffusers' ``load_lora_weights`` (test-only: it needs
``peft``) to the UNet and text-encoder outputs of our adapters (<= 1e-4), in kohya's layout and in PEFT's."""
from __future__ import annotations

import peft  # noqa: F401  (test-only dependency: diffusers' load_lora_weights needs it)
import pytest
import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.data.sources import ImageSource
from nanoldm.finetune.lora import ActiveLora, LoraStack
from nanoldm.finetune.lora_file import read_lora
from nanoldm.training.lora import LoraTraining, train_lora
from nanoldm.training.lora_network import LoraNetwork, LoraSpec
from nanoldm.training.loop import TrainConfig
from tests.conftest import TINY
from tests.reference import write_reference_folder

SPEC = LoraSpec(rank=2, alpha=1, conv_rank=2, conv_alpha=4, targets=("unet", "text"))


def outputs(unet, text, diffusers: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, TINY.unet.context_dim, generator=g)
    ids = torch.randint(0, TINY.text.vocab_size, (2, 77), generator=g)
    with torch.no_grad():
        eps, hidden = unet(x, torch.tensor([3, 700]), ctx), text(ids)
    return (eps.sample, hidden.last_hidden_state) if diffusers else (eps, hidden)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The reference folder, and a LoRA trained on our model of it: its adapters' outputs, the kohya file, the
    PEFT file (the same run exported in the other layout: the run is a pure function of its seed)."""
    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    write_reference_folder(TINY, root / "ref")
    model = load_model(root / "ref")
    before = outputs(model.unet, model.text_encoder, diffusers=False)
    files = {}
    for fmt in ("kohya", "diffusers"):
        loop = TrainConfig(steps=2, batch_size=2, lr=3e-2, warmup_steps=0, out_dir=str(root / fmt), seed=5)
        files[fmt] = train_lora(model, ImageSource("shapes", count=4, size=16), loop,
                                LoraTraining(spec=SPEC, format=fmt))
    network = LoraNetwork(model, SPEC)  # our adapters, with the trained weights
    weights, _ = read_lora(files["kohya"], model.config)
    with torch.no_grad():
        for path, m in weights.items():
            network.adapter(path).down.copy_(m.down)
            network.adapter(path).up.copy_(m.up)
    network.attach()
    ours = outputs(model.unet, model.text_encoder, diffusers=False)
    network.detach()
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(ours, before))  # the LoRA changes both networks
    return root / "ref", ours, files


def test_kohya_file_loads_in_diffusers_as_trained(trained):
    """diffusers 0.42 drops kohya's text self-attention names (transformers 5 calls them unexpected), so the
    kohya file is compared on the UNet; the PEFT file below covers the text encoder."""
    import diffusers

    folder, ours, files = trained
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
    pipe.load_lora_weights(str(files["kohya"].parent), weight_name=files["kohya"].name)
    theirs = outputs(pipe.unet, pipe.text_encoder, diffusers=True)
    assert (ours[0] - theirs[0]).abs().max() <= 1e-4


def test_peft_file_loads_in_diffusers_as_trained(trained):
    import diffusers

    folder, ours, files = trained
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder)
    pipe.load_lora_weights(str(files["diffusers"].parent), weight_name=files["diffusers"].name)
    for a, b in zip(ours, outputs(pipe.unet, pipe.text_encoder, diffusers=True)):
        assert (a - b).abs().max() <= 1e-4


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_nanoldm_applies_the_exported_file_as_trained(trained, fmt):
    """Read back and merged into the weights (what ``<lora:...>`` and ``pipe.load_lora`` do), the file draws what
    the adapters drew in training."""
    folder, ours, files = trained
    model = load_model(folder)
    LoraStack(model.modules()).apply([ActiveLora(fmt, read_lora(files[fmt], model.config)[0])])
    for a, b in zip(ours, outputs(model.unet, model.text_encoder, diffusers=False)):
        assert (a - b).abs().max() <= 1e-5
