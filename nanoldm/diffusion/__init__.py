"""The noise schedule and the denoiser adapter that samplers call."""
from nanoldm.diffusion.denoiser import Conditioning, Denoiser
from nanoldm.diffusion.schedule import NoiseSchedule, make_betas

__all__ = ["Conditioning", "Denoiser", "NoiseSchedule", "make_betas"]
