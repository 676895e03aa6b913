"""The daemon's layers, as the folder tree shows them: every import points down the order of
daemon/__init__.py (or stays in its own layer), and no two modules import each other, not
even for type checking. Read from the source, without importing it."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

DAEMON = REPO / "daemon"
# Top to bottom. A layer may import its own modules and those of any layer after it; the
# pairs in SIBLINGS may not import each other.
ORDER = ["app", "rpc", "web", "control", "services", "core", "browser", "cdp", "store",
         "system", "base"]
RANK = {"app": 0, "rpc": 1, "web": 1, "control": 2, "services": 2, "core": 3, "browser": 4,
        "cdp": 5, "store": 5, "system": 6, "base": 7}
SIBLINGS = {frozenset({"control", "services"}), frozenset({"cdp", "store"}),
            frozenset({"rpc", "web"})}


def module_name(path: Path) -> str:
    parts = path.relative_to(DAEMON).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "__init__"


def layer_of(module: str) -> str:
    head = module.split(".")[0]
    return head if head in RANK else "app"


def imports_of(path: Path) -> set[str]:
    """The daemon modules `path` imports (relative imports, resolved; and absolute
    browserd.daemon ones)."""
    module = module_name(path)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    if module == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            target = [*base, *(node.module.split(".") if node.module else [])]
        elif node.module and node.module.startswith("browserd.daemon"):
            target = node.module.split(".")[2:]
        else:
            continue
        names = [alias.name for alias in node.names]
        for name in names:  # `from .store import storage` imports a module
            candidate = DAEMON.joinpath(*target, name + ".py")
            if candidate.exists():
                found.add(".".join([*target, name]))
                break
        else:
            if target:
                found.add(".".join(target))
    return {m for m in found if m and m != module}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in DAEMON.rglob("*.py")
            if "__pycache__" not in p.parts}


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, targets in graph().items():
        here = layer_of(module)
        for target in targets:
            there = layer_of(target)
            if here == there:
                continue
            if RANK[there] < RANK[here] or frozenset({here, there}) in SIBLINGS or (
                    RANK[there] == RANK[here]):
                wrong.append(f"{module} ({here}) imports {target} ({there})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    edges = graph()
    cycles = []
    for module, targets in edges.items():
        for target in targets:
            if module in edges.get(target, set()) and module < target:
                cycles.append(f"{module} <-> {target}")
    assert not cycles, "\n".join(sorted(cycles))


def test_every_layer_says_what_it_does() -> None:
    for layer in ORDER[1:]:
        init = DAEMON / layer / "__init__.py"
        assert init.exists(), layer
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc, f"{layer}/__init__.py must say what it may import"
