"""Every command of the README's "Use" section runs as written, with tiny stand-ins for the files it names (a
random TINY model as the SD file, the diffusers folder and the inpainting file) and small sizes and step counts."""
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.config import ModelConfig
from nanoldm.model import LatentDiffusion
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY, TINY_TEXT, TINY_UNET_INPAINT, TINY_VAE

README = Path(__file__).resolve().parents[2] / "README.md"
SMALLER = {"512": "32", "20": "2", "2000": "16"}  # --width/--height, --steps, --count


def use_commands() -> list[str]:
    """The ``nanoldm ...`` lines of the Use section's bash blocks, continuation lines joined."""
    section = README.read_text().split("\n## Use\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip().startswith("nanoldm ")]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.default()
    save_model(LatentDiffusion.from_config(TINY, tokenizer=tokenizer), root / "sd15.safetensors", format="sd")
    save_model(LatentDiffusion.from_config(TINY, tokenizer=tokenizer), root / "sd15", format="diffusers")
    inpainting = ModelConfig(unet=TINY_UNET_INPAINT, vae=TINY_VAE, text=TINY_TEXT, image_size=32)
    save_model(LatentDiffusion.from_config(inpainting, tokenizer=tokenizer), root / "sd-inpainting.safetensors",
               format="sd")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "photo.png")
    mask = Image.new("L", (48, 40), 0)
    mask.paste(255, (8, 8, 24, 24))
    mask.save(root / "mask.png")
    return root


def test_the_use_section_has_the_commands_people_copy():
    commands = use_commands()
    assert len(commands) >= 5 and {c.split()[1] for c in commands} >= {"txt2img", "img2img", "inpaint", "shapes"}


def run(command: str) -> int:
    argv = shlex.split(command, comments=True)[1:]
    argv = [SMALLER.get(a, a) if i and argv[i - 1] in ("--width", "--height", "--steps", "--count") else a
            for i, a in enumerate(argv)]
    return main(argv)


@pytest.mark.parametrize("command", [c for c in use_commands() if c.split()[1] != "convert"])
def test_each_use_command_runs_as_written(command, stand_ins, monkeypatch):
    monkeypatch.chdir(stand_ins)  # the files it names are there; what it writes goes there
    assert run(command) == 0, command


def test_the_convert_commands_run_in_order(stand_ins, tmp_path, monkeypatch):
    """The conversions are a chain (SD file -> diffusers folder -> ours -> SD file): run from the SD file alone."""
    commands = [c for c in use_commands() if c.split()[1] == "convert"]
    first = shlex.split(commands[0], comments=True)[2]
    (tmp_path / first).write_bytes((stand_ins / "sd15.safetensors").read_bytes())
    monkeypatch.chdir(tmp_path)
    for command in commands:
        assert run(command) == 0, command
