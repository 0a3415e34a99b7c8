"""Our UNet against diffusers' UNet2DConditionModel with the same random weights."""
import pytest
import torch

from nanoldm.config import SD_V1, UNetConfig
from nanoldm.unet.unet import UNet
from tests.conftest import TINY_UNET, TINY_UNET_INPAINT, TINY_UNET_LINEAR

import diffusers

from tests.reference import reference_unet




@pytest.mark.parametrize("cfg", [TINY_UNET, TINY_UNET_LINEAR, TINY_UNET_INPAINT,
                                 UNetConfig(**{**TINY_UNET.__dict__, "num_classes": 10})],
                         ids=["conv-proj", "linear-proj", "inpaint-9ch", "class-embedding"])
def test_matches_diffusers(cfg):
    ref = reference_unet(cfg)
    ours = UNet(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, cfg.in_channels, 16, 16)
    t = torch.tensor([10, 999])
    ctx = torch.randn(2, 7, cfg.context_dim)
    labels = torch.tensor([3, 7]) if cfg.num_classes else None
    with torch.no_grad():
        want = ref(x, t, ctx, class_labels=labels).sample
        got = ours(x, t, ctx, class_labels=labels)
    assert got.shape == want.shape == (2, cfg.out_channels, 16, 16)
    assert (got - want).abs().max() <= 1e-4


@pytest.mark.parametrize("cfg", [TINY_UNET, TINY_UNET_INPAINT, UNetConfig(**{**TINY_UNET.__dict__, "num_classes": 10})],
                         ids=["conv-proj", "inpaint-9ch", "class-embedding"])
def test_sampling_path_matches_diffusers(cfg):
    """What a guided sampling step runs: a frozen block (packed convolutions, kept K/V, fused Q/K/V, in-place
    GEGLU, one timestep embedded once, the context-free prefix run once on x) on [x; x], against diffusers."""
    from nanoldm.layers.frozen import frozen_weights

    ref = reference_unet(cfg)
    ours = UNet(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x, ctx = torch.randn(3, cfg.in_channels, 16, 16), torch.randn(6, 7, cfg.context_dim)
    labels = torch.tensor([3, 7, 1, 3, 7, 1]) if cfg.num_classes else None
    with torch.no_grad():
        want = ref(torch.cat([x, x]), torch.full((6,), 321.0), ctx, class_labels=labels).sample
    rows = []
    ours.conv_in.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    with frozen_weights():
        got = ours(torch.cat([x, x]), torch.full((6,), 321.0), ctx, class_labels=labels)
    assert rows == [3]  # the prefix ran once for both halves
    assert got.shape == want.shape == (6, cfg.out_channels, 16, 16)
    assert (got - want).abs().max() <= 1e-4


def test_odd_latent_size_matches_diffusers():
    """Sizes not divisible by 2^levels: the upsampler follows the skip's size, as diffusers does."""
    ref, ours = reference_unet(TINY_UNET), UNet(TINY_UNET).eval()
    ours.load_state_dict(ref.state_dict())
    x, ctx = torch.randn(1, 4, 9, 13), torch.randn(1, 3, 32)
    with torch.no_grad():
        assert (ours(x, 500, ctx) - ref(x, 500, ctx).sample).abs().max() <= 1e-4


def test_sd_v1_layout_matches_diffusers_on_meta():
    with torch.device("meta"):
        ours = UNet(SD_V1.unet)
        ref = diffusers.UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
    got = {k: v.shape for k, v in ours.state_dict().items()}
    want = {k: v.shape for k, v in ref.state_dict().items()}
    assert got == want and len(got) == 686


def test_class_embedding_requires_labels():
    model = UNet(UNetConfig(**{**TINY_UNET.__dict__, "num_classes": 3}))
    with pytest.raises(ValueError, match="class_labels"):
        model(torch.randn(1, 4, 8, 8), 1, torch.randn(1, 2, 32))


def test_gradient_checkpointing_gives_same_gradients():
    model = UNet(TINY_UNET).train()
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 32)
    model(x, 3, ctx).square().mean().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(x, 3, ctx).square().mean().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(p.grad, a)
