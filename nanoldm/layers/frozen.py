"""Sampling blocks in which the weights are promised not to change, so layers may keep what they derive from them.

Inside ``with frozen_weights():`` (no gradients) the UNet and VAE keep their packed convolution weights, the
stacked Q/K/V of small self-attentions and the prompt's cross-attention keys and values, and reuse them for the
rest of the block. Every block starts afresh: what was kept in one is never used in the next, so weights changed
between two blocks are always seen, however they were changed (an optimizer step, fused ones included, which do
not bump tensor versions; ``load_state_dict``; writes through ``.data``). Outside a block, or with gradients on
inside one, layers keep nothing. What a block kept stays in the layers until a later block replaces it: the packed
weights of small networks, stacked Q/K/V up to width 512, one prompt's keys and values.
"""
from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager

import torch

_blocks = itertools.count(1)
_state = threading.local()


@contextmanager
def frozen_weights():
    """No gradients, and no weight changes until the block ends (the caller's promise)."""
    outer = getattr(_state, "block", None)
    _state.block = next(_blocks)
    try:
        with torch.no_grad():
            yield
    finally:
        _state.block = outer


def frozen_block() -> int | None:
    """The number of the innermost frozen block, unique in the process; None outside one or with gradients on."""
    return None if torch.is_grad_enabled() else getattr(_state, "block", None)
