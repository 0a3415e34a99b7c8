"""The latent cache: a data set's images and captions run once through the frozen VAE and text encoder.

The LDM trainer never sees pixels. Each image is encoded once and stored as its VAE posterior, **mean and
std**, both already multiplied by ``scale_factor``; every training step draws a fresh
z = scale * (mean + std * eps), as CompVis' LDM does (``encode_first_stage(x).sample()``), so caching loses
nothing. (A plain AE, ``variational=False``, stores std = 0.)

Captions are stored as the text encoder's **hidden states**, not token ids: the encoder is frozen, so its
output per caption never changes, and a step then costs no text-encoder pass. To keep that small they are
stored once per *distinct* caption (``contexts``, (U, L, width)) with an index per image (``caption_index``,
(N,)); the shapes world has a few hundred distinct captions for any number of images. Captions go through
:mod:`nanoldm.text.encode` exactly as generation encodes prompts (75-token chunks, A1111 weights), so training
and sampling see the same contexts; every caption is padded with empty chunks to
the longest one's length L, and ``empty`` is the empty prompt at that length (classifier-free guidance's
unconditional context).

The file ``DIR/latents-{key}.safetensors`` is named by a SHA-256 over the pixels, the captions, the VAE's and
the text encoder's weights and the scale factor (``cache_key``): changed data or a changed model gives a new
key, so a stale cache is never read. Older files are left in place.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from nanoldm.checkpoint.formats import read_tensors, write_safetensors
from nanoldm.layers.frozen import frozen_weights
from nanoldm.model import LatentDiffusion
from nanoldm.text.encode import PromptChunk, chunk_prompt, empty_chunk, encode_chunks, pad_chunks

FORMAT = "1"  # bump when the layout of the cache file changes
KEY_META = "nanoldm_latent_cache"


@dataclass
class LatentCache:
    """Scaled posteriors and caption contexts of N images.

    Shapes: mean, std (N, C, h, w); contexts (U, L, width); caption_index (N,) int64 into contexts;
    empty (1, L, width)."""
    mean: torch.Tensor
    std: torch.Tensor
    contexts: torch.Tensor
    caption_index: torch.Tensor
    empty: torch.Tensor

    def __len__(self) -> int:
        return self.mean.shape[0]

    def to(self, device) -> "LatentCache":
        return LatentCache(*(t.to(device) for t in (self.mean, self.std, self.contexts, self.caption_index,
                                                      self.empty)))

    def latents(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A posterior sample z = mean + std * eps for each index. Shapes: (B,) -> (B, C, h, w)."""
        mean, std = self.mean[indices], self.std[indices]
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                          device=generator.device if generator is not None else mean.device)
        return mean + std * eps.to(mean.device)

    def context(self, indices: torch.Tensor) -> torch.Tensor:
        """Each image's caption context. Shapes: (B,) -> (B, L, width)."""
        return self.contexts[self.caption_index[indices.to(self.caption_index.device)]]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "contexts": self.contexts,
                "caption_index": self.caption_index, "empty": self.empty}


def cache_key(pixels: torch.Tensor, captions: list[str], model: LatentDiffusion) -> str:
    """SHA-256 (hex) of everything the cache depends on. Shapes: pixels (N, 3, H, W) uint8."""
    h = hashlib.sha256(f"nanoldm latent cache v{FORMAT}\n".encode())
    h.update(str(tuple(pixels.shape)).encode())
    h.update(pixels.contiguous().cpu().numpy().tobytes())
    h.update(json.dumps(captions).encode())
    h.update(repr(model.config.vae.scale_factor).encode())
    for name in ("vae", "text_encoder"):
        for k, v in sorted(getattr(model, name).state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


@frozen_weights()
def encode_images(model: LatentDiffusion, pixels: torch.Tensor, *, batch_size: int = 64,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled posterior mean and std of each image. Shapes: pixels (N, 3, H, W) uint8 -> 2 x (N, C, h, w)."""
    vae, scale = model.vae, model.config.vae.scale_factor
    device = next(vae.parameters()).device
    means, stds = [], []
    for start in tqdm(range(0, len(pixels), batch_size), desc="encoding latents", disable=not progress):
        x = pixels[start:start + batch_size].to(device, torch.float32) / 127.5 - 1.0  # (b, 3, H, W) in [-1, 1]
        posterior = vae.encode(x)
        std = getattr(posterior, "std", torch.zeros_like(posterior.mean))  # a plain AE: no noise
        means.append(posterior.mean.float().cpu() * scale)
        stds.append(std.float().cpu() * scale)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def encode_captions(model: LatentDiffusion, captions: list[str], *,
                    batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states of each distinct caption, each image's index into them, and the empty prompt's.
    Shapes: -> contexts (U, L, width), caption_index (N,), empty (1, L, width)."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer: cannot encode captions")
    distinct = sorted(set(captions))
    index = {c: i for i, c in enumerate(distinct)}
    chunks = [chunk_prompt(model.tokenizer, c) for c in distinct]
    n = max(map(len, chunks))
    chunks = pad_chunks(model.tokenizer, chunks, n)
    encoder = model.text_encoder
    contexts = torch.cat([_encode(encoder, chunks[s:s + batch_size])
                          for s in range(0, len(chunks), batch_size)])
    empty = _encode(encoder, [[empty_chunk(model.tokenizer)] * n])
    return contexts, torch.tensor([index[c] for c in captions], dtype=torch.int64), empty


def _encode(encoder, batch_chunks: list[list[PromptChunk]]) -> torch.Tensor:
    """The same encoding generation uses (``encode_chunks``), kept as float32 on the CPU."""
    return encode_chunks(encoder, batch_chunks).float().cpu()


def build_latent_cache(pixels: torch.Tensor, captions: list[str], model: LatentDiffusion, *,
                       progress: bool = False) -> LatentCache:
    """Encode every image and caption (no file involved). Shapes: pixels (N, 3, H, W) uint8."""
    if len(pixels) != len(captions):
        raise ValueError(f"{len(pixels)} images but {len(captions)} captions")
    if len(pixels) == 0:
        raise ValueError("no images to encode")
    # contiguous, as a cache read back from its file is: the encoder's packed convolutions hand back channels-last
    # tensors, and a UNet fed those rounds differently, so a run that built its cache would not match its resumption
    mean, std = (t.contiguous() for t in encode_images(model, pixels, progress=progress))
    contexts, caption_index, empty = encode_captions(model, captions)
    return LatentCache(mean, std, contexts, caption_index, empty)


def load_or_build(pixels: torch.Tensor, captions: list[str], model: LatentDiffusion, cache_dir: str | Path, *,
                  progress: bool = False) -> tuple[LatentCache, Path]:
    """The cache for this data and model: read from ``cache_dir`` if a file with its key exists, else built
    and written there. Returns (cache, its file)."""
    key = cache_key(pixels, captions, model)
    path = Path(cache_dir) / f"latents-{key[:24]}.safetensors"
    if path.exists():
        tensors, metadata = read_tensors(path)
        if metadata.get(KEY_META) == key:
            return LatentCache(**{k: tensors[k] for k in ("mean", "std", "contexts", "caption_index", "empty")}), path
    cache = build_latent_cache(pixels, captions, model, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, cache.tensors(), {KEY_META: key, "format": FORMAT})
    return cache, path
