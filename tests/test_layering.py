"""The import rules of ARCHITECTURE.md, read off the source (no module is imported):

1. only ``nanoldm/cli/`` (and ``nanoldm/__main__.py``, the ``python -m nanoldm`` entry) imports ``nanoldm.cli``,
   and only ``cli/`` parses arguments (``argparse``);
2. the models and maths (``layers``, ``unet``, ``autoencoder``, ``text``, ``samplers``, ``diffusion``) import no
   files, trainers, pipelines or command line (``checkpoint``, ``training``, ``pipelines``, ``cli``), and the
   pipelines and the evaluation no trainers (``training`` may use them for previews and ``train all``'s eval);
3. a function-local import of a ``nanoldm`` module says why it is not at the top (a comment on its line or the
   line above): the only good reason is an import cost the caller should not pay;
4. no file in ``nanoldm/`` is over 350 lines;
5. the server (``nanoldm/server/``) is a face like ``cli/``: only ``cli/`` imports it, and only the two of them
   import the web stack (``fastapi``, ``starlette``, ``uvicorn``).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nanoldm"
MODELS = ("layers", "unet", "autoencoder", "text", "samplers", "diffusion")
NOT_FOR_MODELS = ("checkpoint", "training", "pipelines", "cli")
BELOW_TRAINING = ("pipelines", "evaluation")
MAX_LINES = 350
FACES = ("cli", "server")  # the faces of the library; nothing below them knows them
WEB = ("fastapi", "starlette", "uvicorn")


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _part(path: Path) -> str:
    """The top-level part of the package a file belongs to: ``layers``, ``cli``, ``config`` (a module), ..."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(tree: ast.AST, path: Path):
    """(imported module, node) for every import in the file, relative imports resolved."""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            yield module, node
            for alias in node.names:  # ``from nanoldm import cli`` names a module too
                yield f"{module}.{alias.name}", node


def _nanoldm_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "nanoldm" and len(parts) > 1 else None


def _violations(path: Path) -> list[str]:
    tree, part = ast.parse(path.read_text()), _part(path)
    found = {}  # one entry per import statement and rule
    for module, node in _imports(tree, path):
        target = _nanoldm_part(module)
        where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {module}"
        if target == "cli" and part not in ("cli", "__main__"):
            found.setdefault((node.lineno, "cli"), f"{where} (only cli/ may)")
        if module == "argparse" and part != "cli":
            found.setdefault((node.lineno, "argparse"), f"{where} (only cli/ parses arguments)")
        if part in MODELS and target in NOT_FOR_MODELS:
            found.setdefault((node.lineno, "models"), f"{where} ({part}/ is models and maths)")
        if part in BELOW_TRAINING and target == "training":
            found.setdefault((node.lineno, "training"), f"{where} (training/ uses {part}/, not the reverse)")
        if (target == "server" or module.split(".")[0] in WEB) and part not in FACES:
            found.setdefault((node.lineno, "server"), f"{where} (the server is a face: only cli/ starts it)")
    return list(found.values())


def _local_imports_without_reason(path: Path) -> list[str]:
    """Function-local imports of nanoldm modules with no comment on their line or above their group (the run of
    import statements they stand in)."""
    lines = path.read_text().splitlines()
    tree, found = ast.parse("\n".join(lines)), []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        imports = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
        covered = {i for n in imports for i in range(n.lineno, n.end_lineno + 1)}  # 1-based line numbers
        for node in imports:
            if not any(_nanoldm_part(m) for m, _ in _imports(node, path)):
                continue
            first = node.lineno
            while first - 1 in covered:
                first -= 1
            if "#" not in lines[node.lineno - 1] and not lines[first - 2].strip().startswith("#"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_the_walk_sees_the_package():
    files = _sources()
    assert len(files) > 50 and {_part(p) for p in files} >= set(MODELS) | set(NOT_FOR_MODELS)


@pytest.mark.parametrize("rule", ["imports", "local imports", "file size"])
def test_layering_rules(rule):
    if rule == "imports":
        problems = [v for path in _sources() for v in _violations(path)]
    elif rule == "local imports":
        problems = [v for path in _sources() for v in _local_imports_without_reason(path)]
    else:
        problems = [f"{p.relative_to(PACKAGE.parent)}: {n} lines" for p in _sources()
                    if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not problems, "\n".join(problems)


def test_the_rules_catch_what_they_forbid(tmp_path):
    """The checker itself: a model file importing a pipeline, a trainer importing cli/argparse, and an
    unexplained local import are each reported; a commented local import is not."""
    fake = tmp_path / "nanoldm"
    (fake / "unet").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "unet" / "bad.py").write_text("from nanoldm.pipelines import sampling\n")
    (fake / "pipelines").mkdir()
    (fake / "pipelines" / "bad.py").write_text("from nanoldm.training.ldm import LDMTask\n")
    (fake / "training" / "bad.py").write_text(
        "import argparse\nfrom nanoldm.cli import train\n\ndef f():\n    from nanoldm.data import shapes\n"
        "    x = 1\n    # heavy: only the export needs it\n    from nanoldm.data import export\n"
        "    from nanoldm.data import (\n        folder)\n")
    globals()["PACKAGE"], saved = fake, PACKAGE
    try:
        assert len(_violations(fake / "unet" / "bad.py")) == 1
        assert len(_violations(fake / "pipelines" / "bad.py")) == 1
        assert len(_violations(fake / "training" / "bad.py")) == 2
        assert [v.split(": ")[1] for v in _local_imports_without_reason(fake / "training" / "bad.py")] == [
            "from nanoldm.data import shapes"]
    finally:
        globals()["PACKAGE"] = saved
