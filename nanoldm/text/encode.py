"""Prompts of any length, with weights, -> text-encoder context, as A1111 builds it.

1. parse: `parse_prompt_attention` turns the prompt into (text, weight) pieces and BREAK markers;
2. chunk: the pieces' tokens are laid into chunks of 75 (`chunk_prompt`). A chunk ends when it is full or
   at a BREAK. When a chunk is full and a comma lies within its last ``COMMA_BACKTRACK`` tokens, the chunk
   ends right after that comma and the tokens after it move on to the next chunk (A1111's "comma padding
   backtrack", default 20). Each chunk becomes BOS + 75 tokens padded with EOS + EOS = 77 ids; BOS, EOS
   and padding have weight 1.0;
3. encode: every chunk goes through the text encoder on its own, so a long prompt costs one 77-token
   pass per chunk (`encode_chunks`);
4. weight: each chunk's hidden states z are multiplied per token by the weights, then rescaled so their
   mean equals that of the unweighted z (A1111's "Original" emphasis): z' = z * w * mean(z) / mean(z * w);
5. concatenate the chunks along the sequence: (B, 77 * n_chunks, width).

A prompt of at most 75 tokens without weights gives exactly ``text_encoder(tokenizer(prompt))`` (step 4 is
then a multiplication by 1.0), which is what diffusers computes.

Batches and cond/uncond pairs need one length. The shorter prompts are padded with empty chunks (BOS + 76
EOS, the encoding of the empty prompt): A1111 does this inside a batch, and for cond against uncond when its
"pad prompt/negative prompt" option is on (with it off, A1111 instead runs the UNet twice, on each length).
One difference: A1111 restores the mean over a whole batch of chunks at once; here it is restored for each
prompt's chunk, which is the same for the single prompt A1111 normally encodes at a time.

Extra-network tags (``<hypernet:name:0.8>``) are not text to encode: take them out first with
`nanoldm.text.prompt.extract_extra_networks`, as A1111 does before it builds the conditioning.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nanoldm.text.prompt import BREAK, parse_prompt_attention
from nanoldm.text.prompt_comfyui import comfyui_chunks
from nanoldm.text.tokenizer import CLIPTokenizer

__all__ = ["PromptChunk", "chunk_prompt", "chunk_prompt_comfyui", "empty_chunk", "pad_chunks", "encode_chunks",
           "encode_prompts", "encode_prompt", "encode_prompt_pair", "CHUNK_TOKENS", "COMMA_BACKTRACK"]

CHUNK_TOKENS = 75  # prompt tokens per chunk; with BOS and EOS a chunk fills the encoder's 77 positions
COMMA_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"; 0 turns it off


@dataclass
class PromptChunk:
    """One encoder window: ``ids`` and ``weights``, each CHUNK_TOKENS + 2 long (BOS ... EOS)."""

    ids: list[int]
    weights: list[float]


class _ChunkBuilder:
    """Lays weighted tokens into chunks (step 2 of the module docstring)."""

    def __init__(self, tokenizer: CLIPTokenizer, comma_backtrack: int):
        self.tok = tokenizer
        self.comma_id = tokenizer.token_to_id(",</w>")
        self.comma_backtrack = comma_backtrack
        self.chunks: list[PromptChunk] = []
        self.ids: list[int] = []  # the chunk being filled, without BOS/EOS
        self.weights: list[float] = []
        self.last_comma = -1  # position of the last comma in the chunk being filled, -1 if none

    def add(self, token: int, weight: float) -> None:
        if token == self.comma_id:
            self.last_comma = len(self.ids)
        elif self._should_backtrack():  # end the chunk after its last comma; the rest starts the next one
            cut = self.last_comma + 1
            moved_ids, moved_weights = self.ids[cut:], self.weights[cut:]
            self.ids, self.weights = self.ids[:cut], self.weights[:cut]
            self.end_chunk()
            self.ids, self.weights = moved_ids, moved_weights
        if len(self.ids) == CHUNK_TOKENS:
            self.end_chunk()
        self.ids.append(token)
        self.weights.append(weight)

    def _should_backtrack(self) -> bool:
        """Full chunk, and its last comma is at most `comma_backtrack` tokens from the end."""
        return (self.comma_backtrack > 0 and len(self.ids) == CHUNK_TOKENS and self.last_comma != -1
                and len(self.ids) - self.last_comma <= self.comma_backtrack)

    def end_chunk(self) -> None:
        """Pad the chunk being filled with EOS, wrap it in BOS/EOS, and start a new one."""
        pad = CHUNK_TOKENS - len(self.ids)
        ids = [self.tok.bos_id, *self.ids, *[self.tok.pad_id] * pad, self.tok.eos_id]
        self.chunks.append(PromptChunk(ids, [1.0, *self.weights, *[1.0] * pad, 1.0]))
        self.ids, self.weights, self.last_comma = [], [], -1

    def finish(self) -> list[PromptChunk]:
        """End the last chunk if it holds tokens, or if there is no chunk at all (the empty prompt)."""
        if self.ids or not self.chunks:
            self.end_chunk()
        return self.chunks


def chunk_prompt(tokenizer: CLIPTokenizer, prompt: str, *,
                 comma_backtrack: int = COMMA_BACKTRACK) -> list[PromptChunk]:
    """A1111-syntax prompt -> its chunks of CHUNK_TOKENS + 2 ids and weights (steps 1-2); at least one."""
    builder = _ChunkBuilder(tokenizer, comma_backtrack)
    for text, weight in parse_prompt_attention(prompt):
        if (text, weight) == BREAK:
            builder.end_chunk()
            continue
        for token in tokenizer.encode(text):
            builder.add(token, weight)
    return builder.finish()


def chunk_prompt_comfyui(tokenizer: CLIPTokenizer, prompt: str) -> list[PromptChunk]:
    """A ComfyUI-syntax prompt -> its chunks, as ComfyUI lays them out (``nanoldm.text.prompt_comfyui``)."""
    return [PromptChunk(ids, weights) for ids, weights in comfyui_chunks(tokenizer, prompt, CHUNK_TOKENS)]


def empty_chunk(tokenizer: CLIPTokenizer) -> PromptChunk:
    """The chunk of the empty prompt (BOS, then EOS), used to pad prompts to a common length."""
    n = CHUNK_TOKENS + 2
    return PromptChunk([tokenizer.bos_id] + [tokenizer.pad_id] * (n - 2) + [tokenizer.eos_id], [1.0] * n)


def _apply_weights(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Step 4: weight each token's hidden state, then restore each chunk's mean.

    Shapes: z (B, L, width), weights (B, L) -> (B, L, width).
    """
    unweighted = (weights == 1).all(dim=1)  # (B,): nothing to do, and no 0/0 when a chunk's mean is exactly 0
    original_mean = z.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    weighted = z * weights[..., None]
    new_mean = weighted.mean(dim=(1, 2), keepdim=True)
    # Divide only where the result is used: an unused 1/0 (or 1/1e-30) would still put inf * 0 = nan into the
    # gradient (textual inversion backpropagates through here), as torch.where passes gradients to both branches.
    skip = unweighted[:, None, None] | (new_mean == 0)
    ratio = torch.where(skip, torch.ones_like(new_mean), original_mean / torch.where(skip, 1.0, new_mean))
    return torch.where(unweighted[:, None, None], z, weighted * ratio)


