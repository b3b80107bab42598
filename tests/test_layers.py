"""The package's import structure: no layer imports a layer above it.

Layers, bottom up: shared helpers (errors, io, runtime, checkpoint) < data, models < methods
< config < train < evaluate < finetune < the command lines. Every import is counted,
including the ones inside functions (those are how a hidden cycle usually starts).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "selfpatch"
BASE = {"errors", "io", "runtime", "checkpoint"}
# What each layer may import besides itself and BASE.
ALLOWED = {
    "base": set(),
    "data": set(),
    "models": set(),
    "methods": {"models"},
    "config": set(),
    "train": {"data", "models", "methods", "config"},
    "evaluate": {"data", "models", "config"},
    "finetune": {"data", "models", "evaluate"},
    "cli": {"data", "models", "methods", "config", "train", "evaluate", "finetune", "cli"},
}


def layer_of(module: str) -> str:
    """``selfpatch.a.b`` -> its layer name."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in ("__init__", "__main__", "cli") or parts[-1] == "cli":
        return "cli"  # the package entry points and each command line sit on top
    return "base" if parts[0] in BASE else parts[0]


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "selfpatch":
                found += [f"selfpatch.{a.name}" for a in node.names]
            elif node.module.startswith("selfpatch."):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("selfpatch.")]
    return found


def test_no_layer_imports_a_layer_above_it():
    assert (PACKAGE / "train" / "factory.py").is_file()
    violations, checked = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "selfpatch." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = layer_of(module)
        for target in imports(path):
            checked += 1
            other = layer_of(target)
            if other not in (own, "base") and other not in ALLOWED[own]:
                violations.append(f"{module} ({own}) imports {target} ({other})")
    assert checked > 100
    assert not violations, "\n".join(violations)


def test_the_checker_sees_a_violation(tmp_path):
    """The same rules flag an upward import, also one inside a function."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from selfpatch.train.trainer import pretrain\n")
    assert imports(bad) == ["selfpatch.train.trainer"]
    assert layer_of("selfpatch.models.loading") == "models"
    assert "train" not in ALLOWED["models"] and layer_of("selfpatch.data.cli") == "cli"
