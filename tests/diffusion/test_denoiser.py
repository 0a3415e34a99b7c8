"""The Denoiser adapter: exact on an oracle model, eps and v; classifier-free guidance; extra channels."""
from __future__ import annotations

import pytest
import torch

from nanoldm.config import PredictionType, ScheduleConfig
from nanoldm.diffusion.denoiser import Conditioning, Denoiser
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.unet.unet import UNet
from tests.conftest import TINY_UNET_INPAINT

SD = NoiseSchedule.from_config(ScheduleConfig())
MU = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64).reshape(1, 4, 1, 1)
STD = torch.tensor([0.5, 1.0, 0.2, 0.8], dtype=torch.float64).reshape(1, 4, 1, 1)


def posterior_mean(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma eps = x] for x0 ~ N(MU, STD^2) per channel."""
    return (STD**2 * x + sigma**2 * MU) / (STD**2 + sigma**2)


class OracleUNet:
    """The exact eps (or v) a perfect UNet predicts for Gaussian data, from VP-space input and timestep."""

    def __init__(self, prediction_type: PredictionType):
        self.prediction_type = prediction_type

    def __call__(self, x_in, t, context, class_labels=None):
        sigma = SD.t_to_sigma(t).reshape(-1, 1, 1, 1)
        x = x_in * (1 + sigma**2).sqrt()  # back to sigma space
        x0 = posterior_mean(x, sigma)
        eps = (x - x0) / sigma
        if self.prediction_type is PredictionType.EPSILON:
            return eps
        return (eps - sigma * x0) / (1 + sigma**2).sqrt()  # v = sqrt(ab) eps - sqrt(1 - ab) x0


@pytest.mark.parametrize("prediction_type", list(PredictionType))
@pytest.mark.parametrize("sigma", [0.0292, 0.7, 3.3, 14.0])
def test_oracle_model_gives_the_posterior_mean(prediction_type, sigma):
    denoiser = Denoiser(OracleUNet(prediction_type), SD, prediction_type)
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64) * 3
    want = posterior_mean(x, torch.tensor(sigma, dtype=torch.float64))
    cond = Conditioning(context=torch.zeros(3, 1, 1))
    for s in (sigma, torch.tensor(sigma), torch.full((3,), sigma)):  # float, 0-d, (B,)
        torch.testing.assert_close(denoiser(x, s, cond), want, rtol=1e-5, atol=1e-6)  # t goes to the UNet in float32


class RecordingUNet:
    """Output depends on x, t, context and class labels; every call's inputs are kept."""

    def __init__(self, out_channels: int = 4):
        self.calls, self.out_channels = [], out_channels

    def __call__(self, x_in, t, context, class_labels=None):
        self.calls.append(dict(x=x_in, t=t, context=context, class_labels=class_labels))
        scale = context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        out = torch.tanh(x_in[:, :self.out_channels] * scale) + t.reshape(-1, 1, 1, 1) / 1000
        return out if class_labels is None else out + class_labels.reshape(-1, 1, 1, 1)


def make_cond(B=2, L=3, D=5, **kw) -> Conditioning:
    return Conditioning(context=torch.randn(B, L, D), **kw)


