"""Inside a ``frozen_weights()`` block layers keep what they derive from their weights and the prompt (packed
convolution weights, stacked Q/K/V, cross-attention keys and values). It must never go stale: a new context, a
context changed in place, and weights changed between blocks in any way all give the plain result; outside a block
nothing is kept."""
import copy

import pytest
import torch

from nanoldm.layers.attention import Attention
from nanoldm.layers.conv import Conv2d
from nanoldm.layers.frozen import frozen_block, frozen_weights
from nanoldm.unet.unet import UNet
from tests.conftest import TINY_UNET


def unet_and_inputs():
    torch.manual_seed(0)
    unet = UNet(TINY_UNET).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 500.0])
    return unet, x, t, torch.randn(2, 7, TINY_UNET.context_dim)


def plain(unet, x, t, context):
    """The UNet output with nothing kept (gradients on: no frozen block applies)."""
    with torch.enable_grad():
        return unet(x, t, context).detach()


def kept(unet) -> dict:
    """What the layers hold: cross-attention K/V, fused Q/K/V, packed convolution weights."""
    return {"kv": [m._kv for m in unet.modules() if isinstance(m, Attention) and m._kv is not None],
            "qkv": [m._qkv for m in unet.modules() if isinstance(m, Attention) and m._qkv is not None],
            "conv": [m._packed for m in unet.modules() if isinstance(m, Conv2d) and m._packed is not None]}


def test_frozen_block_keeps_derived_tensors_and_matches_the_plain_forward():
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        assert frozen_block() is not None and not torch.is_grad_enabled()
        first, second = unet(x, t, context), unet(x * 0.5, t, context)
    assert all(kept(unet).values())  # every kind of cache was used
    torch.testing.assert_close(first, plain(unet, x, t, context), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, plain(unet, x * 0.5, t, context), rtol=1e-5, atol=1e-5)
    with frozen_weights():
        again = unet(x, t, context)  # a second block builds everything afresh, to the same numbers
    assert torch.equal(again, first)


def test_nothing_is_kept_outside_a_block_or_with_gradients_on():
    unet, x, t, context = unet_and_inputs()
    with torch.no_grad():
        unet(x, t, context)
    with frozen_weights(), torch.enable_grad():
        assert frozen_block() is None
        unet(x, t, context)
    assert not any(kept(unet).values())
    assert frozen_block() is None


def test_nothing_stale_within_a_block_new_context_or_context_changed_in_place():
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        unet(x, t, context)
        other = torch.randn_like(context)
        got_other = unet(x, t, other)
        context.mul_(2.0)  # the same tensor, changed in place
        got_changed = unet(x, t, context)
    torch.testing.assert_close(got_other, plain(unet, x, t, other), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_changed, plain(unet, x, t, context), rtol=1e-5, atol=1e-5)


def _fused_adamw_step(unet):
    """A fused AdamW step: it changes the weights in place without bumping their tensor versions."""
    opt = torch.optim.AdamW(unet.parameters(), lr=0.05, fused=True)
    for p in unet.parameters():
        p.grad = torch.randn_like(p)
    versions = [p._version for p in unet.parameters()]
    opt.step()
    return versions == [p._version for p in unet.parameters()]


def _load_state_dict(unet):
    unet.load_state_dict({k: v + 0.05 for k, v in unet.state_dict().items()})


def _write_through_data(unet):
    for p in unet.parameters():
        p.data.add_(0.05)


@pytest.mark.parametrize("change", [_fused_adamw_step, _load_state_dict, _write_through_data],
                         ids=["fused-adamw", "load_state_dict", "data"])
def test_weights_changed_between_blocks_are_seen(change):
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        before = unet(x, t, context)
    change(unet)
    with frozen_weights():
        after = unet(x, t, context)  # the same context tensor: only the new block tells the layers
    want = plain(unet, x, t, context)
    assert (want - before).abs().max() > 1e-2  # the change matters...
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5)  # ...and is seen