def _apply_weights_comfyui(z: torch.Tensor, weights: torch.Tensor, z_empty: torch.Tensor) -> torch.Tensor:
    """ComfyUI's emphasis (``comfy/sd1_clip.py: encode_token_weights``): a weighted token's hidden state moves
    away from the empty prompt's at its position, (z - z_empty) * w + z_empty; no mean is restored.

    Shapes: z (B, L, width), weights (B, L), z_empty (1, L, width) -> (B, L, width).
    """
    w = weights[..., None]
    return torch.where(w != 1, (z - z_empty) * w + z_empty, z)


def encode_chunks(text_encoder, batch_chunks: list[list[PromptChunk]], *, clip_skip: int = 1,
                  emphasis: str = "original", tokenizer: CLIPTokenizer | None = None) -> torch.Tensor:
    """Steps 3-5 for a batch of chunked prompts, all with the same number of chunks. ``emphasis``: "original"
    (A1111's, step 4) or "comfyui" (``_apply_weights_comfyui``; it needs the ``tokenizer`` for the empty prompt).

    Chunk i of every prompt is encoded in one (B, 77) call. Shapes: -> (B, 77 * n_chunks, width).
    """
    if emphasis not in ("original", "comfyui"):
        raise ValueError(f"unknown emphasis {emphasis!r}; valid: original, comfyui")
    counts = {len(chunks) for chunks in batch_chunks}
    if len(counts) != 1:
        raise ValueError(f"prompts of a batch need the same number of chunks, got {sorted(counts)}")
    device = next(text_encoder.parameters()).device
    outputs, z_empty = [], None
    for i in range(counts.pop()):
        ids = torch.tensor([chunks[i].ids for chunks in batch_chunks], dtype=torch.long, device=device)  # (B, 77)
        z = text_encoder(ids, clip_skip=clip_skip)  # (B, 77, width)
        weights = torch.tensor([chunks[i].weights for chunks in batch_chunks], dtype=z.dtype, device=device)
        if emphasis == "comfyui" and bool((weights != 1).any()):
            if z_empty is None:  # the empty prompt's hidden states, once per call
                empty = torch.tensor([empty_chunk(tokenizer).ids], dtype=torch.long, device=device)
                z_empty = text_encoder(empty, clip_skip=clip_skip)
            outputs.append(_apply_weights_comfyui(z, weights, z_empty))
        else:
            outputs.append(z if emphasis == "comfyui" else _apply_weights(z, weights))
    return torch.cat(outputs, dim=1)  # (B, 77 * n_chunks, width)


