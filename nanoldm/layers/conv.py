"""``nn.Conv2d`` whose inference on the CPU keeps its weight in oneDNN's blocked layout.

PyTorch's CPU convolution hands oneDNN the weight in PyTorch's own layout, and oneDNN reorders it into its
blocked one at every call. Inside a ``frozen_weights()`` block (sampling) the weights cannot change, so the UNet
and VAE convolutions reorder theirs once per block, keep the result (``_packed``) and call oneDNN with it: 3.6% of
the tiny UNet's sampling step. The values are those of ``F.conv2d`` up to float rounding (about 3e-6); the output
comes back channels-last.

The packed copy costs the weight's memory again, so only weights up to ``PACK_MAX`` elements are packed: all of
the small models' and SD's first and last layers. (SD's 1280-channel convolutions would run twice as fast
packed, at 1.2 GB more memory: not done.) With gradients on, on other devices, under autocast, or where this
PyTorch lacks the two oneDNN ops, and outside frozen blocks, the layer is a plain ``nn.Conv2d``.
"""
from __future__ import annotations

import torch
from torch import nn

from nanoldm.layers.frozen import frozen_block

PACK_MAX = 2**20  # weight elements: 4 MB in float32


def _ops_available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


_AVAILABLE = _ops_available()


class Conv2d(nn.Conv2d):
    """Same parameters, state dict and results as ``nn.Conv2d`` (see the module docstring for the CPU path)."""

    _packed: tuple | None = None  # (frozen block, arguments of mkldnn._convolution_pointwise after the input, or None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = frozen_block()
        if block is None or x.device.type != "cpu" or x.dim() != 4 or torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        if self._packed is None or self._packed[0] != block:  # the first call in this block decides
            self._packed = (block, self._pack(x) if self._packable(x) else None)
        args = self._packed[1]
        if args is None or x.dtype != args[0].dtype:
            return super().forward(x)
        return torch.ops.mkldnn._convolution_pointwise(x, *args)

    def __getstate__(self):
        """Copies and pickles leave the packed weight behind (oneDNN's tensors have no storage to copy)."""
        state = super().__getstate__()
        state.pop("_packed", None)
        return state

    def _packable(self, x: torch.Tensor) -> bool:
        return (_AVAILABLE and x.dtype == self.weight.dtype and x.dtype in (torch.float32, torch.bfloat16)
                and self.padding_mode == "zeros" and isinstance(self.padding, tuple)
                and self.weight.numel() <= PACK_MAX)

    def _pack(self, x: torch.Tensor) -> tuple:
        """The weight in oneDNN's layout for inputs like ``x``, and the call's other arguments."""
        padding, stride, dilation = list(self.padding), list(self.stride), list(self.dilation)
        weight = torch._C._nn.mkldnn_reorder_conv2d_weight(self.weight.detach().to_mkldnn(), padding, stride,
                                                           dilation, self.groups, list(x.shape))
        bias = None if self.bias is None else self.bias.detach()
        return weight, bias, padding, stride, dilation, self.groups, "none", [], ""
