"""The version of gdds (a leaf module, so every layer can name it without importing the package):
the release number, and the fingerprint of the code itself (:func:`code_fingerprint`), which keys
saved results that the code computes (``gdds compare``'s evaluations)."""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def source_fingerprint(source: str) -> str:
    """SHA-256 of the syntax tree of ``source`` without its docstrings (``ast.dump`` has no line
    numbers and no comments): an edit of comments, docstrings or layout keeps it, any change of code
    changes it."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, _DOCUMENTED) and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """The fingerprint of every module of the installed ``gdds`` package (its path and
    :func:`source_fingerprint`), 16 hex digits; computed once per process."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root).as_posix()}\0{source_fingerprint(path.read_text())}\n".encode())
    return digest.hexdigest()[:16]
