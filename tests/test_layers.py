"""The layers of DESIGN.md, read from the package's imports: none points upward.

1 primitives, 2 runs, 3 effects, 4 integrations, 5 applications, 6 the testing kit.
Every module of ``src/cancelkit`` is placed in a layer here (a new module must be
placed too), and every ``import`` in it, at module level, inside a function or
under ``TYPE_CHECKING``, may only name its own layer or a lower one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "cancelkit"

LAYERS: dict[str, int] = {
    # 1. primitives
    "cancelkit._exceptions": 1,
    "cancelkit._validate": 1,
    "cancelkit._backends": 1,
    "cancelkit._loop_caller": 1,
    "cancelkit._completion": 1,
    "cancelkit._timers": 1,
    "cancelkit._token": 1,
    "cancelkit._receipt": 1,
    "cancelkit._threads": 1,
    "cancelkit._gather": 1,
    "cancelkit._race": 1,
    "cancelkit._as_completed": 1,
    "cancelkit._amap": 1,
    "cancelkit._module": 1,
    "cancelkit._extras": 1,
    "cancelkit._lifetime": 1,
    # 2. runs
    "cancelkit._tasks": 2,
    "cancelkit._run": 2,
    "cancelkit._runs": 2,
    "cancelkit._ids": 2,
    "cancelkit._outcome": 2,
    "cancelkit._runs_backend": 2,
    "cancelkit._background": 2,
    "cancelkit._streams": 2,
    "cancelkit._adopt": 1,
    "cancelkit._stoppable": 1,
    "cancelkit._sync_streams": 2,
    "cancelkit._sync_run": 2,
    # 3. effects; the front door re-exports layers 1 to 3
    "cancelkit._budget": 3,
    "cancelkit._transaction": 3,
    "cancelkit.stores": 3,
    "cancelkit": 3,
    # 4. integrations
    "cancelkit.llm": 4,
    "cancelkit.web": 4,
    "cancelkit.distributed": 4,
    "cancelkit.integrations": 4,
    # 5. applications
    "cancelkit.agent": 5,
    "cancelkit.demo": 5,
    "cancelkit.__main__": 5,
    # 6. the testing kit
    "cancelkit.testing": 6,
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    """The layer of a module: its own entry, else its nearest package's."""
    parts = name.split(".")
    while parts:
        found = LAYERS.get(".".join(parts))
        if found is not None:
            return found
        parts.pop()
    return None


def imported(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in the file, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from . import x` and `from .pkg import mod` may name submodules too
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, mod) for line, mod in found if mod.split(".")[0] == "cancelkit"]


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    name = module_name(path)
    own = layer_of(name)
    assert own is not None, f"{name} is in no layer: place it in LAYERS"
    # A private module of the package itself would fall back to the front door's layer.
    parts = name.split(".")
    if len(parts) == 2 and parts[1].startswith("_"):
        assert name in LAYERS, f"{name} is in no layer of its own: place it in LAYERS"
    upward = [
        f"line {line}: {target} (layer {layer_of(target)})"
        for line, target in imported(path)
        if (layer_of(target) or 0) > own
    ]
    assert not upward, f"{module_name(path)} (layer {own}) imports upward: {upward}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The test above can fail: a layer-4 module that imports the agent, at module
    # level or inside a function, is caught.
    root = tmp_path / "cancelkit"
    probe = root / "web" / "_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from ..agent import Agent\n\ndef f():\n    import cancelkit.demo\n")
    found = imported(probe, root)
    assert (1, "cancelkit.agent") in found
    assert (4, "cancelkit.demo") in found
    own = layer_of(module_name(probe, root))
    assert own == 4
    assert [t for _, t in found if (layer_of(t) or 0) > own]
