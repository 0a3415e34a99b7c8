"""The sampling fast paths: what a ``frozen_weights()`` block computes differently from the plain layers.

Each model layer hands its call here, in one line, while a block is active (see :mod:`nanoldm.layers.frozen`
for the promise they rely on); the result equals the plain path's up to float rounding.

- Cross-attention keeps each context's keys and values for the block (the prompt is the same at every step).
  A batch usually repeats each context (a prompt's images; the negative prompt's half of a guided batch):
  keys and values are computed once per run of equal consecutive contexts, and the run's images attend as one
  longer query sequence (each query's softmax is the same).
- Small self-attentions (<= ``FUSE_MAX_WIDTH``) compute Q, K and V in one matmul on the stacked weights: 3% of
  the tiny UNet's step; at SD's widths it gains nothing and the copy would cost 150 MB.
- Convolutions call oneDNN with their weight reordered once into its blocked layout (PyTorch reorders it at
  every call): 3.6% of the tiny UNet's step, values within about 3e-6, output channels-last. It pays only in
  small networks, so it is on where the network's widest convolution has <= ``PACK_MAX_WIDTH`` output channels
  (the tiny UNet and VAE: 128; SD's UNet: 1280, where channels-last outputs made the step 10% slower), in
  float32 only (bfloat16 packed was 23% slower), on the CPU, without autocast.
- GEGLU applies GELU and the gate product inside the projection's output (8% of the tiny UNet's step); ResBlocks
  apply SiLU and their sums inside the norms' and convolutions' outputs (the same numbers, fewer tensors).
- The UNet embeds one timestep when the batch shares it, and for a guided batch [x; x] runs its context-free
  prefix (``conv_in`` and the first ResBlock) once on x, then tiles it with ``torch.cat``.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook

FUSE_MAX_WIDTH = 512  # heads * head_dim of the self-attentions whose Q/K/V are fused
PACK_MAX_WIDTH = 256  # output channels of a network's widest convolution, for packing


def _ops_available() -> bool:
    return (torch.backends.mkldnn.is_available() and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


_AVAILABLE = _ops_available()

# Packing is decided by a layer's network, so every module remembers the module it was registered in.
_parents: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _remember_parent(parent: nn.Module, name: str, child: nn.Module | None) -> None:
    if child is not None:
        _parents[child] = weakref.ref(parent)


register_module_module_registration_hook(_remember_parent)


def _network(module: nn.Module) -> nn.Module:
    """The outermost module that ``module`` belongs to (itself if none). Networks made by ``copy.deepcopy`` or
    unpickling register no children, so each of their layers counts as a network of its own."""
    while (ref := _parents.get(module)) is not None and (parent := ref()) is not None:
        module = parent
    return module


@dataclass
class CrossKV:
    """One cross-attention layer's keys and values of one context."""

    context: torch.Tensor  # (B, M, context_dim), held: the block's kept context (see _kept_context), by identity
    k: torch.Tensor  # (B / run, M, h*d)
    v: torch.Tensor  # (B / run, M, h*d)
    run: int  # length of the runs of equal consecutive contexts (1 where they are not all equally long)


@dataclass
class FusedQKV:
    """A self-attention's Q, K, V projections stacked into one."""

    weight: torch.Tensor  # (3 * h*d, query_dim)
    bias: torch.Tensor | None  # (3 * h*d,)


@dataclass
class PackedConv:
    """A convolution's weight in oneDNN's blocked layout, with the other arguments of its oneDNN call."""

    weight: torch.Tensor  # opaque oneDNN tensor
    bias: torch.Tensor | None
    padding: list[int]
    stride: list[int]
    dilation: list[int]
    groups: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                      self.dilation, self.groups, "none", [], "")


