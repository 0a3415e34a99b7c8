"""What the operator chose when starting ``nanoldm serve``: :class:`ServerSettings`, typed (the command line
builds it in ``cli/serve.py``; Python users build it directly), and the start-up security checks."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_NAMES = ("localhost",)
MAX_STEPS = 150
MAX_BATCH = 16
MAX_PROMPT = 10_000  # characters
MAX_BODY = 50 * 1024 * 1024  # bytes of one request body


@dataclass(frozen=True)
class ServerSettings:
    """``model``: the checkpoint served first (None: the built-in model); ``models_dir``: more checkpoints,
    listed by ``/sd-models`` and chosen by title; ``api_auth``: (user, password) pairs, HTTP basic auth on every
    route when not empty; ``queue_size``: jobs that may wait behind the running one; ``max_size``: the largest
    width or height in pixels; ``save_dir``: where outputs are also written (None: only returned)."""

    model: Path | None = None
    models_dir: Path | None = None
    embeddings_dir: Path | None = None
    hypernetwork_dir: Path | None = None
    lora_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    api_auth: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    queue_size: int = 16
    dtype: str = "float32"
    device: str | None = None
    max_size: int = 2048
    save_dir: Path | None = None
    insecure: bool = False

    def check(self) -> None:
        """ValueError naming the first setting the server must not start with."""
        if self.queue_size < 0:
            raise ValueError(f"queue size must be at least 0, got {self.queue_size}")
        if self.max_size < 1:
            raise ValueError(f"max size must be at least 1, got {self.max_size}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if not is_loopback(self.host) and not self.api_auth and not self.insecure:
            raise ValueError(f"refusing to serve on {self.host}, which other machines can reach, without "
                             f"--api-auth USER:PASS (or --insecure to accept the risk)")
        for folder in (self.models_dir, self.embeddings_dir, self.hypernetwork_dir, self.lora_dir):
            if folder is not None and not Path(folder).is_dir():
                raise ValueError(f"{folder}: no such folder")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for every other address or name (0.0.0.0 included)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_api_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """``"user:pass,user2:pass2"`` -> ((user, pass), ...); a clear error for an entry without a colon or with an
    empty name or password. The password may hold colons (split on the first one)."""
    if not text:
        return ()
    pairs = []
    for entry in text.split(","):
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ValueError("--api-auth takes USER:PASSWORD[,USER:PASSWORD...] with a non-empty name and password")
        pairs.append((user, password))
    return tuple(pairs)
