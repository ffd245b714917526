"""The code map's import rule (docs/architecture.md): each layer imports only the layers below
it, so the library never depends on a command, and training never on inference or evaluation
commands. Read from the source with `ast`, so an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"

# The layers, lowest first; a name is a top-level module or package of lm1b.
LAYERS = [
    {"config", "atomic_files", "reference"},
    {"data", "vocab", "tokenizer"},  # the text side: files, vocabulary, tokenizers, batches
    {"models"},
    {"evaluation"},  # full-softmax scoring of a stream: validation and lm1b.evaluate share it
    {"training"},
    {"inference"},  # loading a trained checkpoint for use
    {"benchmark"},
    {"commands"},  # the `python -m lm1b.<command>` entry points
]
COMMANDS = {
    path.stem for path in (SOURCE / "lm1b" / "commands").glob("*.py") if path.stem != "__init__"
} - {"run_directory"}
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The top-level part of lm1b that `module` (dotted, starting with lm1b) lies in."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> list[tuple[str, str]]:
    """(importing module's file, imported lm1b module) for every lm1b import under src/."""
    found = []
    for path in sorted((SOURCE / "lm1b").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lm1b"):
                found.append((str(path.relative_to(SOURCE)), node.module))
            elif isinstance(node, ast.Import):
                found += [(str(path.relative_to(SOURCE)), a.name) for a in node.names]
    return [(source, target) for source, target in found if target.startswith("lm1b.")]


def test_every_part_of_the_package_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in (SOURCE / "lm1b").iterdir()}
    parts -= {"__init__", "__pycache__"} | COMMANDS
    assert parts == set(LAYER_OF)


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for source, target in _imports():
        source_part = _part(".".join(Path(source).with_suffix("").parts))
        target_part = _part(target)
        if source_part in COMMANDS:  # `python -m lm1b.<name>`: a shim over the command
            if target != f"lm1b.commands.{source_part}":
                wrong.append(f"{source} imports {target}")
            continue
        if source_part == target_part:
            continue
        below = LAYER_OF[target_part] < LAYER_OF[source_part]
        same_text_layer = LAYER_OF[target_part] == LAYER_OF[source_part] == 1
        if not (below or (same_text_layer and "models" not in (source_part, target_part))):
            wrong.append(f"{source} imports {target}")
    assert wrong == []


def test_the_shims_cover_every_command():
    for name in COMMANDS:
        shim = (SOURCE / "lm1b" / f"{name}.py").read_text()
        assert f"from lm1b.commands.{name} import main" in shim