def test_fused_adamw_does_not_bump_versions():
    """Why blocks, not tensor versions, decide: if this starts failing, versions became trustworthy again."""
    unet, *_ = unet_and_inputs()
    assert _fused_adamw_step(unet)


def test_hooks_and_gradients_bypass_the_cache():
    unet, x, t, context = unet_and_inputs()
    attn = next(m for m in unet.modules() if isinstance(m, Attention) and m.to_k.in_features == context.shape[-1])
    with frozen_weights():
        base = unet(x, t, context)
        attn.context_hook = lambda c: (c * 2, c * 3)
        hooked = unet(x, t, context)
        attn.context_hook = None
        assert not torch.equal(base, hooked) and torch.equal(unet(x, t, context), base)
    out = unet(x, t, context.requires_grad_())
    out.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0


def test_repeated_contexts_attend_as_one_sequence_and_match_the_per_image_result():
    """A guided batch repeats each context (the prompt's images, the negative prompt's half): keys and values are
    computed once per run of equal contexts and the run's queries attend together; the result is the per-image one."""
    from nanoldm.layers.attention import _run_length

    unet, _, _, _ = unet_and_inputs()
    a, b = torch.randn(2, 1, 7, TINY_UNET.context_dim)
    x, t = torch.randn(6, 4, 8, 8), torch.linspace(10, 900, 6)
    for context, run in ((torch.cat([a.expand(3, -1, -1), b.expand(3, -1, -1)]), 3),
                         (torch.cat([a, a, b, b, a, a]), 2),
                         (torch.cat([a, a, a, b, b, a]), 1),  # runs of unequal length: no grouping
                         (torch.cat([a, b, a, b, a, b]), 1)):
        assert _run_length(context) == run
        with frozen_weights():
            got = unet(x, t, context)
        kv = kept(unet)["kv"]
        assert kv and all(k[2].shape[0] == 6 // run and k[4] == run for k in kv)
        torch.testing.assert_close(got, plain(unet, x, t, context), rtol=1e-5, atol=1e-5)
    assert _run_length(torch.randn(1, 3, 4)) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 1, False), (1, 0, True)])
def test_packed_convolution_matches_conv2d(dtype, stride, padding, bias):
    torch.manual_seed(0)
    conv = Conv2d(8, 12, 3, stride=stride, padding=padding, bias=bias).to(dtype)
    conv.pack = True
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    for shape in [(4, 8, 9, 9), (1, 8, 5, 7)]:  # one packed weight serves every input size
        x = torch.randn(shape, dtype=dtype)
        with frozen_weights():
            got = conv(x)
        assert (conv._packed[1] is not None) == (dtype == torch.float32)  # bfloat16 stays plain (slower packed)
        torch.testing.assert_close(got, torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride, padding),
                                   rtol=tol, atol=tol)


def test_only_small_networks_pack():
    """Packing pays in the small models; at SD's widths it made the CPU step slower."""
    from nanoldm.autoencoder.autoencoder import AutoencoderKL
    from nanoldm.config import SD_V1, SHAPES_TINY

    with torch.device("meta"):
        for network, packs in ((UNet(SHAPES_TINY.unet), True), (AutoencoderKL(SHAPES_TINY.vae), True),
                               (UNet(SD_V1.unet), False), (AutoencoderKL(SD_V1.vae), False)):
            convs = [m for m in network.modules() if isinstance(m, Conv2d)]
            assert convs and all(m.pack == packs for m in convs)


def test_packed_convolution_survives_copies_and_skips_autocast():
    torch.manual_seed(0)
    conv = Conv2d(4, 4, 3, padding=1)
    conv.pack = True
    x = torch.randn(2, 4, 6, 6)
    with frozen_weights():
        got = conv(x)
        twin = copy.deepcopy(conv)  # the packed oneDNN tensor has no storage to copy: it is left behind
        assert twin._packed is None and torch.equal(twin(x), got)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(x).dtype == torch.bfloat16  # autocast's own conv, not the packed float32 one
