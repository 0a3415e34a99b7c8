"""``nn.Conv2d`` whose inference on the CPU keeps its weight in oneDNN's blocked layout.

PyTorch's CPU convolution hands oneDNN the weight in PyTorch's own layout, and oneDNN reorders it into its
blocked one at every call. Inside a ``frozen_weights()`` block (sampling) the weights cannot change, so the UNet
and VAE convolutions reorder theirs once per block, keep the result (``_packed``) and call oneDNN with it: 3.6% of
the tiny UNet's sampling step. The values are those of ``F.conv2d`` up to float rounding (about 3e-6); the output
comes back channels-last.

Packing pays in small networks, where reordering the weight is a large share of each call; at SD's size it does
not, and its channels-last outputs made SD's CPU step 10% slower. So a network turns it on for its convolutions
with ``set_packing`` when its widest layer has at most ``PACK_MAX_WIDTH`` channels (the tiny UNet and VAE: 128;
SD's UNet: 1280). Only float32 packs: in bfloat16 the packed call was 23% slower than the plain one. With
gradients on, on other devices, under autocast, where this PyTorch lacks the two oneDNN ops, and outside frozen
blocks, the layer is a plain ``nn.Conv2d``.
"""
from __future__ import annotations

import torch
from torch import nn

from nanoldm.layers.frozen import frozen_block

PACK_MAX_WIDTH = 256  # channels of a network's widest layer


def _ops_available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


_AVAILABLE = _ops_available()


class Conv2d(nn.Conv2d):
    """Same parameters, state dict and results as ``nn.Conv2d`` (see the module docstring for the CPU path)."""

    pack = False  # set by set_packing
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
        return (self.pack and _AVAILABLE and x.dtype == self.weight.dtype == torch.float32
                and self.padding_mode == "zeros" and isinstance(self.padding, tuple))

    def _pack(self, x: torch.Tensor) -> tuple:
        """The weight in oneDNN's layout for inputs like ``x``, and the call's other arguments."""
        padding, stride, dilation = list(self.padding), list(self.stride), list(self.dilation)
        weight = torch._C._nn.mkldnn_reorder_conv2d_weight(self.weight.detach().to_mkldnn(), padding, stride,
                                                           dilation, self.groups, list(x.shape))
        bias = None if self.bias is None else self.bias.detach()
        return weight, bias, padding, stride, dilation, self.groups, "none", [], ""


def set_packing(network: nn.Module, widest: int) -> None:
    """Let the ``Conv2d`` layers of ``network``, whose widest layer has ``widest`` channels, pack their weights
    in frozen blocks if it is small (see the module docstring)."""
    for m in network.modules():
        if isinstance(m, Conv2d):
            m.pack = widest <= PACK_MAX_WIDTH