@dataclass
class FrozenBlock:
    """What one ``frozen_weights()`` block keeps, per layer, and the fast paths that use it."""

    cross_kv: dict[nn.Module, CrossKV] = field(default_factory=dict)
    fused_qkv: dict[nn.Module, FusedQKV] = field(default_factory=dict)
    packed: dict[nn.Module, PackedConv | None] = field(default_factory=dict)  # None: this one runs plain
    widest: dict[nn.Module, int] = field(default_factory=dict)  # network -> its widest convolution
    running: set[nn.Module] = field(default_factory=set)  # UNets now inside their fast call
    # the latest context handed to cross-attention, and the equal one the layers keep K/V of (itself, or the first
    # of a run of equal ones: a guided batch's [uncond; cond] is a new tensor at every step)
    context_seen: tuple[torch.Tensor, torch.Tensor] | None = None

    def attention(self, layer, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """``Attention.forward`` with kept keys and values, or fused Q/K/V.

        Shapes: x (B, N, query_dim), context (B, M, context_dim) or None -> (B, N, query_dim)."""
        B, N, _ = x.shape
        if context is not None:
            kv = self._cross_kv(layer, context)
            q = layer.to_q(x).reshape(B // kv.run, kv.run * N, -1)  # a run's queries side by side: (B/run, run*N, h*d)
            return layer.attend(q, kv.k, kv.v, (B, N))
        if layer.to_k.in_features == layer.to_q.in_features and layer.to_q.out_features <= FUSE_MAX_WIDTH:
            qkv = self._fused_qkv(layer)
            q, k, v = F.linear(x, qkv.weight, qkv.bias).chunk(3, dim=-1)  # one matmul for the three projections
            return layer.attend(q, k, v, (B, N))
        return layer.attend(layer.to_q(x), layer.to_k(x), layer.to_v(x), (B, N))

    def _cross_kv(self, layer, context: torch.Tensor) -> CrossKV:
        context = self._kept_context(context)
        kept = self.cross_kv.get(layer)
        if kept is None or kept.context is not context:
            run = _run_length(context)
            distinct = context[::run]
            kept = self.cross_kv[layer] = CrossKV(context, layer.to_k(distinct), layer.to_v(distinct), run)
        return kept

    def _kept_context(self, context: torch.Tensor) -> torch.Tensor:
        """The tensor the layers know ``context`` by: compared by value once per UNet call, by identity in every
        other cross-attention layer of the call."""
        if self.context_seen is not None:
            latest, kept = self.context_seen
            if context is latest:
                return kept
            if _same(kept, context):
                self.context_seen = (context, kept)
                return kept
        self.context_seen = (context, context)
        return context

    def _fused_qkv(self, layer) -> FusedQKV:
        if layer not in self.fused_qkv:
            projections = (layer.to_q, layer.to_k, layer.to_v)
            bias = None if layer.to_q.bias is None else torch.cat([p.bias for p in projections])
            self.fused_qkv[layer] = FusedQKV(torch.cat([p.weight for p in projections]), bias)
        return self.fused_qkv[layer]

    def conv2d(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """``Conv2d.forward`` with the weight packed where that pays. Shapes: (B, C_in, H, W) -> (B, C_out, H', W')."""
        if x.device.type != "cpu" or x.dim() != 4 or torch.is_autocast_enabled("cpu"):
            return nn.Conv2d.forward(conv, x)
        if conv not in self.packed:  # the first call in this block decides
            self.packed[conv] = _pack(conv, x) if self._packable(conv, x) else None
        packed = self.packed[conv]
        if packed is None or x.dtype != torch.float32:  # only float32 packs
            return nn.Conv2d.forward(conv, x)
        return packed(x)

    def _packable(self, conv: nn.Conv2d, x: torch.Tensor) -> bool:
        if not (_AVAILABLE and x.dtype == conv.weight.dtype == torch.float32 and conv.padding_mode == "zeros"
                and isinstance(conv.padding, tuple)):
            return False
        network = _network(conv)
        if network not in self.widest:
            self.widest[network] = max(m.out_channels for m in network.modules() if isinstance(m, nn.Conv2d))
        return self.widest[network] <= PACK_MAX_WIDTH

    @staticmethod
    def geglu(hidden: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """hidden * gelu(gate), both in place inside the projection's output (no new activation tensor).

        Shapes: hidden, gate (B, N, D), views of one (B, N, 2D) tensor -> (B, N, D), a view of it."""
        return hidden.mul_(torch.ops.aten.gelu_(gate))

    @staticmethod
    def resblock(block, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        """``ResBlock.forward`` reusing the norms' and convolutions' outputs. Shapes: as ``ResBlock.forward``."""
        h = block.conv1(F.silu(block.norm1(x), inplace=True))
        if block.time_emb_proj is not None:
            h = _add_(h, block.time_emb_proj(F.silu(emb))[:, :, None, None])
        h = block.conv2(block.dropout(F.silu(block.norm2(h), inplace=True)))
        return _add_(h, x if block.conv_shortcut is None else block.conv_shortcut(x))

    def takes(self, unet: nn.Module) -> bool:
        """Whether the UNet's call should come here (not when this block is already running it)."""
        return unet not in self.running

    def unet(self, unet: nn.Module, x: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor,
             class_labels: torch.Tensor | None) -> torch.Tensor:
        """``UNet.forward`` with one timestep embedded for a batch that shares it, and the context-free prefix run
        once for a guided batch [x; x] (same t and class labels in both halves).

        Shapes: x (B, C_in, H, W), t (B,) or one value, context (B, M, D), class_labels (B,) -> (B, C_out, H, W).
        """
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() > 1 and bool((t == t[0]).all()):
            t = t[:1]  # one timestep: the UNet embeds it once and the ResBlocks broadcast it
        half = _half_if_repeated(x, t, class_labels)
        self.running.add(unet)
        try:
            with _shared_prefix(unet, half) if half else nullcontext():
                return unet.forward(x, t, context, class_labels)
        finally:
            self.running.discard(unet)


def _add_(h: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """h + other, into h where that keeps h's dtype (under autocast h may be bfloat16 and ``other`` float32)."""
    return h.add_(other) if h.dtype == other.dtype else other + h


def _same(kept: torch.Tensor, context: torch.Tensor) -> bool:
    """The same context: the same tensor, or a new one with equal values (a guided batch's cat at every step)."""
    return kept is context or (kept.shape == context.shape and kept.dtype == context.dtype
                               and kept.device == context.device and torch.equal(kept, context))


def _run_length(context: torch.Tensor) -> int:
    """g where the batch is runs of g equal consecutive items (B/g distinct ones, each repeated g times), else 1.

    Shapes: context (B, ...)."""
    B = context.shape[0]
    starts = [0] + [i + 1 for i, same in enumerate((context[1:] == context[:-1]).flatten(1).all(1).tolist())
                    if not same] + [B]
    lengths = {b - a for a, b in zip(starts, starts[1:])}
    return lengths.pop() if len(lengths) == 1 else 1


def _pack(conv: nn.Conv2d, x: torch.Tensor) -> PackedConv:
    """The weight in oneDNN's layout for inputs like ``x``, and the call's other arguments."""
    padding, stride, dilation = list(conv.padding), list(conv.stride), list(conv.dilation)
    weight = torch._C._nn.mkldnn_reorder_conv2d_weight(conv.weight.detach().to_mkldnn(), padding, stride,
                                                       dilation, conv.groups, list(x.shape))
    bias = None if conv.bias is None else conv.bias.detach()
    return PackedConv(weight, bias, padding, stride, dilation, conv.groups)


def _half_if_repeated(x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None) -> int:
    """B / 2 where x, t and the class labels are each two equal halves (a guided batch), else 0."""
    B = x.shape[0]
    if B % 2 or not torch.equal(x[:B // 2], x[B // 2:]):
        return 0
    halves = [v for v in (t, class_labels) if v is not None and v.shape[0] > 1]
    return B // 2 if all(torch.equal(v[:B // 2], v[B // 2:]) for v in halves) else 0


@contextmanager
def _shared_prefix(unet: nn.Module, half: int):
    """During one UNet call on [x; x]: ``conv_in`` runs on x alone and hands the skip path its output tiled;
    the first ResBlock runs on x's rows alone and hands on its output tiled. Neither sees the context, so the
    result is the one of the whole batch. Shapes: x (2 * half, C_in, H, W)."""
    stem, first = unet.conv_in, unet.down_blocks[0].resnets[0]
    kept = {}

    def stem_input(module, args):
        return (args[0][:half],)

    def stem_output(module, args, out):
        kept["h"] = out  # (half, C, H, W): the first ResBlock's input
        return torch.cat([out, out])  # the skip path's

    def first_input(module, args):
        h, emb = args
        return kept["h"], emb[:half]  # emb: (1 or 2 * half, emb_dim)

    def first_output(module, args, out):
        return torch.cat([out, out])

    handles = [stem.register_forward_pre_hook(stem_input), stem.register_forward_hook(stem_output),
               first.register_forward_pre_hook(first_input), first.register_forward_hook(first_output)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
