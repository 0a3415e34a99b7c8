"""``nanoldm train embedding``: textual inversion (Gal et al. 2022). N new token vectors are learned so that the
frozen model, prompted with the new token, denoises the training images; nothing else changes.

The loss is the LDM trainer's (:class:`~nanoldm.training.ldm.LDMTask`, steps 1-4) with three differences:

1. trainable: only the new rows, one (N, width) ``nn.Parameter`` (:class:`TokenVectors`) spliced over the text
   encoder's token-embedding output wherever an id is one of the new ones (:class:`SplicedEmbedding`). The
   UNet, VAE and text encoder are frozen, and the embedding table itself is never an optimizer parameter, so
   no update (not even weight decay) can move another row;
2. context: the captions go through the text encoder every step (their hidden states now depend on the
   vectors); the latent cache supplies only the image latents. No caption dropout (A1111 and diffusers train
   embeddings without it);
3. captions: in each caption the init word (whole word, any case) is replaced by the token; a caption without
   it becomes "a TOKEN, CAPTION", a missing caption "a TOKEN" (after A1111's subject template, "a photo of a
   [name], [filewords]", without the "photo", which the shapes world does not know).

The vectors start, as A1111's do, from the init text's token embeddings: the text is tokenised into T tokens and
vector i is the embedding of token ``i * T // N`` (so one init word is repeated for every vector). A prompt's
token stands for all N vectors (see :mod:`nanoldm.finetune.textual_inversion`). The sample grid draws the first
distinct training captions (or ``--sample-prompt``). ``--resume`` continues exactly: the run's state is the
vectors, the optimizer and the RNG, and everything else is rebuilt from ``--model``, the data and the init text.

At the end (EMA vectors when EMA is on) the embedding is written three times: ``OUT/NAME.pt`` and
``OUT/NAME.safetensors`` for A1111, where NAME is the token with every character but letters, digits, ".", "_",
"-" and space removed ("<cat-toy>" -> cat-toy.pt; A1111 names the token after the file), and
``OUT/learned_embeds.safetensors`` for diffusers (``{token: (N, width)}``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nanoldm.data.latents import LatentCache
from nanoldm.data.sources import ImageSource
from nanoldm.finetune.embedding_files import (Embedding, file_name, write_a1111_pt, write_a1111_safetensors,
                                             write_diffusers)
from nanoldm.finetune.textual_inversion import apply_embedding, embedding_vectors, token_embedding
from nanoldm.model import LatentDiffusion
from nanoldm.text.encode import chunk_prompt, empty_chunk, encode_chunks, pad_chunks
from nanoldm.training.latent_setup import LatentOptions, base_identity, latent_cache, prepare_model
from nanoldm.training.ldm import LDMTask, freeze
from nanoldm.training.loop import TrainConfig, train
from nanoldm.training.state import load_ema_weights

DIFFUSERS_FILE = "learned_embeds.safetensors"


class TokenVectors(nn.Module):
    """The trainable vectors of the new token. Shapes: vectors (N, width)."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.vectors = nn.Parameter(vectors.detach().clone())


