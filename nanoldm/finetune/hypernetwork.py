"""Hypernetworks as AUTOMATIC1111's web UI defines them: small residual MLPs on the context of attention.

For every context width D the file covers there is a pair of MLPs, one for keys and one for values:

    k = to_k(hk(context)),   v = to_v(hv(context)),   h(x) = x + mlp(x) * strength

They plug into ``Attention.context_hook`` (see :mod:`nanoldm.layers.attention`), which every attention layer
calls with its context: the text hidden states in cross-attention, the feature map's tokens in
self-attention. As in A1111 the pair is looked up by the context's last dimension, so an SD 1 hypernetwork
with widths 768, 320, 640 and 1280 reaches both; a width the file lacks leaves that attention untouched, and
several hypernetworks run one after another (k through each hk in turn, v through each hv).

The MLP is ``linear``, an ``nn.Sequential`` whose indices are the state-dict keys of A1111's files
(``linear.0.weight``, ...). For each step i of ``layer_structure`` (widths as multiples of D, e.g. 1, 2, 1):
Linear(D*m_i -> D*m_i+1), then the activation (none after the last Linear unless ``activate_output``; none
at all for "linear"), then LayerNorm if ``add_layer_norm``, then Dropout if ``dropout_structure[i+1] > 0``.
The file format lives in :mod:`nanoldm.finetune.hypernetwork_file`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nanoldm.config import UNetConfig
from nanoldm.layers.attention import Attention

__all__ = ["ACTIVATIONS", "WEIGHT_INITS", "HypernetworkOptions", "HypernetworkModule", "Hypernetwork",
           "HypernetworkHook", "apply_hypernetworks", "remove_hypernetworks", "attention_widths", "default_widths"]

# A1111's names first ("swish" is its name for Hardswish), then every torch activation by its lowercased class name.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    name.lower(): cls for name, cls in vars(torch.nn.modules.activation).items()
    if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == "torch.nn.modules.activation"}
ACTIVATIONS.update({"linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU,
                    "swish": nn.Hardswish, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid})
WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
LEGACY_DROPOUT = 0.3  # A1111's probability for files that say only use_dropout / last_layer_dropout


@dataclass(frozen=True)
class HypernetworkOptions:
    """The architecture options A1111 stores beside the weights (file keys in brackets where they differ)."""

    layer_structure: tuple[float, ...] = (1.0, 2.0, 1.0)
    activation_func: str | None = "linear"  # None (old files) acts as "linear"
    weight_init: str = "Normal"  # [weight_initialization]; only matters for new weights
    add_layer_norm: bool = False  # [is_layer_norm]
    use_dropout: bool = False
    dropout_structure: tuple[float, ...] | None = None  # None: A1111's rule from use_dropout, last_layer_dropout
    activate_output: bool = False
    last_layer_dropout: bool = False

    def __post_init__(self):
        ls = self.layer_structure
        if len(ls) < 2 or ls[0] != 1 or ls[-1] != 1 or any(m <= 0 for m in ls):
            raise ValueError(f"layer_structure must start and end with 1 and be positive, got {list(ls)}")
        if self.activation_func is not None and self.activation_func not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation_func!r}; A1111's are linear, relu, leakyrelu, "
                             "elu, swish, tanh, sigmoid (or any torch.nn activation, lowercased)")
        if self.weight_init not in WEIGHT_INITS:
            raise ValueError(f"unknown weight initialization {self.weight_init!r}; choose one of "
                             + ", ".join(WEIGHT_INITS))
        ds = self.dropout_structure
        if ds is not None and (len(ds) < len(ls) or not all(0 <= p < 1 for p in ds)):
            raise ValueError(f"dropout_structure must have one probability in [0, 1) per layer_structure entry "
                             f"({len(ls)}), got {list(ds)}")

    @property
    def dropout(self) -> tuple[float, ...]:
        """The dropout probability after each layer: ``dropout_structure``, else A1111's legacy rule (0.3 after
        every hidden layer but the last, and after the last one too with ``last_layer_dropout``)."""
        n = len(self.layer_structure)
        if self.dropout_structure is not None:
            return tuple(self.dropout_structure)
        if not self.use_dropout:
            return (0.0,) * n
        last = LEGACY_DROPOUT if self.last_layer_dropout else 0.0
        return (0.0, *[LEGACY_DROPOUT] * (n - 3), last, 0.0)  # one entry too many when n == 2, as in A1111


class HypernetworkModule(nn.Module):
    """One residual MLP, ``x + linear(x) * strength``, with A1111's layer order (see the module docstring)."""

    def __init__(self, dim: int, options: HypernetworkOptions, *, init: bool = True):
        super().__init__()
        ls, dropout, last = options.layer_structure, options.dropout, len(options.layer_structure) - 2
        layers: list[nn.Module] = []
        for i in range(len(ls) - 1):
            width = int(dim * ls[i + 1])
            layers.append(nn.Linear(int(dim * ls[i]), width))
            if options.activation_func not in (None, "linear") and (i < last or options.activate_output):
                layers.append(ACTIVATIONS[options.activation_func]())
            if options.add_layer_norm:
                layers.append(nn.LayerNorm(width))
            if dropout[i + 1] > 0:
                layers.append(nn.Dropout(p=dropout[i + 1]))
        self.linear = nn.Sequential(*layers)
        if init:
            self.initialize(options.weight_init, options.activation_func)

    def initialize(self, weight_init: str, activation: str | None) -> None:
        """A1111's initialization: LayerNorm weights (and Linear ones for "Normal") ~ N(0, 0.01); biases 0."""
        nonlinearity = "leaky_relu" if activation == "leakyrelu" else "relu"
        for layer in self.linear:
            if not isinstance(layer, (nn.Linear, nn.LayerNorm)):
                continue
            w = layer.weight.data
            if weight_init == "Normal" or isinstance(layer, nn.LayerNorm):
                nn.init.normal_(w, mean=0.0, std=0.01)
            elif weight_init == "XavierUniform":
                nn.init.xavier_uniform_(w)
            elif weight_init == "XavierNormal":
                nn.init.xavier_normal_(w)
            elif weight_init == "KaimingUniform":
                nn.init.kaiming_uniform_(w, nonlinearity=nonlinearity)
            else:
                nn.init.kaiming_normal_(w, nonlinearity=nonlinearity)
            nn.init.zeros_(layer.bias.data)

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Shapes: x (B, M, dim) -> (B, M, dim)."""
        return x + self.linear(x) * strength


class Hypernetwork(nn.Module):
    """A pair of :class:`HypernetworkModule` (K, V) per context width, plus A1111's bookkeeping fields.

    ``layers[str(width)]`` is ``ModuleList([hk, hv])``; new weights are initialised from torch's global RNG.
    """

    def __init__(self, widths: list[int], options: HypernetworkOptions = HypernetworkOptions(), *, name: str = "",
                 step: int = 0, sd_checkpoint: str | None = None, sd_checkpoint_name: str | None = None,
                 optional_info: str | None = None, init: bool = True):
        super().__init__()
        if not widths:
            raise ValueError("a hypernetwork needs at least one context width")
        self.options, self.name, self.step, self.optional_info = options, name, step, optional_info
        self.sd_checkpoint, self.sd_checkpoint_name = sd_checkpoint, sd_checkpoint_name  # base model's hash, name
        self.layers = nn.ModuleDict({str(int(w)): nn.ModuleList([HypernetworkModule(int(w), options, init=init)
                                                                 for _ in range(2)]) for w in widths})

    @property
    def widths(self) -> list[int]:
        return [int(w) for w in self.layers]

    def pair(self, width: int) -> tuple[HypernetworkModule, HypernetworkModule] | None:
        """(hk, hv) for contexts of this width, or None if the hypernetwork has none."""
        modules = self.layers[str(width)] if str(width) in self.layers else None
        return None if modules is None else (modules[0], modules[1])


class HypernetworkHook:
    """An ``Attention.context_hook`` that runs (hypernetwork, strength) pairs in order. Not an ``nn.Module``, so
    setting it on an attention layer adds nothing to the UNet's parameters or state dict.

    Each MLP runs in its own dtype (float32 as loaded; A1111 does the same) and its output is cast back.
    Strength 0 skips the MLP, so the context comes back bit for bit unchanged.
    """

    def __init__(self, entries: list[tuple[Hypernetwork, float]]):
        self.entries = list(entries)

    def __call__(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes: context (B, M, D) -> (context for K, context for V), each (B, M, D)."""
        ctx_k = ctx_v = context
        for hypernetwork, strength in self.entries:
            pair = hypernetwork.pair(context.shape[-1])
            if pair is None or strength == 0:
                continue
            hk, hv = pair
            dtype = hk.linear[0].weight.dtype
            ctx_k = hk(ctx_k.to(dtype), strength).to(context.dtype)
            ctx_v = hv(ctx_v.to(dtype), strength).to(context.dtype)
        return ctx_k, ctx_v


