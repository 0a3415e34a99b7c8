"""Watching and stopping a generation from another thread: :class:`SamplingMonitor`.

``Pipeline.generate(..., monitor=m)`` hands ``m`` down to :func:`~nanoldm.pipelines.sampling.sample_latents`,
which calls :meth:`SamplingMonitor.on_step` from the sampler's ``callback(i, x, denoised)`` after every step.
Another thread (a server's progress route) reads :meth:`snapshot` and may ask for an end:

- :meth:`interrupt`: the sampling run ends after the current step and returns the latest x0 prediction (the
  ``denoised`` of that step), which is decoded as usual; every later run of this monitor ends after its first
  step too (A1111's "Interrupt": the whole job stops, what it has is returned).
- :meth:`skip`: like interrupt, but only for the run under way; the next run (:meth:`begin_run`) goes on
  (A1111's "Skip": the current batch is cut short, the next ``n_iter`` batch starts).

A live preview is made only when asked for (:meth:`want_preview`), in the sampling thread itself (the networks
are never touched from two threads at once), from the first image of the batch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch
from PIL import Image


class StopSampling(Exception):
    """Raised by :meth:`SamplingMonitor.on_step` to end a sampling run early (interrupt or skip)."""


@dataclass(frozen=True)
class ProgressSnapshot:
    """What a watcher sees: run ``run`` of ``runs`` (0-based), step ``step`` of ``steps`` in it (1-based once
    a step is done), seconds since the job began, and the flags."""

    run: int
    runs: int
    step: int
    steps: int
    elapsed: float
    interrupted: bool
    skipped: bool
    active: bool

    @property
    def fraction(self) -> float:
        """Done share of the whole job in [0, 1]."""
        if not self.active or self.runs <= 0:
            return 0.0
        within = self.step / self.steps if self.steps else 0.0
        return min(1.0, (self.run + within) / self.runs)


class SamplingMonitor:
    """Progress, preview and stop requests of one job (one or more sampling runs). Thread-safe."""

    def __init__(self, runs: int = 1):
        self._lock = threading.Lock()
        self.runs = runs
        self.run, self.step, self.steps = -1, 0, 0
        self.started = time.monotonic()
        self.active = False
        self.interrupted = False
        self.skipped = False
        self.latest: torch.Tensor | None = None  # the last step's x0 prediction (scaled latents)
        self.preview: Image.Image | None = None
        self._preview_wanted = False

    # ---- the sampling thread ----

    def begin_run(self) -> bool:
        """Start the next sampling run; False when the job was interrupted (no more runs)."""
        with self._lock:
            self.active = True
            if self.interrupted:
                return False
            self.run, self.step, self.steps, self.skipped = self.run + 1, 0, 0, False
            return True

    def on_step(self, step: int, steps: int, denoised: torch.Tensor,
                render: Callable[[torch.Tensor], Image.Image] | None = None) -> None:
        """Record step ``step`` of ``steps`` and its x0 prediction; make a preview with ``render`` if one is
        wanted; raise :class:`StopSampling` if an end was asked for. Shapes: denoised (B, C, h, w)."""
        with self._lock:
            self.step, self.steps, self.latest = step, steps, denoised
            make_preview, self._preview_wanted = self._preview_wanted and render is not None, False
            stop = self.interrupted or self.skipped
        if make_preview:
            image = render(denoised[:1])
            with self._lock:
                self.preview = image
        if stop:
            raise StopSampling

    def end(self) -> None:
        with self._lock:
            self.active = False

    # ---- any thread ----

    def interrupt(self) -> None:
        with self._lock:
            self.interrupted = True

    def skip(self) -> None:
        with self._lock:
            self.skipped = True

    def want_preview(self) -> None:
        """Ask for a preview of the next step's x0 prediction (read it later from ``preview``)."""
        with self._lock:
            self._preview_wanted = True

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return ProgressSnapshot(run=max(self.run, 0), runs=self.runs, step=self.step, steps=self.steps,
                                    elapsed=time.monotonic() - self.started, interrupted=self.interrupted,
                                    skipped=self.skipped, active=self.active)
