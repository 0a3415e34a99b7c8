"""SamplingMonitor: every step is seen, and an interrupt or skip returns the x0 prediction of the step it ended
after, decoded as the image (A1111's interrupt), leaving the pixels of an uninterrupted run untouched."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import nanoldm
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.pipelines.progress import SamplingMonitor, StopSampling
from nanoldm.pipelines.sampling import decode

OPTS = GenerateOptions(prompt="a large red circle at the top left", steps=3, seed=3, width=32, height=32,
                       batch_size=2)


@pytest.fixture(scope="module")
def pipe():
    return nanoldm.load_pipeline(device="cpu")


class Recorder(SamplingMonitor):
    """Keeps every step's x0 prediction; ends the run after ``stop_after`` steps (``how``: interrupt or skip)."""

    def __init__(self, stop_after: int | None = None, how: str = "interrupt"):
        super().__init__()
        self.stop_after, self.how, self.seen = stop_after, how, []

    def on_step(self, step, steps, denoised, render=None):
        self.seen.append((step, steps, denoised.clone()))
        if step == self.stop_after:
            getattr(self, self.how)()
        super().on_step(step, steps, denoised, render)


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_a_monitor_sees_every_step_and_changes_nothing(pipe):
    plain = pipe.generate(OPTS, progress=False)
    watched = Recorder()
    assert np.array_equal(pixels(pipe.generate(OPTS, progress=False, monitor=watched)), pixels(plain))
    assert [(step, steps) for step, steps, _ in watched.seen] == [(i, 3) for i in range(1, 4)]


def test_an_end_returns_the_x0_prediction_of_that_step(pipe):
    monitor = Recorder(stop_after=2)
    images = pipe.generate(OPTS, progress=False, monitor=monitor)
    assert [step for step, _, _ in monitor.seen] == [1, 2]  # nothing after the step it ended on
    expected = tensor_to_pil(decode(pipe.parts(), monitor.seen[-1][2]), "truncate")  # A1111 8 bits, the default
    assert len(images) == 2 and np.array_equal(pixels(images), pixels(expected))
    assert monitor.snapshot().step == 2


def test_a_skip_ends_one_run_an_interrupt_every_later_one():
    monitor = SamplingMonitor(runs=3)
    assert monitor.begin_run()
    monitor.skip()
    with pytest.raises(StopSampling):
        monitor.on_step(1, 4, torch.zeros(1, 4, 8, 8))
    assert monitor.begin_run() and monitor.snapshot().run == 1 and not monitor.snapshot().skipped
    monitor.interrupt()
    assert not monitor.begin_run()


def test_a_preview_is_made_only_when_asked_for(pipe):
    monitor = SamplingMonitor()
    monitor.want_preview()
    pipe.generate(dataclasses.replace(OPTS, batch_size=1), progress=False, monitor=monitor)
    assert monitor.preview is not None and monitor.preview.size == (32, 32)
    fraction = monitor.snapshot()
    assert fraction.step == fraction.steps == 3
