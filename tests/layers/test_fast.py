"""Each fast path of the seam (:mod:`nanoldm.layers.fast`) against the plain layer: kept cross-attention keys and
values over runs of equal contexts, fused Q/K/V, packed convolutions (only in small networks), in-place GEGLU,
and the UNet's one timestep and shared guidance prefix."""
import pytest
import torch

from nanoldm.layers.attention import Attention
from nanoldm.layers.conv import Conv2d
from nanoldm.layers.fast import FrozenBlock, _run_length
from nanoldm.layers.frozen import frozen_block, frozen_weights
from nanoldm.unet.unet import UNet
from tests.conftest import TINY_UNET


def plain(module, *args, **kwargs):
    with torch.enable_grad():
        return module(*args, **kwargs).detach()


def test_repeated_contexts_attend_as_one_sequence_and_match_the_per_image_result():
    """A guided batch repeats each context (the prompt's images, the negative prompt's half): keys and values are
    computed once per run of equal contexts and the run's queries attend together; the result is the per-image one."""
    torch.manual_seed(0)
    attn = Attention(16, context_dim=12, heads=2, head_dim=8).eval()
    a, b = torch.randn(2, 1, 5, 12)
    x = torch.randn(6, 9, 16)
    for context, run in ((torch.cat([a.expand(3, -1, -1), b.expand(3, -1, -1)]), 3),
                         (torch.cat([a, a, b, b, a, a]), 2),
                         (torch.cat([a, a, a, b, b, a]), 1),  # runs of unequal length: no grouping
                         (torch.cat([a, b, a, b, a, b]), 1)):
        assert _run_length(context) == run
        with frozen_weights():
            got = attn(x, context)
            kv = frozen_block().cross_kv[attn]
        assert kv.k.shape == (6 // run, 5, 16) and kv.run == run
        torch.testing.assert_close(got, plain(attn, x, context), rtol=1e-5, atol=1e-6)
    assert _run_length(torch.randn(1, 3, 4)) == 1


@pytest.mark.parametrize("width,fused", [(16, True), (512, True), (576, False)])
def test_small_self_attentions_fuse_qkv(width, fused):
    torch.manual_seed(0)
    attn = Attention(width, heads=2, head_dim=width // 2, qkv_bias=True).eval()
    x = torch.randn(2, 5, width)
    with frozen_weights():
        got = attn(x)
        assert (attn in frozen_block().fused_qkv) == fused
    torch.testing.assert_close(got, plain(attn, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 1, False), (1, 0, True)])
def test_packed_convolution_matches_conv2d(dtype, stride, padding, bias):
    torch.manual_seed(0)
    conv = Conv2d(8, 12, 3, stride=stride, padding=padding, bias=bias).to(dtype)  # a network of its own: 12 wide
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    for shape in [(4, 8, 9, 9), (1, 8, 5, 7)]:  # one packed weight serves every input size
        x = torch.randn(shape, dtype=dtype)
        with frozen_weights():
            got = conv(x)
            packed = frozen_block().packed[conv]
        assert (packed is not None) == (dtype == torch.float32)  # bfloat16 stays plain (slower packed)
        torch.testing.assert_close(got, torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride, padding),
                                   rtol=tol, atol=tol)


def test_only_small_networks_pack():
    """Packing pays in the small models; at SD's widths it made the CPU step slower. The network decides."""
    from nanoldm.autoencoder.autoencoder import AutoencoderKL
    from nanoldm.config import SD_V1, SHAPES_TINY

    with torch.device("meta"):
        for network, packs in ((UNet(SHAPES_TINY.unet), True), (AutoencoderKL(SHAPES_TINY.vae), True),
                               (UNet(SD_V1.unet), False), (AutoencoderKL(SD_V1.vae), False)):
            block, x = FrozenBlock(), torch.empty(1, 1, 4, 4)
            convs = [m for m in network.modules() if isinstance(m, Conv2d)]
            assert convs and all(block._packable(m, x) == packs for m in convs)


