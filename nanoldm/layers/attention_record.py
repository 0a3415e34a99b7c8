"""Recording cross-attention: the attention probabilities of a real run, for "See inside".

``F.scaled_dot_product_attention`` never shows its probabilities. While ``with recording_attention(layers) as
recorder:`` is active, each of ``layers`` hands its attention to :meth:`AttentionRecorder.attend` (one line in
``Attention.attend``), which computes softmax(q k^T / sqrt(d)) explicitly, adds its mean over the heads to the
layer's running sum, and returns probabilities @ v: the output the layer would have given, up to float rounding.
Plain and fast paths both end in ``Attention.attend``, so the recording sees the probabilities of whichever runs.

Nothing is recomputed afterwards: a layer's record is the sum, over its calls, of the probabilities it used.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_state = threading.local()


@dataclass
class LayerRecord:
    """One layer's recorded attention: the sum over its calls of the head-averaged probabilities.

    Shapes: total (B, N, M), B the batch the layer saw (a guided batch: [uncond; cond]), N its query positions
    (the latent pixels at the layer's resolution), M the context tokens.
    """

    total: torch.Tensor
    calls: int = 0

    @property
    def mean(self) -> torch.Tensor:
        """The probabilities averaged over heads and calls. Shapes: (B, N, M); each row sums to 1 over M."""
        return self.total / self.calls


class AttentionRecorder:
    """Sums the attention probabilities of ``layers`` (``Attention`` modules) over the calls of a run."""

    def __init__(self, layers: Iterable[nn.Module]):
        self.layers = list(layers)
        self._watched = {id(layer) for layer in self.layers}
        self.records: dict[int, LayerRecord] = {}  # id(layer) -> record

    def watches(self, layer: nn.Module) -> bool:
        return id(layer) in self._watched

    def record(self, layer: nn.Module) -> LayerRecord | None:
        """``layer``'s record, None if it was not called."""
        return self.records.get(id(layer))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: nn.Module,
               batch_tokens: tuple[int, int]) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v with the probabilities recorded for ``layer``; the output comes from the
        same kernel as an unrecorded call (``F.scaled_dot_product_attention``), so a recorded run draws the image
        of a plain one bit for bit.

        ``batch_tokens`` = (B, N): the layer's batch and query positions; the fast path lays a run of images
        that share a context side by side as one longer query sequence (B' N' = B N), undone here.
        Shapes: q (B', h, N', d), k and v (B', h, M, d) -> (B', h, N', d).
        """
        scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B', h, N', M)
        probs = scores.softmax(dim=-1)
        B, N = batch_tokens
        per_image = probs.mean(dim=1).reshape(B, N, -1).detach()  # (B, N, M): queries back to their images
        kept = self.records.get(id(layer))
        if kept is None or kept.total.shape != per_image.shape:
            kept = self.records[id(layer)] = LayerRecord(torch.zeros_like(per_image))
        kept.total += per_image
        kept.calls += 1
        return F.scaled_dot_product_attention(q, k, v)


@contextmanager
def recording_attention(layers: Iterable[nn.Module]) -> Iterator[AttentionRecorder]:
    """Record the attention probabilities of ``layers`` in this thread until the block ends."""
    outer = getattr(_state, "recorder", None)
    _state.recorder = recorder = AttentionRecorder(layers)
    try:
        yield recorder
    finally:
        _state.recorder = outer


def recorder_for(layer: nn.Module) -> AttentionRecorder | None:
    """The active recorder of this thread if it watches ``layer``, else None."""
    recorder = getattr(_state, "recorder", None)
    return recorder if recorder is not None and recorder.watches(layer) else None
