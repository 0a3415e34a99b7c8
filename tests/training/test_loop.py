"""The training loop on a tiny regression: loss falls; stop/kill/Ctrl-C and resume end bit-for-bit where an
uninterrupted run ends; an interrupted checkpoint write keeps the previous checkpoint."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import nanoldm.checkpoint.formats as formats  # noqa: E402
from nanoldm.checkpoint.formats import CheckpointError  # noqa: E402
from nanoldm.training import TrainConfig, read_checkpoint, train  # noqa: E402


class Regression:
    """A 2-layer MLP regressing sin(sum x) on 64 fixed points; dropout, input noise from the loop's generator
    and python/numpy jitter make every random stream matter."""

    def __init__(self, *, dropout: float = 0.2, noisy: bool = True, sleep: float = 0.0, interrupt_at: int = -1):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=g)
        self.y = torch.sin(self.x.sum(1, keepdim=True))
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                                       torch.nn.Linear(32, 1))
        self.noisy, self.sleep, self.interrupt_at, self.calls = noisy, sleep, interrupt_at, 0

    def modules(self):
        return {"net": self.net}

    def num_examples(self):
        return len(self.x)

    def batch(self, indices):
        return self.x[indices], self.y[indices]

    def loss(self, batch, generator):
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls += 1
        time.sleep(self.sleep)
        x, y = batch
        if self.noisy:
            x = x + 0.05 * torch.randn(x.shape, generator=generator) + 0.01 * (random.random() + np.random.rand())
        return F.mse_loss(self.net(x), y)

    def sample(self, step):
        torch.rand(3), random.random(), np.random.rand()  # sampling draws must not move training streams
        return Image.new("RGB", (8, 8), (step % 256, 0, 0))


def config(out: Path, **kw) -> TrainConfig:
    base = TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=5, ema_decay=0.9, log_every=5,
                       checkpoint_every=5, seed=3, out_dir=str(out))
    return replace(base, **kw)


def tensors(out: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(out / "checkpoint.safetensors")[0]


def assert_same(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different


def step_of(out: Path) -> int:
    return read_checkpoint(out / "checkpoint.safetensors")[1]["step"]


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_loss_falls_and_log_parses(tmp_path):
    train(Regression(dropout=0.0), config(tmp_path, steps=150, lr=1e-2, log_every=10, checkpoint_every=1000),
          progress=False)
    lines = log_lines(tmp_path)
    assert [d["step"] for d in lines] == list(range(10, 151, 10))
    assert set(lines[0]) >= {"step", "loss", "lr", "time", "examples", "grad_norm"}
    assert lines[-1]["loss"] < 0.3 * lines[0]["loss"]
    assert step_of(tmp_path) == 150  # the final checkpoint


def test_stop_and_resume_is_bitwise(tmp_path):
    train(Regression(), config(tmp_path / "full", grad_accum=2), progress=False)
    train(Regression(), config(tmp_path / "cut", grad_accum=2, steps=12), progress=False)
    assert step_of(tmp_path / "cut") == 12
    train(Regression(), config(tmp_path / "cut", grad_accum=2), resume=True, progress=False)
    assert_same(tmp_path / "full", tmp_path / "cut")
    assert [d["step"] for d in log_lines(tmp_path / "cut")] == [5, 10, 12, 15, 20, 25, 30]


def test_sigkill_and_resume_is_bitwise(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, __file__, str(out)], env=env)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.safetensors").exists():
            assert proc.poll() is None and time.time() < deadline, "the training subprocess ended early"
            time.sleep(0.02)
        time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = step_of(out)
    assert 0 < killed_at < 1000
    steps = killed_at + 7
    train(Regression(), config(out, steps=steps, checkpoint_every=3), resume=True, progress=False)
    train(Regression(), config(tmp_path / "full", steps=steps, checkpoint_every=3), progress=False)
    assert_same(out, tmp_path / "full")


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    real_save, calls = formats.save_file, []

    def half_written(tensors, path, metadata=None):
        calls.append(path)
        real_save(tensors, path, metadata=metadata)
        if len(calls) == 2:  # the second checkpoint: cut the file in half, then fail like a crash would
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(size // 2)
            raise OSError("disk unplugged half-way")

    monkeypatch.setattr(formats, "save_file", half_written)
    with pytest.raises(OSError, match="half-way"):
        train(Regression(), config(tmp_path / "a", steps=10), progress=False)
    monkeypatch.undo()
    train(Regression(), config(tmp_path / "b", steps=5), progress=False)
    assert step_of(tmp_path / "a") == 5
    assert_same(tmp_path / "a", tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["checkpoint.safetensors", "log.jsonl"]


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    quiet = dict(dropout=0.0, noisy=False)
    train(Regression(**quiet), config(tmp_path / "a", steps=6, batch_size=8, grad_accum=2), progress=False)
    train(Regression(**quiet), config(tmp_path / "b", steps=6, batch_size=8, grad_accum=1), progress=False)
    ta, tb = tensors(tmp_path / "a"), tensors(tmp_path / "b")
    for k in ta:
        if k.startswith(("model.", "ema.")):
            torch.testing.assert_close(ta[k], tb[k], atol=1e-6, rtol=0)


def test_ctrl_c_saves_at_that_step_and_resumes_bitwise(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(Regression(interrupt_at=7), config(tmp_path / "cut", checkpoint_every=100), progress=False)
    assert step_of(tmp_path / "cut") == 7
    train(Regression(), config(tmp_path / "cut", checkpoint_every=100), resume=True, progress=False)
    train(Regression(), config(tmp_path / "full", checkpoint_every=100), progress=False)
    assert_same(tmp_path / "cut", tmp_path / "full")


def test_samples_are_saved_and_leave_training_unchanged(tmp_path):
    train(Regression(), config(tmp_path / "a", steps=10, sample_every=5), progress=False)
    train(Regression(), config(tmp_path / "b", steps=10), progress=False)
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == ["step_0000005.png", "step_0000010.png"]
    assert_same(tmp_path / "a", tmp_path / "b")


def test_bad_resumes_and_nan_loss_are_clear_errors(tmp_path):
    train(Regression(), config(tmp_path, steps=5), progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        train(Regression(), config(tmp_path, steps=10), progress=False)
    with pytest.raises(CheckpointError, match="lr was 0.003, now 0.1"):
        train(Regression(), config(tmp_path, steps=10, lr=0.1), resume=True, progress=False)
    task = Regression()
    task.loss = lambda batch, generator: torch.tensor(float("nan"), requires_grad=True)
    with pytest.raises(FloatingPointError, match="last good checkpoint"):
        train(task, config(tmp_path, steps=10), resume=True, progress=False)
    assert step_of(tmp_path) == 5


def test_resume_with_other_task_options_is_a_clear_error(tmp_path):
    """What the loss depends on outside the config (e.g. --min-snr-gamma) is saved and checked like the config."""
    class Weighted(Regression):
        def __init__(self, weight):
            super().__init__()
            self.weight = weight

        def options(self):
            return {"weight": self.weight}

    train(Weighted(None), config(tmp_path, steps=3), progress=False)
    with pytest.raises(CheckpointError, match="training options changed since the checkpoint: weight was None, now 5"):
        train(Weighted(5.0), config(tmp_path, steps=6), resume=True, progress=False)
    assert step_of(tmp_path) == 3
    assert train(Weighted(None), config(tmp_path, steps=6), resume=True, progress=False).step == 6


class Recorded(Regression):
    """The regression without randomness, recording the dtype its network computes in."""

    def __init__(self):
        super().__init__(dropout=0.0, noisy=False)
        self.dtypes = set()

    def loss(self, batch, generator):
        x, y = batch
        prediction = self.net(x)
        self.dtypes.add(prediction.dtype)
        return F.mse_loss(prediction.float(), y)


def test_bf16_autocast_computes_in_bf16_and_updates_like_float32(tmp_path):
    runs = {}
    for bf16 in (False, True):
        task = Recorded()
        start = torch.cat([p.detach().flatten() for p in task.net.parameters()])
        result = train(task, config(tmp_path / str(bf16), steps=3, bf16=bf16), progress=False)
        update = torch.cat([p.detach().flatten() for p in task.net.parameters()]) - start
        runs[bf16] = task.dtypes, result.loss, update
        assert all(p.dtype == torch.float32 for p in task.net.parameters())  # the weights stay float32
    assert runs[False][0] == {torch.float32} and runs[True][0] == {torch.bfloat16}
    assert runs[True][1] == pytest.approx(runs[False][1], rel=0.05)
    assert not torch.equal(runs[True][2], runs[False][2])  # bf16 rounding did change the numbers...
    assert F.cosine_similarity(runs[True][2], runs[False][2], dim=0) > 0.99  # ...not the direction of the update


def test_two_process_torchrun_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           str(tmp_path / "ddp"), "ddp"]
    run = subprocess.run(cmd, env=env, timeout=120, capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    train(Regression(**DDP_TASK), config(tmp_path / "one", **DDP_RUN), progress=False)
    ta, tb = tensors(tmp_path / "ddp"), tensors(tmp_path / "one")
    for k in ta:
        if k.startswith(("model.", "ema.", "optim.")):
            torch.testing.assert_close(ta[k], tb[k], atol=1e-6, rtol=0)
    assert len(log_lines(tmp_path / "ddp")) == 2  # rank 0 alone writes the log


DDP_TASK = dict(dropout=0.0, noisy=False)
DDP_RUN = dict(steps=10, batch_size=8, grad_accum=2)

if __name__ == "__main__":  # subprocesses: a slow run the SIGKILL test kills mid-way, or one torchrun rank
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    if sys.argv[2:] == ["ddp"]:
        train(Regression(**DDP_TASK), config(out, **DDP_RUN), progress=False)
    else:
        train(Regression(sleep=0.01), config(out, steps=1000, checkpoint_every=3), progress=False)



def test_checkpoint_every_zero_saves_only_at_the_end(tmp_path, monkeypatch):
    import nanoldm.training.loop as loop_module

    saved = []
    real = loop_module.save_checkpoint
    monkeypatch.setattr(loop_module, "save_checkpoint", lambda *a, **k: saved.append(1) or real(*a, **k))
    train(Regression(), config(tmp_path, steps=20, checkpoint_every=0), progress=False)
    assert step_of(tmp_path) == 20 and len(saved) == 1
