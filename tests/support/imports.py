"""What a module imports at run time, read from its source (annotation-only imports under
``if TYPE_CHECKING:`` left out: they are never loaded)."""

from __future__ import annotations

import ast
from pathlib import Path


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            hidden |= {id(n) for child in node.body for n in ast.walk(child)}
    return [n for n in ast.walk(tree) if id(n) not in hidden]


def imported(path: Path, *, relative: bool = True, members: bool = False) -> list[str]:
    """Module names ``path`` imports at run time (``members``: also ``module.name`` of each
    ``from module import name``; ``relative``: include relative imports)."""
    names: list[str] = []
    for node in runtime_nodes(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and (relative or not node.level):
            names.append(node.module)
            if members:
                names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names
