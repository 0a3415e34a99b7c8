"""Fixtures that start the real server (``python -m nanoldm serve``) in a subprocess on a free loopback port,
wait until it answers, and stop it afterwards. Requests then go over HTTP, as any client's do."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch

from nanoldm.builtin import builtin_model_path
from nanoldm.checkpoint.load import load_model
from nanoldm.finetune.lora_file import LoraModule, save_lora

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180  # loading torch and the model on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ``nanoldm serve``; ``url`` is its API base (``.../sdapi/v1``)."""

    def __init__(self, *args: str, auth: tuple[str, str] | None = None):
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/sdapi/v1"
        self.auth = auth
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "nanoldm", "serve", "--port", str(self.port), *args],
                                        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server ended at start-up: {self.process.stderr.read().decode()[-2000:]}")
            try:
                requests.get(f"{self.url}/progress", auth=self.auth, timeout=5)
                return
            except requests.ConnectionError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the server did not answer in time")

    def get(self, route: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.url}/{route}", auth=kwargs.pop("auth", self.auth), timeout=600, **kwargs)

    def post(self, route: str, json=None, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/{route}", json=json, auth=kwargs.pop("auth", self.auth), timeout=600,
                             **kwargs)

    def alive(self) -> bool:
        return self.process.poll() is None and self.get("progress").status_code == 200

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The built-in model, default queue (16), sizes up to 128 pixels; a copy of it as a second checkpoint in
    ``--models-dir`` (``other/copy.safetensors``); a LoRA ``ink`` in ``--lora-dir``."""
    models = tmp_path_factory.mktemp("models")
    (models / "other").mkdir()
    shutil.copy(builtin_model_path(), models / "other" / "copy.safetensors")
    loras = tmp_path_factory.mktemp("loras")
    write_test_lora(loras / "ink.safetensors")
    running = Server("--max-size", "128", "--models-dir", str(models), "--lora-dir", str(loras))
    yield running
    running.stop()


# small and quick: every test that generates uses these unless it says otherwise
SMALL = {"prompt": "a large red circle at the top left", "steps": 2, "width": 32, "height": 32, "seed": 7,
         "sampler_name": "Euler a"}


def write_test_lora(path: Path) -> None:
    """A rank-4 LoRA on every cross-attention key projection of the built-in UNet, random but strong enough to
    change a picture, in kohya's layout with kohya's metadata."""
    model = load_model(builtin_model_path())
    g = torch.Generator().manual_seed(0)
    weights = {f"unet.{name}": LoraModule(down=torch.randn(4, m.in_features, generator=g),
                                          up=torch.randn(m.out_features, 4, generator=g), alpha=4.0)
               for name, m in model.unet.named_modules() if name.endswith("attn2.to_k")}
    save_lora(path, weights, {"ss_network_module": "networks.lora", "ss_network_dim": "4"})
