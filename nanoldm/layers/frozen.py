"""Sampling blocks: ``with frozen_weights():`` switches on the fast paths of :mod:`nanoldm.layers.fast`.

The promise, made by the caller for the whole block: **no gradients, and neither the weights nor the tensors
handed to the networks as contexts are modified in place until the block ends.** On it rest everything the
block keeps: packed convolution weights, the stacked Q/K/V of small self-attentions, and the cross-attention
keys and values of each context (a context is recognised by identity, or by equal values for a new tensor,
so a changed context must be a new tensor).

What a block keeps belongs to that block (a :class:`~nanoldm.layers.fast.FrozenBlock`) and goes when it ends;
layers keep nothing. So weights changed between two blocks are always seen, however they were changed (an
optimizer step, fused ones included, which do not bump tensor versions; ``load_state_dict``; writes through
``.data``). With gradients on inside a block the layers run their plain paths.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

from nanoldm.layers.fast import FrozenBlock

_state = threading.local()


@contextmanager
def frozen_weights():
    """No gradients, and no weight or context changes until the block ends (the caller's promise)."""
    outer = getattr(_state, "block", None)
    _state.block = FrozenBlock()
    try:
        with torch.no_grad():
            yield
    finally:
        _state.block = outer  # this block's tensors go with it


def frozen_block() -> FrozenBlock | None:
    """The innermost frozen block of this thread; None outside one or with gradients on."""
    return None if torch.is_grad_enabled() else getattr(_state, "block", None)
