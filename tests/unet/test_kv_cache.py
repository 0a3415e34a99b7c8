"""Cross-attention keeps the prompt's keys and values between sampling steps, and small self-attentions keep their
stacked Q/K/V weights; they must never go stale: a new context, a context changed in place, new weights, a hook or
gradients all give a fresh computation."""
import torch

from nanoldm.layers.attention import Attention
from nanoldm.unet.unet import UNet
from tests.conftest import TINY_UNET


def unet_and_inputs():
    torch.manual_seed(0)
    unet = UNet(TINY_UNET).eval()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 500.0])
    return unet, x, t, torch.randn(2, 7, TINY_UNET.context_dim)


def fresh(unet, x, t, context):
    """The UNet output with nothing cached (gradients on, which bypasses the cache)."""
    with torch.enable_grad():
        return unet(x, t, context).detach()


def test_cached_steps_equal_uncached_ones_bitwise():
    unet, x, t, context = unet_and_inputs()
    with torch.no_grad():
        first, second = unet(x, t, context), unet(x * 0.5, t, context)
    assert any(a._kv is not None for a in unet.modules() if isinstance(a, Attention))
    assert any(a._qkv is not None for a in unet.modules() if isinstance(a, Attention))  # fused self-attention ran
    assert torch.equal(first, fresh(unet, x, t, context)) and torch.equal(second, fresh(unet, x * 0.5, t, context))


def test_nothing_stale_after_new_context_in_place_change_or_new_weights():
    unet, x, t, context = unet_and_inputs()
    with torch.no_grad():
        unet(x, t, context)
        other = torch.randn_like(context)
        assert torch.equal(unet(x, t, other), fresh(unet, x, t, other))  # another context
        context.mul_(2.0)  # the same tensor, changed in place
        assert torch.equal(unet(x, t, context), fresh(unet, x, t, context))
        state = {k: v + 0.01 for k, v in unet.state_dict().items()}
        unet.load_state_dict(state)  # new weights, the same context tensor
        assert torch.equal(unet(x, t, context), fresh(unet, x, t, context))


def test_hooks_and_gradients_bypass_the_cache():
    unet, x, t, context = unet_and_inputs()
    attn = next(m for m in unet.modules() if isinstance(m, Attention) and m.to_k.in_features == context.shape[-1])
    with torch.no_grad():
        plain = unet(x, t, context)
        attn.context_hook = lambda c: (c * 2, c * 3)
        hooked = unet(x, t, context)
        attn.context_hook = None
        assert not torch.equal(plain, hooked) and torch.equal(unet(x, t, context), plain)
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
        with torch.no_grad():
            cached = unet(x, t, context)
        kv = [m._kv for m in unet.modules() if isinstance(m, Attention) and m._kv is not None]
        assert kv and all(k[2].shape[0] == 6 // run and k[4] == run for k in kv)
        torch.testing.assert_close(cached, fresh(unet, x, t, context), rtol=1e-5, atol=1e-5)
    assert _run_length(torch.randn(1, 3, 4)) == 1
