"""SHA-256 of a file, read in blocks (never whole): what A1111's short hashes are cut from (``Model hash``: 10 hex
digits of the whole file; ``TI hashes``: 12; ``Lora hashes``: 12 of a safetensors file's tensor bytes)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, *, start: int = 0, block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of ``path`` from offset ``start`` to the end."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while block := f.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def safetensors_data_offset(path: str | Path) -> int:
    """Where a ``.safetensors`` file's tensor bytes start: after the 8-byte length and the JSON header."""
    with open(path, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def hash_list(hashes: dict[str, str]) -> str:
    """A1111's ``"name: hash, name: hash"`` value (``Lora hashes``, ``TI hashes``): names lose ':' and ','."""
    return ", ".join(f"{name.translate(_NAME_SYMBOLS)}: {short}" for name, short in hashes.items())


_NAME_SYMBOLS = str.maketrans("", "", ":,")