def _attentions(unet: nn.Module) -> list[Attention]:
    return [m for m in unet.modules() if isinstance(m, Attention)]


def attention_widths(unet: nn.Module) -> list[int]:
    """The context widths the UNet's attention layers take (self-attention: their channels; cross: the text's)."""
    return sorted({a.to_k.in_features for a in _attentions(unet)})


def default_widths(cfg: UNetConfig) -> list[int]:
    """A1111's choice of widths for a new hypernetwork: the cross-attention context width, then the channels of
    every level with attention and of the middle block (SD 1: 768, 320, 640, 1280)."""
    levels = [cfg.model_channels * m for m, attn in zip(cfg.channel_mult, cfg.attention_levels) if attn]
    middle = cfg.model_channels * cfg.channel_mult[-1]
    return list(dict.fromkeys([cfg.context_dim, *levels, middle]))


def apply_hypernetworks(unet: nn.Module, entries: list[tuple[Hypernetwork, float]]) -> None:
    """Make ``entries`` (hypernetwork, strength), in this order, the UNet's hypernetworks: every attention layer
    whose context width some of them cover gets one hook chaining those; every other layer gets none. The
    hypernetworks move to the UNet's device. A hypernetwork covering none of the model's widths is refused."""
    entries = [(hn, float(strength)) for hn, strength in entries]
    attentions = _attentions(unet)
    widths = {a.to_k.in_features for a in attentions}
    for hn, _ in entries:
        if not widths & set(hn.widths):
            raise ValueError(f"hypernetwork {hn.name or '(unnamed)'!r} has modules for context widths {hn.widths}, "
                             f"but this model's attention layers take widths {sorted(widths)}: it was made for "
                             "another model")
    device = next(unet.parameters()).device
    for hn, _ in entries:
        hn.to(device)
    for attention in attentions:
        covering = [(hn, s) for hn, s in entries if hn.pair(attention.to_k.in_features) is not None]
        attention.context_hook = HypernetworkHook(covering) if covering else None


def remove_hypernetworks(unet: nn.Module) -> None:
    """Every attention layer back to plain ``to_k(context)``, ``to_v(context)``."""
    apply_hypernetworks(unet, [])
