"""See inside a generation: what the model predicted at each step, and where each prompt word was looked at.

``explain(pipe, opts)`` runs one ordinary txt2img generation (the same images as ``Pipeline.generate``) with two
observers on it:

1. the denoising trajectory: the sampler's callback hands over the x0 prediction (``denoised``) after every step;
   each is decoded by the VAE, giving a strip of how the picture took shape;
2. cross-attention maps: every cross-attention layer of the UNet hands its softmax to an
   :class:`~nanoldm.layers.attention_record.AttentionRecorder`, which sums the real probabilities of the run,
   averaged over heads. Here they are averaged over calls (steps), upsampled from each layer's resolution to the
   image, averaged over layers, and the conditional half of the guided batch [uncond; cond] is kept. A word's map
   is the attention its BPE pieces received, summed: at every pixel the shares of all context tokens (BOS, words,
   padding) sum to 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from nanoldm.layers.attention_record import AttentionRecorder, recording_attention
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.conventions import PIXEL_ROUNDING
from nanoldm.pipelines.images import image_grid, tensor_to_pil
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.pipelines.sampling import decode
from nanoldm.text.encode import CHUNK_TOKENS, chunk_prompt
from nanoldm.text.prompt import extract_extra_networks
from nanoldm.unet.transformer import BasicTransformerBlock


@dataclass
class WordAttention:
    """One prompt word and the attention the image gave it.

    ``columns``: its BPE pieces' positions in the context (chunk c, token p -> c * 77 + 1 + p).
    Shapes: attention (H, W), in pixels; values in [0, 1], the share of each pixel's attention this word got.
    """

    word: str
    columns: list[int]
    attention: torch.Tensor

    @property
    def share(self) -> float:
        """The word's share of the image's attention, averaged over pixels."""
        return float(self.attention.mean())


@dataclass
class Explanation:
    """One image of a generation, seen from inside.

    ``trajectory``: the decoded x0 prediction after each sampling step (the last one is close to ``image``).
    ``attention``: (M, H, W), the attention of every pixel to each of the M context tokens (sums to 1 over M).
    """

    image: Image.Image
    trajectory: list[Image.Image]
    words: list[WordAttention]
    attention: torch.Tensor = field(repr=False)

    def strip(self) -> Image.Image:
        """The trajectory side by side, left to right."""
        return image_grid(self.trajectory, len(self.trajectory))


def cross_attention_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's cross-attention layers (each transformer block's ``attn2``), in the order the UNet runs them."""
    return [block.attn2 for block in unet.modules() if isinstance(block, BasicTransformerBlock)]


class TrajectoryMonitor(SamplingMonitor):
    """A :class:`~nanoldm.pipelines.progress.SamplingMonitor` that also keeps every step's x0 prediction, so an
    explanation can be watched, interrupted (the trajectory then ends early) and seen in full afterwards."""

    def __init__(self):
        super().__init__()
        self.trajectory: list[torch.Tensor] = []  # per step: (B, C, h, w) denoised latents

    def on_step(self, step: int, steps: int, denoised: torch.Tensor, render=None) -> None:
        self.trajectory.append(denoised.detach().clone())
        super().on_step(step, steps, denoised, render)


def explain(pipe: Pipeline, opts: GenerateOptions, *, progress: bool = False,
            monitor: TrajectoryMonitor | None = None) -> list[Explanation]:
    """txt2img with ``opts`` (as ``pipe.generate(opts)``), each image returned with its trajectory and the
    attention maps of its prompt's words. ``monitor``: to watch or interrupt the run from another thread."""
    monitor = monitor if monitor is not None else TrajectoryMonitor()
    monitor.begin_run()
    try:
        with recording_attention(cross_attention_layers(pipe.unet)) as recorder:
            images = pipe.generate(opts, progress=progress, monitor=monitor)
    finally:
        monitor.end()
    parts = pipe.parts()
    rounding = PIXEL_ROUNDING[opts.like]  # 8-bit pixels as the images are made
    steps = [tensor_to_pil(decode(parts, latents), rounding) for latents in monitor.trajectory]  # steps x B images
    W, H = images[0].size
    attention = attention_maps(recorder, len(images), (H, W))  # (B, M, H, W)
    text, _ = extract_extra_networks(opts.prompt)  # the text that was encoded, without <hypernet:...> tags
    words = prompt_words(parts.tokenizer, text)
    return [Explanation(image, [step[b] for step in steps],
                        [WordAttention(word, columns, attention[b, columns].sum(0)) for word, columns in words],
                        attention[b])
            for b, image in enumerate(images)]


def attention_maps(recorder: AttentionRecorder, batch: int, size: tuple[int, int]) -> torch.Tensor:
    """The recorded probabilities averaged over calls, upsampled to ``size`` = (H, W) and averaged over layers;
    the last ``batch`` rows of each layer's batch (the conditional half of a guided batch, else all of it).

    Shapes: -> (batch, M, H, W); sums to 1 over M at every pixel (bilinear upsampling keeps sums).
    """
    H, W = size
    maps = []
    for layer in recorder.layers:
        record = recorder.record(layer)
        if record is None:
            continue
        mean = record.mean[-batch:]  # (batch, N, M)
        h, w = _layer_grid(mean.shape[1], H, W)
        grid = mean.transpose(1, 2).reshape(batch, -1, h, w)  # (batch, M, h, w)
        maps.append(F.interpolate(grid, size=(H, W), mode="bilinear", align_corners=False))
    if not maps:
        raise ValueError("no cross-attention was recorded: this model's UNet has no cross-attention layers")
    return torch.stack(maps).mean(0).cpu()


def _layer_grid(n: int, H: int, W: int) -> tuple[int, int]:
    """The (h, w) of a layer with n query positions in an H x W image: each downsampling halves the sides
    (rounding up, as a stride-2 convolution with padding 1 does)."""
    h, w = H, W
    while h * w > n:
        h, w = -(-h // 2), -(-w // 2)
    if h * w != n:
        raise ValueError(f"a cross-attention layer has {n} positions, not a downsampling of {H}x{W}")
    return h, w


def prompt_words(tokenizer, prompt: str) -> list[tuple[str, list[int]]]:
    """The prompt's words (A1111 syntax parsed, BPE pieces joined) with their columns in the context."""
    words = []
    for c, chunk in enumerate(chunk_prompt(tokenizer, prompt)):
        ids = chunk.ids[1:1 + CHUNK_TOKENS]  # without BOS and the closing EOS
        while ids and ids[-1] == tokenizer.pad_id:
            ids = ids[:-1]
        offset = c * (CHUNK_TOKENS + 2) + 1
        words += [(word, [offset + p for p in positions]) for word, positions in tokenizer.words(ids)]
    return words