def pad_chunks(tokenizer: CLIPTokenizer, batch_chunks: list[list[PromptChunk]],
               n_chunks: int | None = None) -> list[list[PromptChunk]]:
    """Append empty chunks to each prompt's chunks, up to `n_chunks` (default: the longest prompt's)."""
    n = max(map(len, batch_chunks)) if n_chunks is None else n_chunks
    return [chunks + [empty_chunk(tokenizer)] * (n - len(chunks)) for chunks in batch_chunks]


def encode_prompts(text_encoder, tokenizer: CLIPTokenizer, prompts: list[str], *,
                   clip_skip: int = 1) -> torch.Tensor:
    """A batch of prompts, the shorter ones padded with empty chunks. Shapes: -> (B, 77 * n_chunks, width)."""
    if isinstance(prompts, str):
        raise TypeError("encode_prompts takes a list of prompts; use encode_prompt for one")
    batch_chunks = pad_chunks(tokenizer, [chunk_prompt(tokenizer, prompt) for prompt in prompts])
    return encode_chunks(text_encoder, batch_chunks, clip_skip=clip_skip)


def encode_prompt(text_encoder, tokenizer: CLIPTokenizer, prompt: str, *, clip_skip: int = 1) -> torch.Tensor:
    """One A1111-syntax prompt -> context. Shapes: -> (1, 77 * n_chunks, width)."""
    return encode_prompts(text_encoder, tokenizer, [prompt], clip_skip=clip_skip)


def encode_prompt_pair(text_encoder, tokenizer: CLIPTokenizer, prompt: str | list[str],
                       negative_prompt: str | list[str], *, clip_skip: int = 1,
                       emphasis: str = "original") -> tuple[torch.Tensor, torch.Tensor]:
    """Context for a prompt and for its negative prompt (CFG's cond and uncond), padded to one length.

    Strings give batches of one; lists must be equally long. Prompts and negative prompts are encoded in
    separate calls, as diffusers does; ``emphasis`` as in ``encode_chunks``; "comfyui" also parses and chunks
    the prompts as ComfyUI does (``chunk_prompt_comfyui``).
    Shapes: -> cond, uncond, each (B, 77 * n_chunks, width).
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    negatives = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(prompts) != len(negatives) or not prompts:
        raise ValueError(f"need as many negative prompts as prompts (at least one), got {len(prompts)} "
                         f"prompts and {len(negatives)} negative prompts")
    chunk = chunk_prompt_comfyui if emphasis == "comfyui" else chunk_prompt
    cond_chunks = [chunk(tokenizer, p) for p in prompts]
    uncond_chunks = [chunk(tokenizer, p) for p in negatives]
    n = max(map(len, cond_chunks + uncond_chunks))
    cond, uncond = (encode_chunks(text_encoder, pad_chunks(tokenizer, chunks, n), clip_skip=clip_skip,
                                  emphasis=emphasis, tokenizer=tokenizer) for chunks in (cond_chunks, uncond_chunks))
    return cond, uncond
