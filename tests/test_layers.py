"""The modules of detllm/ import only downward through the layers.

formats (the modules directly under detllm/) < diff < report < capture < cli. The
package facade ``detllm/__init__.py`` may import anything, capture only lazily (inside
a function or under TYPE_CHECKING), so that ``import detllm`` stays light. Imports
under ``if TYPE_CHECKING:`` count like any other for the layers below the facade: a
type named from a higher layer is still a dependency on it.

A module whose name starts with ``_`` is private to the package that holds it: only modules
of that package (and of its subpackages) import it. ``detllm.diff._model`` is imported by
``detllm.diff._engine`` but never by ``detllm.report._text``, which reads
``detllm.diff.model``, the public module of the records, instead. The private modules
directly under ``detllm/`` (``_escape``, ``_io``, ``_numbers``, ``_text_util`` ...) belong
to the formats package, which is ``detllm`` itself: every layer may import them, as every
layer sits inside it. The test and the facade follow the same rule.
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


def is_module(module: str) -> bool:
    """Whether a dotted name inside detllm is a module or a package (not a name defined in one)."""
    where = PACKAGE.parent.joinpath(*module.split("."))
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def imported(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, module, at_top)`` for every detllm module ``path`` imports.

    ``at_top`` is False for an import inside a function or under ``if TYPE_CHECKING``.
    ``from . import x`` names the package itself and, when ``x`` is a module or a subpackage,
    ``x`` too.
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
                                 if is_module(f"{target}.{a.name}"))  # fmt: skip
            visit(child, at_top)

    visit(tree, True)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def owner(module: str) -> str | None:
    """The package a private module belongs to (``detllm.diff._model`` -> ``detllm.diff``);
    None for a public module."""
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def private_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every private module ``path`` imports, by any spelling:
    ``from ..diff._model import X``, ``import detllm.diff._model``, ``from ..diff import _model``."""
    return [(line, module) for line, module, _ in imported(path) if owner(module) is not None]


def test_the_walk_sees_private_modules() -> None:
    # The test below proves nothing if it finds no private module at all.
    found = private_modules(PACKAGE / "diff" / "_engine.py")
    assert any(owner(module) == "detllm.diff" for _, module in found), found


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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_module_imports_a_private_module_of_another_package(path: Path) -> None:
    name = module_name(path)
    foreign = []
    for line, module in private_modules(path):
        home = owner(module)
        assert home is not None
        if name != home and not name.startswith(home + "."):
            foreign.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} is private to {home}")
    assert not foreign, "\n".join(foreign)