def test_cfg_equals_two_separate_calls():
    unet = RecordingUNet()
    denoiser = Denoiser(unet, SD)
    x, sigma = torch.randn(2, 4, 3, 3), torch.tensor([2.0, 0.5])
    cond = make_cond(uncond_context=torch.randn(2, 3, 5), cfg_scale=7.5, class_labels=torch.tensor([1.0, 2.0]))
    guided = denoiser(x, sigma, cond)
    assert len(unet.calls) == 1 and unet.calls[0]["x"].shape[0] == 4  # one batched call: [uncond; cond]
    torch.testing.assert_close(unet.calls[0]["context"], torch.cat([cond.uncond_context, cond.context]))
    torch.testing.assert_close(unet.calls[0]["class_labels"], torch.tensor([1.0, 2.0, 1.0, 2.0]))

    d_uncond = denoiser(x, sigma, Conditioning(cond.uncond_context, class_labels=cond.class_labels))
    d_cond = denoiser(x, sigma, Conditioning(cond.context, class_labels=cond.class_labels))
    torch.testing.assert_close(guided, d_uncond + 7.5 * (d_cond - d_uncond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", list(PredictionType))
def test_cfg_is_applied_to_the_model_output(prediction_type):
    unet = RecordingUNet()
    denoiser = Denoiser(unet, SD, prediction_type)
    x, s = torch.randn(1, 4, 2, 2), 1.7
    cond = make_cond(B=1, uncond_context=torch.randn(1, 3, 5), cfg_scale=3.0)
    guided = denoiser(x, s, cond)
    t = SD.sigma_to_t(torch.tensor([s])).float()
    out_u, out_c = (unet(x / (1 + s**2) ** 0.5, t, c) for c in (cond.uncond_context, cond.context))
    out = out_u + 3.0 * (out_c - out_u)
    want = x - s * out if prediction_type is PredictionType.EPSILON else x / (1 + s**2) - out * s / (1 + s**2) ** 0.5
    torch.testing.assert_close(guided, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cond", [make_cond(), make_cond(uncond_context=torch.randn(2, 3, 5), cfg_scale=1.0)])
def test_no_guidance_is_one_unbatched_call(cond):
    unet = RecordingUNet()
    Denoiser(unet, SD)(torch.randn(2, 4, 3, 3), 1.0, cond)
    assert len(unet.calls) == 1 and unet.calls[0]["x"].shape[0] == 2
    assert unet.calls[0]["context"] is cond.context


def test_cfg_with_different_context_lengths_is_refused():
    cond = make_cond(L=77, uncond_context=torch.randn(2, 154, 5), cfg_scale=7.0)
    with pytest.raises(ValueError, match="same shape.*pad"):
        Denoiser(RecordingUNet(), SD)(torch.randn(2, 4, 3, 3), 1.0, cond)


def test_unet_input_scaling_timestep_and_unscaled_concat():
    unet = RecordingUNet()
    x, concat = torch.randn(2, 4, 3, 3), torch.randn(2, 5, 3, 3)
    sigma = torch.tensor([14.0, 0.1])
    Denoiser(unet, SD)(x, sigma, make_cond(concat=concat, uncond_context=torch.randn(2, 3, 5), cfg_scale=2.0))
    x_in = unet.calls[0]["x"]
    assert x_in.shape == (4, 9, 3, 3)
    c_in = (1 / (sigma**2 + 1).sqrt()).reshape(2, 1, 1, 1)
    torch.testing.assert_close(x_in[:2, :4], x * c_in)
    assert torch.equal(x_in[:2, 4:], concat) and torch.equal(x_in[2:, 4:], concat)
    torch.testing.assert_close(unet.calls[0]["t"], SD.sigma_to_t(sigma).float().repeat(2))


def test_quantize_rounds_the_timestep_only():
    unet = RecordingUNet()
    sigma = SD.t_to_sigma(torch.tensor([500.3, 20.7]))
    Denoiser(unet, SD, quantize=True)(torch.randn(2, 4, 1, 1), sigma, make_cond())
    assert unet.calls[0]["t"].tolist() == [500.0, 21.0]
    Denoiser(unet, SD)(torch.randn(2, 4, 1, 1), sigma, make_cond())
    torch.testing.assert_close(unet.calls[1]["t"], torch.tensor([500.3, 20.7]))


@pytest.mark.parametrize("timestep", [None, "unipc"])
@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_level_for_the_batch_takes_a_float_path_with_the_same_values(quantize, dtype, timestep):
    """A 0-d sigma (every sampler's call) is mapped in Python floats (the schedule's map, or A1111 UniPC's
    ``VPTimestep.at``); it must give the tensor path's timesteps, scalings and output bitwise: table levels,
    levels between them, outside the table (clamped), and 0."""
    from nanoldm.samplers.unipc import VPTimestep

    timestep = VPTimestep(SD.alphas_cumprod) if timestep else None
    torch.manual_seed(0)
    x, cond = torch.randn(3, 4, 2, 2, dtype=dtype), make_cond(B=3, uncond_context=torch.randn(3, 3, 5), cfg_scale=3.0)
    levels = [*SD.sigmas[[0, 1, 500, 999]].float().tolist(), 0.0123, 0.5, 2.718, 14.6, 20.0, 0.0]
    for level in levels + torch.rand(40).mul(15).tolist():
        fast, slow = RecordingUNet(), RecordingUNet()
        one = Denoiser(fast, SD, quantize=quantize, timestep=timestep)(x, torch.tensor(level), cond)
        each = Denoiser(slow, SD, quantize=quantize, timestep=timestep)(x, torch.full((3,), level), cond)
        assert all(torch.equal(fast.calls[0][k], slow.calls[0][k]) for k in ("t", "x"))
        assert torch.equal(one, each), level
        if timestep is None:
            assert SD.sigma_to_t_float(level) == float(SD.sigma_to_t(torch.tensor([level], dtype=torch.float64)))
        else:
            assert timestep.at(level) == float(timestep(torch.tensor([level], dtype=torch.float64))[0])


def test_with_our_unet_inpainting_model_and_guidance():
    """The real UNet signature: 9 input channels (latent + mask + masked latent), CFG batch, v or eps."""
    unet = UNet(TINY_UNET_INPAINT).eval()
    x, concat = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8, 8)
    ctx, unctx = torch.randn(2, 3, TINY_UNET_INPAINT.context_dim), torch.randn(2, 3, TINY_UNET_INPAINT.context_dim)
    denoiser = Denoiser(unet, SD, PredictionType.V)
    with torch.no_grad():
        guided = denoiser(x, torch.tensor([5.0, 0.3]), Conditioning(ctx, unctx, 4.0, concat=concat))
        d_u = denoiser(x, torch.tensor([5.0, 0.3]), Conditioning(unctx, concat=concat))
        d_c = denoiser(x, torch.tensor([5.0, 0.3]), Conditioning(ctx, concat=concat))
    assert guided.shape == x.shape
    torch.testing.assert_close(guided, d_u + 4.0 * (d_c - d_u), rtol=1e-4, atol=1e-4)


def test_guided_call_is_k_diffusions_and_our_unet_shares_its_prefix_in_a_block():
    """The guided call is k-diffusion's: [x; x], [t; t], [uncond; cond], one call, chunk. In a frozen block our UNet
    runs its context-free prefix once for both halves and, when every image is at the same noise level, embeds
    one timestep; the result is the plain call's."""
    from nanoldm.layers.frozen import frozen_weights

    torch.manual_seed(0)
    unet = UNet(TINY_UNET_INPAINT).eval()
    seen, rows = [], []
    unet.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args), with_kwargs=True)
    unet.conv_in.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    generic = lambda x, t, c, class_labels=None: unet(x, t, c, class_labels=class_labels)  # noqa: E731
    x, concat = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8, 8)
    ctx, unctx = torch.randn(2, 3, TINY_UNET_INPAINT.context_dim), torch.randn(2, 3, TINY_UNET_INPAINT.context_dim)
    cond = Conditioning(ctx, unctx, 4.0, concat=concat)
    for sigma in (torch.tensor([5.0, 5.0]), torch.tensor([5.0, 0.3])):
        with frozen_weights():
            shared = Denoiser(unet, SD)(x, sigma, cond)
        x_in, t, context = seen[-1]
        assert x_in.shape[0] == 4 and torch.equal(x_in[:2], x_in[2:]) and torch.equal(t[:2], t[2:])
        assert torch.equal(context, torch.cat([unctx, ctx])) and rows[-1] == 2
        with torch.no_grad():
            torch.testing.assert_close(shared, Denoiser(generic, SD)(x, sigma, cond), rtol=1e-4, atol=1e-4)
        assert rows[-1] == 4  # outside a block: the plain UNet on the whole batch
