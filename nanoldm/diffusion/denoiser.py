"""From an eps- or v-predicting UNet to ``denoised = denoiser(x, sigma, cond)`` (Karras et al. 2022, sec. 5 and
table 1, as k-diffusion's ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser`` do).

x lives in sigma space, x = x0 + sigma * eps. The UNet was trained on VP-space inputs
x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps = x / sqrt(sigma^2 + 1) at the timestep t with sigma_t = sigma, so

    UNet input   c_in x,  c_in = 1 / sqrt(sigma^2 + 1),  timestep sigma_to_t(sigma)
    eps model    denoised = x - sigma * eps
    v model      denoised = c_skip x + c_out v,  c_skip = 1 / (sigma^2 + 1),  c_out = -sigma / sqrt(sigma^2 + 1)

Classifier-free guidance (Ho & Salimans 2022) is applied here, on the model output, so samplers never know about it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from nanoldm.config import PredictionType
from nanoldm.diffusion.schedule import NoiseSchedule


@dataclass
class Conditioning:
    """What the UNet is conditioned on, and how strongly it is guided.

    Shapes: context (B, L, D); uncond_context (B, L, D) or None (same L: the prompt encoder pads them);
    concat (B, C_extra, h, w) or None, extra input channels (inpainting models) appended after the c_in scaling;
    class_labels (B,) or None, used for both halves of a guided batch.
    """

    context: torch.Tensor
    uncond_context: torch.Tensor | None = None
    cfg_scale: float = 1.0
    concat: torch.Tensor | None = None
    class_labels: torch.Tensor | None = None

    @property
    def guided(self) -> bool:
        return self.uncond_context is not None and self.cfg_scale != 1.0

    @cached_property
    def pair_context(self) -> torch.Tensor:
        """[uncond_context; context], the guided batch's, built once. Shapes: -> (2B, L, D)."""
        return torch.cat([self.uncond_context, self.context])


class Denoiser:
    """``denoiser(x, sigma, cond) -> denoised``: the best estimate of x0 given x = x0 + sigma * eps.

    ``unet`` is any callable ``unet(x_t, t, context, class_labels=None) -> (B, C, h, w)``.
    ``quantize=True`` rounds the timestep the UNet sees to the nearest integer (k-diffusion's ``quantize``;
    diffusers' DPM-Solver with Karras sigmas does this); sigma itself is never rounded. ``timestep``, when given,
    maps sigma (B,) float64 -> the UNet's timesteps (B,) instead (LCM asks only at its distilled steps); its
    ``at(float) -> float``, when it has one, serves a single level for the whole batch.
    """

    def __init__(self, unet, schedule: NoiseSchedule, prediction_type: PredictionType = PredictionType.EPSILON,
                 *, quantize: bool = False, timestep=None):
        self.unet, self.schedule = unet, schedule
        self.prediction_type, self.quantize = PredictionType(prediction_type), quantize
        self.timestep = timestep

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Conditioning) -> torch.Tensor:
        """Shapes: x (B, C, h, w), sigma float, 0-d or (B,) -> denoised (B, C, h, w)."""
        x_in, t, s = self._inputs(x, sigma, cond)
        out = self._guided_output(x_in, t, cond)[0] if cond.guided else self.unet(
            x_in, t, cond.context, class_labels=cond.class_labels)
        return self._denoised(x, s, out)

    def with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                    cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """(denoised, uncond_denoised): the guided estimate and the negative prompt's own, which the CFG++
        samplers step along (Chung et al. 2024). The negative prompt runs even at scale 1, as ComfyUI runs it for
        them; without one, both are the same. Shapes: as ``__call__``, twice."""
        if cond.uncond_context is None:
            denoised = self(x, sigma, cond)
            return denoised, denoised
        x_in, t, s = self._inputs(x, sigma, cond)
        out, uncond = self._guided_output(x_in, t, cond)
        return self._denoised(x, s, out), self._denoised(x, s, uncond)

    def _inputs(self, x: torch.Tensor, sigma, cond: Conditioning):
        """The UNet's input, its timesteps and sigma as a column. Shapes: -> (B, C_in, h, w), (B,), (B, 1, 1, 1)."""
        B = x.shape[0]
        # 1. one noise level per image, and the UNet's timestep for it
        sigma = torch.as_tensor(sigma)
        to_t = self.schedule.sigma_to_t_float if self.timestep is None else getattr(self.timestep, "at", None)
        if sigma.numel() == 1 and to_t is not None:  # one level for the batch: in floats, the same values
            level = float(sigma)
            t = to_t(level)
            t = round(t) if self.quantize and math.isfinite(t) else t  # (torch.round keeps NaN as NaN)
            t = torch.full((B,), t, dtype=torch.float32, device=x.device)
            s = torch.full((B, *([1] * (x.dim() - 1))), level, dtype=x.dtype, device=x.device)  # (B, 1, 1, 1)
        else:
            sigma = sigma.detach().cpu().double().reshape(-1).expand(B)  # (B,)
            t = self.schedule.sigma_to_t(sigma) if self.timestep is None else self.timestep(sigma)
            t = (t.round() if self.quantize else t).to(x.device, torch.float32)  # (B,)
            s = sigma.to(x.device, x.dtype).reshape(B, *([1] * (x.dim() - 1)))  # (B, 1, 1, 1)
        # 2. VP-space input, then the extra channels, which are never scaled
        x_in = x / (s**2 + 1).sqrt()
        if cond.concat is not None:
            x_in = torch.cat([x_in, cond.concat.to(x_in.dtype)], dim=1)  # (B, C + C_extra, h, w)
        return x_in, t, s

    def _denoised(self, x: torch.Tensor, s: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The model output -> denoised. Shapes: x, out (B, C, h, w), s (B, 1, 1, 1)."""
        if self.prediction_type is PredictionType.EPSILON:
            return x - s * out
        c_skip, c_out = 1 / (s**2 + 1), -s / (s**2 + 1).sqrt()
        return c_skip * x + c_out * out

    def _guided_output(self, x_in: torch.Tensor, t: torch.Tensor,
                       cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """(uncond + cfg_scale * (cond - uncond), uncond), from ONE UNet call on the batch [uncond; cond].

        Shapes: x_in (B, C_in, h, w), t (B,) -> (B, C, h, w) twice.
        """
        if cond.uncond_context.shape != cond.context.shape:
            raise ValueError(
                f"classifier-free guidance needs the negative and positive contexts to have the same shape, got "
                f"{tuple(cond.uncond_context.shape)} and {tuple(cond.context.shape)}: pad the shorter prompt "
                f"to the same number of tokens")
        labels = cond.class_labels
        out = self.unet(torch.cat([x_in] * 2), torch.cat([t] * 2), cond.pair_context,
                        class_labels=None if labels is None else torch.cat([labels] * 2))  # (2B, C, h, w)
        uncond, conditioned = out.chunk(2)
        return uncond + cond.cfg_scale * (conditioned - uncond), uncond
