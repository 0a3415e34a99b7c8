"""One training loop under every trainer; it knows nothing about the model it trains (after minGPT's Trainer).

A trainer hands :func:`train` a :class:`Task` (which modules, how to build a batch from example indices, the
loss) and a :class:`TrainConfig`. The loop owns everything else: the data order, AdamW with linear warm-up,
gradient accumulation, gradient clipping, EMA weights, bf16 autocast, the progress bar, ``OUT/log.jsonl``,
sample grids in ``OUT/samples/``, and ``OUT/checkpoint.safetensors`` (see :mod:`nanoldm.training.state`),
written every ``checkpoint_every`` steps, at the end and on Ctrl-C. ``resume=True`` continues from it and
ends with the same weights, bit for bit, as a run that was never stopped.

Reproducibility rests on three things: the data order is a pure function of (seed, epoch), so the position
is one integer; every random stream (python, numpy, torch, the loss generator) is saved with the weights;
and sampling runs inside a forked RNG, so drawing samples never moves a training stream.

Under ``torchrun`` (see :mod:`nanoldm.training.distributed`) each rank draws from streams seeded with
``seed + rank``; the checkpoint holds rank 0's streams, so a multi-process run resumes with exact weights,
optimizer and data position, and bit-exact continuation only when the loss draws no per-rank randomness.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from nanoldm.checkpoint.formats import CheckpointError, write_text
from nanoldm.training import distributed
from nanoldm.training.ema import EMA
from nanoldm.training.state import RngState, load_modules, load_optimizer, read_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"
# Fields that may change between a run and its resumption; all others must match the checkpoint's config.
RESUMABLE_CHANGES = {"steps", "log_every", "checkpoint_every", "sample_every", "out_dir"}


@dataclass
class TrainConfig:
    """How to train; ``batch_size`` is the global number of examples per optimizer step."""
    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1              # micro-batches per step; each has batch_size // grad_accum examples
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0            # lr rises linearly from lr/warmup_steps to lr, then stays
    grad_clip: float | None = 1.0    # max global grad norm; None: no clipping
    ema_decay: float | None = None   # e.g. 0.999; None: no EMA
    bf16: bool = False               # autocast the loss to bfloat16
    log_every: int = 10
    checkpoint_every: int = 500      # 0: only at the end (and on Ctrl-C)
    sample_every: int = 0            # 0: never (needs task.sample)
    seed: int = 0
    out_dir: str = "runs/train"


class Task(Protocol):
    """What a trainer provides. Optional: ``parameters()`` (default: all params of ``modules()`` that require
    grad), ``sample(step) -> PIL.Image`` (a grid drawn with the EMA weights every ``sample_every`` steps),
    ``set_step(step)`` (called before each step, for losses that change with it) and ``options() -> dict`` (what
    else the loss depends on, JSON-able: saved with the checkpoint and, like the config, checked on resume)."""

    def modules(self) -> dict[str, torch.nn.Module]: ...
    def num_examples(self) -> int: ...
    def batch(self, indices: list[int]) -> Any: ...
    def loss(self, batch: Any, generator: torch.Generator) -> torch.Tensor: ...


@dataclass
class TrainResult:
    step: int
    loss: float
    checkpoint: Path


class ExampleOrder:
    """Example indices in a fresh random permutation each epoch, a pure function of (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        if n <= 0:
            raise ValueError("the task has no training examples")
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, None

    def indices(self, start: int, count: int) -> list[int]:
        """Indices of global positions ``start .. start + count - 1`` (crossing epochs as needed)."""
        return [self._permutation(p // self.n)[p % self.n] for p in range(start, start + count)]

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr


class _Interrupt:
    """Turns SIGINT into a flag the loop checks between steps, so Ctrl-C never lands mid-update."""

    def __init__(self):
        self.requested, self._old = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class _Run:
    """The mutable state of one run: modules, optimizer, EMA, RNG, position; loading and saving it."""

    def __init__(self, task: Task, cfg: TrainConfig):
        self.rank, self.world = distributed.setup()
        if cfg.batch_size % (cfg.grad_accum * self.world):
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by grad_accum {cfg.grad_accum} "
                             f"x {self.world} processes")
        self.task, self.cfg, self.out = task, cfg, Path(cfg.out_dir)
        self.modules = task.modules()
        distributed.broadcast_modules(self.modules, self.world)
        self.named = {f"{m}.{n}": p for m, mod in self.modules.items() for n, p in mod.named_parameters()}
        params = list(task.parameters()) if hasattr(task, "parameters") else \
            [p for p in self.named.values() if p.requires_grad]
        by_id = {id(p): n for n, p in self.named.items()}
        if any(id(p) not in by_id for p in params):
            raise ValueError("task.parameters() holds a parameter outside task.modules(): it would not be saved")
        self.params = params
        # the fused kernel: the same update (to float rounding) as the for-each one, 3x faster on a CPU (tiny UNet)
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                           fused=fused)
        self.ema = EMA({by_id[id(p)]: p for p in params}, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.generator = torch.Generator().manual_seed(cfg.seed + self.rank)
        self.order = ExampleOrder(task.num_examples(), cfg.seed)
        self.step, self.examples = 0, 0

    def seed_fresh(self) -> None:
        seed = self.cfg.seed + self.rank  # each rank its own dropout masks and noise
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def save(self, rng: RngState) -> None:
        """Rank 0 writes (its own RNG streams; see the module notes on multi-process resumption)."""
        if self.rank == 0:
            save_checkpoint(self.out / CHECKPOINT, modules=self.modules, optimizer=self.optimizer,
                            ema=self.ema.state_dict() if self.ema else None, rng=rng,
                            meta={"step": self.step, "examples": self.examples, "config": _config_json(self.cfg),
                                  "task": _task_options(self.task)})
        distributed.barrier(self.world)

    def load(self) -> None:
        path = self.out / CHECKPOINT
        tensors, meta = read_checkpoint(path)
        _check_unchanged(path, "the config", meta["config"], _config_json(self.cfg), RESUMABLE_CHANGES)
        if "task" in meta:  # checkpoints of older versions did not record the task's options
            _check_unchanged(path, "the training options", meta["task"], _task_options(self.task))
        load_modules(path, self.modules, tensors)
        load_optimizer(self.optimizer, tensors, meta["param_groups"])
        if self.ema:
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        RngState.from_parts(tensors, meta["rng"]).restore(self.generator)
        self.step, self.examples = meta["step"], meta["examples"]


def _config_json(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _task_options(task: Task) -> dict:
    return json.loads(json.dumps(task.options())) if hasattr(task, "options") else {}


def _check_unchanged(path: Path, what: str, saved: dict, now: dict, may_change: set[str] = frozenset()) -> None:
    keys = (saved.keys() | now.keys()) - may_change
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(keys) if saved.get(k) != now.get(k)}
    if diff:
        raise CheckpointError(f"{path}: cannot resume, {what} changed since the checkpoint: "
                              + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in diff.items()))


def _one_step(run: _Run) -> tuple[float, float]:
    """Forward/backward over ``grad_accum`` micro-batches, then one optimizer (and EMA) update.
    Returns (mean loss, grad norm). Nothing is updated if a micro-batch raises."""
    cfg, task = run.cfg, run.task
    micro = cfg.batch_size // cfg.grad_accum  # examples per micro-batch, over all ranks
    local = micro // run.world                 # this rank's share of it
    device = run.params[0].device
    total = 0.0
    if hasattr(task, "set_step"):  # tasks whose loss changes with the step (e.g. a discriminator's start)
        task.set_step(run.step)
    for m in range(cfg.grad_accum):
        batch = task.batch(run.order.indices(run.examples + m * micro + run.rank * local, local))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = task.loss(batch, run.generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {run.step}; stopped, the last good "
                                     f"checkpoint is kept in {run.out / CHECKPOINT}")
        (loss.float() / cfg.grad_accum).backward()
        total += loss.item() / cfg.grad_accum
    distributed.average_gradients(run.params, run.world)
    total = distributed.average(total, run.world, device)
    clip = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    norm = torch.nn.utils.clip_grad_norm_(run.params, clip).item()
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(cfg, run.step)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema:
        run.ema.update()
    run.step += 1
    run.examples += cfg.batch_size
    return total, norm


def _draw_samples(run: _Run) -> None:
    """Draw ``task.sample(step)`` with the EMA weights, in forked RNG streams, and save it as a PNG."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(), (run.ema.swapped_in() if run.ema else nullcontext()):
        image = run.task.sample(run.step)
    random.setstate(python)
    np.random.set_state(numpy)
    path = run.out / "samples" / f"step_{run.step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _start(run: _Run, resume: bool) -> None:
    """Load the checkpoint (resume) or seed a fresh run; trim log lines the checkpoint does not cover."""
    path, log = run.out / CHECKPOINT, run.out / LOG
    if path.exists() and not resume:
        raise FileExistsError(f"{path} exists: resume it (--resume) or choose another output folder")
    distributed.barrier(run.world)  # every rank has looked before rank 0 may write
    if resume and path.exists():
        run.load()
    else:
        run.seed_fresh()
    if run.rank != 0:
        return
    run.out.mkdir(parents=True, exist_ok=True)
    if log.exists():
        kept = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= run.step]
        write_text(log, "".join(line + "\n" for line in kept))


def train(task: Task, cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``task`` for ``cfg.steps`` optimizer steps (in total, counting those before a resume)."""
    run = _Run(task, cfg)
    _start(run, resume)
    t0, losses, loss, norm = time.time(), [], float("nan"), 0.0
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not progress or run.rank != 0, desc="train",
               dynamic_ncols=True)
    with _Interrupt() as interrupt, (open(run.out / LOG, "a") if run.rank == 0 else nullcontext()) as log:
        while run.step < cfg.steps:
            rng = RngState.capture(run.generator)
            try:
                loss, norm = _one_step(run)
            except KeyboardInterrupt:
                run.optimizer.zero_grad(set_to_none=True)
                run.save(rng)  # weights untouched this step; the RNG as it was at the step's start
                raise
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{learning_rate(cfg, run.step - 1):.2e}")
            if log is not None and (run.step % cfg.log_every == 0 or run.step == cfg.steps):
                log.write(json.dumps({"step": run.step, "loss": sum(losses) / len(losses), "lr":
                                      learning_rate(cfg, run.step - 1), "grad_norm": norm,
                                      "examples": run.examples, "time": round(time.time() - t0, 3)}) + "\n")
                log.flush()
                losses = []
            if cfg.sample_every and run.step % cfg.sample_every == 0 and hasattr(task, "sample") and run.rank == 0:
                _draw_samples(run)
            periodic = cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0  # 0: only at the end
            if periodic or run.step == cfg.steps or interrupt.requested:
                run.save(RngState.capture(run.generator))
            if interrupt.requested:
                raise KeyboardInterrupt
    bar.close()
    if run.step == 0:
        run.save(RngState.capture(run.generator))
    return TrainResult(run.step, loss, run.out / CHECKPOINT)
