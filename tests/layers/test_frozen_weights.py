"""The block ``frozen_weights()`` switches on, and its promise: inside a block neither the weights nor the contexts
are modified in place; what a block keeps is its own and goes when it ends, so anything changed between blocks is
seen; a new context (a new tensor) is seen inside a block; outside a block, or with gradients on, nothing is kept."""
import copy
import gc
import weakref

import pytest
import torch

from nanoldm.layers.fast import FrozenBlock
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


def kept(block: FrozenBlock) -> dict:
    """What the block holds: cross-attention K/V, fused Q/K/V, packed convolution weights."""
    return {"kv": list(block.cross_kv.values()), "qkv": list(block.fused_qkv.values()),
            "conv": [p for p in block.packed.values() if p is not None]}


def layer_tensors(unet) -> list:
    """Tensors a layer holds outside its parameters and buffers (there should be none)."""
    def holds_tensor(v):
        return isinstance(v, torch.Tensor) or (isinstance(v, (tuple, list)) and any(map(holds_tensor, v)))

    return [(name, key) for name, m in unet.named_modules() for key, v in vars(m).items() if holds_tensor(v)]


def test_frozen_weights_is_a_context_manager_and_a_decorator():
    @frozen_weights()
    def inside():
        return frozen_block()

    assert isinstance(inside(), FrozenBlock) and frozen_block() is None
    with frozen_weights():
        outer = frozen_block()
        assert isinstance(outer, FrozenBlock) and not torch.is_grad_enabled()
        with frozen_weights():
            assert frozen_block() is not outer  # a nested block starts afresh
        assert frozen_block() is outer
    assert frozen_block() is None and torch.is_grad_enabled()


def test_the_block_keeps_its_tensors_and_drops_them_when_it_ends():
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        block = frozen_block()
        first, second = unet(x, t, context), unet(x * 0.5, t, context)
        assert all(kept(block).values())  # every kind of cache was used
    assert not layer_tensors(unet)  # nothing was left in the layers
    torch.testing.assert_close(first, plain(unet, x, t, context), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, plain(unet, x * 0.5, t, context), rtol=1e-5, atol=1e-5)
    gone = weakref.ref(block)
    del block
    gc.collect()
    assert gone() is None  # the block, and all it kept, is freed
    with frozen_weights():
        again = unet(x, t, context)  # a second block builds everything afresh, to the same numbers
    assert torch.equal(again, first)


def test_nothing_is_kept_with_gradients_on():
    unet, x, t, context = unet_and_inputs()
    with frozen_weights(), torch.enable_grad():
        assert frozen_block() is None
        unet(x, t, context)
    assert not layer_tensors(unet) and frozen_block() is None


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "enable_grad"])
def test_the_same_numbers_under_any_grad_mode(mode):
    """Inference tensors have no version counter: nothing in the seam may read one."""
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        want = unet(x, t, context)
    with getattr(torch, mode)():
        with frozen_weights():
            got = unet(x, t, context)
            assert torch.equal(unet(x, t, context), got)  # the second call uses what the first kept
    assert torch.equal(got, want)
    with torch.inference_mode():
        torch.testing.assert_close(unet(x, t, context), plain(unet, x, t, context), rtol=1e-5, atol=1e-5)


def test_a_new_context_is_seen_and_an_equal_new_tensor_reuses_the_keys_and_values():
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        block = frozen_block()
        unet(x, t, context)
        first = {layer: kv.k for layer, kv in block.cross_kv.items()}
        unet(x, t, context.clone())  # equal values (a guided batch's cat at every step): the same keys
        assert all(block.cross_kv[layer].k is k for layer, k in first.items())
        other = torch.randn_like(context)
        got_other = unet(x, t, other)
    torch.testing.assert_close(got_other, plain(unet, x, t, other), rtol=1e-5, atol=1e-5)


def test_a_context_changed_in_place_is_seen_in_the_next_block():
    """Inside a block that breaks the promise; between blocks it is seen."""
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        unet(x, t, context)
    context.mul_(2.0)
    with frozen_weights():
        got = unet(x, t, context)
    torch.testing.assert_close(got, plain(unet, x, t, context), rtol=1e-5, atol=1e-5)


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
        after = unet(x, t, context)  # the same context tensor: only the new block knows nothing
    want = plain(unet, x, t, context)
    assert (want - before).abs().max() > 1e-2  # the change matters...
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5)  # ...and is seen


def test_fused_adamw_does_not_bump_versions():
    """Why blocks, not tensor versions, decide: if this starts failing, versions became trustworthy again."""
    unet, *_ = unet_and_inputs()
    assert _fused_adamw_step(unet)


def test_hooks_and_gradients_bypass_the_cache():
    unet, x, t, context = unet_and_inputs()
    attn = next(m for m in unet.modules() if hasattr(m, "context_hook") and m.to_k.in_features == context.shape[-1])
    with frozen_weights():
        base = unet(x, t, context)
        attn.context_hook = lambda c: (c * 2, c * 3)
        hooked = unet(x, t, context)
        attn.context_hook = None
        assert not torch.equal(base, hooked) and torch.equal(unet(x, t, context), base)
    out = unet(x, t, context.requires_grad_())
    out.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0


def test_copies_of_a_network_work_in_a_block():
    unet, x, t, context = unet_and_inputs()
    with frozen_weights():
        got = unet(x, t, context)
        twin = copy.deepcopy(unet)
        torch.testing.assert_close(twin(x, t, context), got, rtol=1e-5, atol=1e-5)
