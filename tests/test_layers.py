"""The modules of detllm/ import only downward through the layers.

formats (the modules directly under detllm/) < diff < report < capture < cli. The
package facade ``detllm/__init__.py`` may import anything, capture only lazily (inside
a function or under TYPE_CHECKING), so that ``import detllm`` stays light. Imports
under ``if TYPE_CHECKING:`` count like any other for the layers below the facade: a
type named from a higher layer is still a dependency on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "detllm"
LAYERS = ("formats", "diff", "report", "capture", "cli")


def layer(module: str) -> str:
    """The layer of a dotted module name inside detllm (``detllm.diff._rows`` -> ``diff``)."""
    parts = module.split(".")
    assert parts[0] == "detllm", module
    if module == "detllm.__main__":  # ``python -m detllm``: the command line's entry point
        return "cli"
    if len(parts) > 1 and parts[1] in LAYERS[1:]:
        return parts[1]
    return "formats"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, module, at_top)`` for every detllm module ``path`` imports.

    ``at_top`` is False for an import inside a function or under ``if TYPE_CHECKING``.
    ``from . import x`` names the package itself and, when ``x`` is a subpackage, ``x`` too.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, at_top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, False)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, at_top) for a in child.names if a.name.split(".")[0] == "detllm")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                if target.split(".")[0] == "detllm":
                    found.append((child.lineno, target, at_top))
                    found.extend((child.lineno, f"{target}.{a.name}", at_top) for a in child.names
                                 if target == "detllm" and a.name in LAYERS[1:])  # fmt: skip
            visit(child, at_top)

    visit(tree, True)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_walk_sees_imports() -> None:
    # The test below proves nothing if it finds no imports at all.
    found = imported(PACKAGE / "cli" / "diff.py")
    assert any(layer(module) == "diff" for _, module, _ in found), found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    name = module_name(path)
    facade = name == "detllm"
    rank = LAYERS.index(layer(name))
    upward = []
    for line, module, at_top in imported(path):
        if facade:
            if layer(module) in ("capture", "cli") and at_top:
                upward.append(f"{path.name}:{line}: {module} (the facade imports capture lazily)")
        elif LAYERS.index(layer(module)) > rank:
            upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer(name)} imports {module}")
    assert not upward, "\n".join(upward)
