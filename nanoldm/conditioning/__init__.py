"""Conditions other than text: class labels and layouts become context tokens; masks become extra UNet input
channels (an inpainting model). See each module's docstring."""
from nanoldm.conditioning.class_label import ClassEmbedding
from nanoldm.conditioning.layout import LayoutEncoder, fourier_features
from nanoldm.conditioning.mask import inpaint_concat, latent_mask, masked_image_latents

__all__ = ["ClassEmbedding", "LayoutEncoder", "fourier_features", "inpaint_concat", "latent_mask",
           "masked_image_latents"]