class SplicedEmbedding(nn.Module):
    """A frozen token-embedding table whose rows ``first .. first + N - 1`` are read from ``TokenVectors``."""

    def __init__(self, table: nn.Embedding, new: TokenVectors, first: int):
        super().__init__()
        self.table, self.new, self.first = table, new, first

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Shapes: ids (B, L) -> (B, L, width)."""
        n = self.new.vectors.shape[0]
        out = self.table(ids)
        offset = ids - self.first
        is_new = (offset >= 0) & (offset < n)
        rows = self.new.vectors[offset.clamp(0, n - 1)]  # (B, L, width); used only where is_new
        return torch.where(is_new[..., None], rows.to(out.dtype), out)


class EmbeddingTask(LDMTask):
    """Textual inversion as a :class:`~nanoldm.training.loop.Task`: adds ``token`` to the model (rows set to
    ``vectors``) and trains only those vectors. ``captions`` (one per cached image) already hold the token.
    Call :meth:`finish` after training to write the trained vectors into the model."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, captions: list[str], token: str,
                 vectors: torch.Tensor, *, sample_prompts: tuple[str, ...] | None = None, cond_drop: float = 0.0,
                 **kwargs):
        if len(captions) != len(cache):
            raise ValueError(f"{len(captions)} captions for {len(cache)} cached images")
        prompts = sample_prompts or tuple(dict.fromkeys(captions))[:4]
        super().__init__(model, cache, cond_drop=cond_drop, sample_prompts=prompts, **kwargs)
        freeze(model.unet)
        self.token = token
        ids = apply_embedding(model, vectors, token)
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise ValueError(f"the ids of {token!r} are not consecutive ({ids}): remove it from the base model first")
        table = token_embedding(model.text_encoder)
        self.vectors = TokenVectors(table.weight[ids])
        self.spliced = SplicedEmbedding(table, self.vectors, ids[0])
        model.text_encoder.embeddings.token_embedding = self.spliced
        tokenizer = model.tokenizer
        self.chunks = pad_chunks(tokenizer, [chunk_prompt(tokenizer, c) for c in captions])
        with torch.no_grad():
            self.empty = encode_chunks(model.text_encoder, [[empty_chunk(tokenizer)] * len(self.chunks[0])])

    def modules(self) -> dict[str, nn.Module]:
        return {"embedding": self.vectors}

    def context(self, indices: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """The captions' hidden states with the current vectors. Shapes: (B,), (B,) bool -> (B, L, width)."""
        context = encode_chunks(self.model.text_encoder, [self.chunks[i] for i in indices.tolist()])
        return torch.where(drop[:, None, None], self.empty.expand_as(context), context)

    def finish(self, checkpoint: Path | None = None) -> torch.Tensor:
        """Put the plain table back with the trained vectors (the EMA ones when ``checkpoint`` holds them) in
        the token's rows. Returns those vectors. Shapes: -> (N, width)."""
        if checkpoint is not None:
            load_ema_weights(self.vectors, "embedding", checkpoint)
        self.model.text_encoder.embeddings.token_embedding = self.spliced.table
        apply_embedding(self.model, self.vectors.vectors, self.token)
        return embedding_vectors(self.model, self.token)


def init_vectors(model: LatentDiffusion, init_text: str, n: int) -> torch.Tensor:
    """A1111's start: vector i is the embedding of token ``i * T // n`` of the T tokens of ``init_text``.
    Shapes: -> (n, width)."""
    if n < 1:
        raise ValueError(f"an embedding needs at least one vector, got {n}")
    ids = model.tokenizer.encode(init_text)
    if not ids:
        raise ValueError(f"the init text {init_text!r} has no tokens")
    table = token_embedding(model.text_encoder).weight
    return table[[ids[i * len(ids) // n] for i in range(n)]].detach().clone()


def token_captions(captions: list[str | None], init_word: str, token: str) -> list[str]:
    """Each caption with the init word replaced by the token, else "a TOKEN, CAPTION" (or "a TOKEN")."""
    pattern = re.compile(rf"(?<!\w){re.escape(init_word.strip())}(?!\w)", re.IGNORECASE)
    out = []
    for caption in captions:
        caption = (caption or "").strip()
        replaced, count = pattern.subn(lambda _: token, caption)
        out.append(replaced if count else f"a {token}, {caption}" if caption else f"a {token}")
    return out


def write_embedding(embedding: Embedding, out: str | Path) -> list[Path]:
    """The three files of the module docstring; returns their paths."""
    out, name = Path(out), file_name(embedding.name)
    paths = [out / f"{name}.pt", out / f"{name}.safetensors", out / DIFFUSERS_FILE]
    for writer, path in zip((write_a1111_pt, write_a1111_safetensors, write_diffusers), paths):
        writer(embedding, path)
    return paths


@dataclass(frozen=True)
class EmbeddingOptions:
    """The new token, the text its vectors start from (also the word it replaces in the captions), how many
    vectors; ``latent``: the options shared with the other latent trainers (no caption dropout by default)."""
    token: str
    init_word: str
    vectors: int = 1
    latent: LatentOptions = field(default_factory=lambda: LatentOptions(cond_drop=0.0))

    def __post_init__(self):
        file_name(self.token)  # a bad token fails before any work


def train_embedding(model: LatentDiffusion, data: ImageSource, loop: TrainConfig, options: EmbeddingOptions, *,
                    base: Path | None = None, resume: bool = False) -> list[Path]:
    """Textual inversion of ``options.token`` on ``model`` (frozen). ``base``: the model's file, named in the
    A1111 files (its hash and stem). Returns the three files written (module docstring)."""
    model = prepare_model(model, data.size, options.latent.device)
    vectors = init_vectors(model, options.init_word, options.vectors)
    images = data.load(model.config.image_size, seed=loop.seed)
    cache = latent_cache(model, images.pixels, [c or "" for c in images.captions], options.latent, Path(loop.out_dir),
                         count_captions=False)
    task = EmbeddingTask(model, cache, token_captions(images.captions, options.init_word, options.token),
                         options.token, vectors, sample_prompts=options.latent.sample_prompts,
                         **options.latent.task_options())
    result = train(task, loop, resume=resume)
    embedding = Embedding(options.token, task.finish(result.checkpoint).cpu(), result.step, *base_identity(base))
    paths = write_embedding(embedding, loop.out_dir)
    for written in paths:
        print(f"embedding: {written}")
    print(f"token {options.token!r}: {embedding.num_vectors} vectors (step {result.step}, loss {result.loss:.4f})")
    return paths