def test_packed_convolution_skips_autocast():
    torch.manual_seed(0)
    conv = Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)
    with frozen_weights():
        conv(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(x).dtype == torch.bfloat16  # autocast's own conv, not the packed float32 one


@pytest.mark.parametrize("autocast", [False, True])
def test_geglu_in_place_equals_the_plain_path(autocast):
    """In a block GEGLU applies GELU and the gate product inside the projection's output: the same numbers up to
    the rounding of the output matmul (which reads a strided input there), in the plain path's dtype."""
    from nanoldm.unet.transformer import FeedForward

    torch.manual_seed(0)
    ff = FeedForward(16).eval()
    x = torch.randn(2, 10, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with frozen_weights():
            fast = ff(x)
        slow = ff(x)
    assert slow.requires_grad and fast.dtype == slow.dtype == (torch.bfloat16 if autocast else torch.float32)
    tol = 1e-2 if autocast else 1e-6
    torch.testing.assert_close(fast, slow.detach(), rtol=tol, atol=tol)
    assert not torch.equal(fast, torch.zeros_like(fast))


def _rows_seen(module) -> tuple[list, object]:
    rows = []
    return rows, module.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))


@pytest.mark.parametrize("labels", [None, torch.tensor([3, 7, 1])])
def test_guided_batch_runs_the_prefix_once_and_embeds_one_timestep(labels):
    """[x; x] with one t: conv_in and the first ResBlock see x's 3 rows, the time embedding one row; the rest sees
    all 6 rows; the output equals the plain call on the whole batch."""
    from tests.conftest import TINY_UNET_INPAINT
    import dataclasses

    cfg = TINY_UNET_INPAINT if labels is None else dataclasses.replace(TINY_UNET_INPAINT, num_classes=10)
    torch.manual_seed(0)
    unet = UNet(cfg).eval()
    x, ctx = torch.randn(3, cfg.in_channels, 8, 8), torch.randn(6, 4, cfg.context_dim)
    x2, t2, labels2 = torch.cat([x, x]), torch.full((6,), 321.0), None if labels is None else torch.cat([labels] * 2)
    seen = {name: _rows_seen(m) for name, m in (("stem", unet.conv_in), ("first", unet.down_blocks[0].resnets[0]),
                                                 ("time", unet.time_embedding.linear_1),
                                                 ("next", unet.down_blocks[0].attentions[0]))}
    with frozen_weights():
        got = unet(x2, t2, ctx, class_labels=labels2)
    assert {name: rows for name, (rows, _) in seen.items()} == {"stem": [3], "first": [3], "time": [1], "next": [6]}
    for _, handle in seen.values():
        handle.remove()
    assert not unet.conv_in._forward_hooks and not unet.conv_in._forward_pre_hooks  # the seam's hooks are gone
    torch.testing.assert_close(got, plain(unet, x2, t2, ctx, class_labels=labels2), rtol=1e-5, atol=1e-5)


def test_a_batch_whose_halves_differ_shares_nothing():
    torch.manual_seed(0)
    unet = UNet(TINY_UNET).eval()
    x, ctx = torch.randn(4, 4, 8, 8), torch.randn(4, 3, TINY_UNET.context_dim)
    rows, handle = _rows_seen(unet.conv_in)
    with frozen_weights():
        got = unet(x, torch.tensor([5.0, 5.0, 9.0, 9.0]), ctx)
    handle.remove()
    assert rows == [4]
    torch.testing.assert_close(got, plain(unet, x, torch.tensor([5.0, 5.0, 9.0, 9.0]), ctx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("out_ch", [8, 16], ids=["identity-skip", "conv-skip"])
@pytest.mark.parametrize("autocast", [False, True])
def test_resblock_in_place_equals_the_plain_path_bitwise(autocast, out_ch):
    """In a block ResBlocks reuse their buffers (in-place SiLU and sums): the same numbers, and under bfloat16
    autocast the float32 skip is not summed into the bfloat16 branch."""
    from nanoldm.layers.resnet import ResBlock

    torch.manual_seed(0)
    block = ResBlock(8, out_ch, emb_dim=12, norm_groups=4, eps=1e-5).eval()
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():  # no block: the convolutions stay plain, only the in-place reuse differs
            fast = FrozenBlock.resblock(block, x, emb)
        slow = block(x, emb)
    assert slow.requires_grad and fast.dtype == slow.dtype and torch.equal(fast, slow.detach())
