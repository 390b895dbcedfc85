"""The layers of ARCHITECTURE.md, enforced: what each layer may import (checked twice: the
modules a fresh interpreter loads, and every import statement in the source, functions
included), no import cycle, no file I/O in the math layer outside its cache module, no
module over 400 lines; and ARCHITECTURE.md names every module (under its layer) and every registry."""
import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gdds.registry import Registry

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "gdds"
MAX_LINES = 400

# Layer of each module, by longest matching prefix.
LAYERS = {
    "gdds.files": "leaf", "gdds.registry": "leaf", "gdds.devices": "leaf", "gdds.version": "leaf",
    "gdds.categorical": "math",
    "gdds.schedules": "math", "gdds.kernels": "math", "gdds.operators": "math", "gdds.power_sums": "math",
    "gdds.token_powers": "math",
    "gdds.process": "math",
    "gdds.posterior": "math",
    "gdds.sampling": "inference", "gdds.likelihood": "inference", "gdds.nll_gap": "inference",
    "gdds.prior_term": "inference", "gdds.continuous_bound": "inference", "gdds.bound_summary": "inference",
    "gdds.baseline": "inference", "gdds.block_sampling": "inference", "gdds.unmasking": "inference",
    "gdds.corrector": "inference", "gdds.step_grids": "inference", "gdds.samplers": "inference",
    "gdds": "api",
    "gdds.models": "models", "gdds.data": "data", "gdds.objectives": "objectives", "gdds.minilm": "composition",
    "gdds.engine": "engine", "gdds.cli": "cli", "gdds.__main__": "cli",
}
# What each layer may import from gdds (besides itself).
ALLOWED = {
    "leaf": set(),
    "math": {"leaf"},
    "inference": {"leaf", "math"},
    "api": {"leaf", "math", "inference"},
    "models": {"leaf", "math:gdds.categorical"},  # of the math, the categorical draw only: no kernels, no processes
    "data": {"leaf"},
    "objectives": {"leaf", "math", "inference", "models"},
    "composition": {"leaf", "math", "data"},
    "engine": {"leaf", "math", "inference", "api", "models", "data", "objectives", "composition"},
    "cli": {"leaf", "math", "inference", "api", "models", "data", "objectives", "composition", "engine"},
}
# The one import across the layers' order: ``gdds.load`` imports the engine's model API inside the
# function, on call, so ``import gdds`` loads no application layer (checked below on a fresh interpreter).
LAZY = {("gdds", "gdds.engine.api")}
HEAVY = ("tokenizers", "safetensors", "transformers", "datasets", "yaml", "matplotlib")  # (torch itself loads tqdm)


def layer(module: str) -> str:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every import in the file, relative
    imports resolved; ``from X import Y`` counts as ``X.Y`` when that is a module."""
    known = modules()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if full in known else base, node.lineno, id(node) in top))
    return out


def allowed(importer: str, imported: str) -> bool:
    source, target = layer(importer), layer(imported)
    if source == target:
        return True
    rules = ALLOWED[source]
    return target in rules or f"{target}:{imported}" in rules


def test_every_import_statement_respects_the_layers():
    wrong = []
    for name, path in modules().items():
        for imported, line, top in imports(path):
            lazy = (name, imported) in LAZY and not top
            if imported.startswith("gdds") and not allowed(name, imported) and not lazy:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {layer(name)} module {name} imports "
                             f"{layer(imported)} module {imported}")
            if layer(name) in ("leaf", "math", "inference", "api", "models") and imported.split(".")[0] in HEAVY:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {name} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    """Tarjan's strongly connected components over every import statement (function-level
    imports included): each component must be a single module."""
    graph = {name: sorted({m for m, _, _ in imports(path) if m in modules() and m != name})
             for name, path in modules().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert len(graph) > 50 and not cycles, cycles


def test_the_math_layer_touches_files_only_through_its_cache_module():
    forbidden = {"open", "platformdirs", "environ", "read_text", "write_text", "read_bytes", "write_bytes",
                 "mkdir", "unlink", "write_atomically"}
    found = []
    for name, path in modules().items():
        if layer(name) not in ("math", "inference", "api"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            word = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if word in forbidden and not (name == "gdds.kernels.knn" and word == "write_atomically"):
                found.append(f"{name}:{node.lineno}: {word}")
    assert not found, found


def loaded_by(statement: str, bare: bool) -> list[str]:
    """The gdds modules and heavy libraries a fresh interpreter holds after ``statement``;
    ``bare``: the package ``gdds`` is an empty namespace, so its ``__init__`` (the public API)
    does not run and only what the imported module itself needs is loaded."""
    prelude = (f"import sys, types; pkg = types.ModuleType('gdds'); pkg.__path__ = [{str(PACKAGE)!r}]; "
               "sys.modules['gdds'] = pkg; ") if bare else "import sys; "
    code = (f"{prelude}{statement}; import json; print(json.dumps(sorted(m for m in sys.modules if "
            f"m.startswith('gdds') or m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def test_import_gdds_schedules_loads_no_application_layer():
    """``import gdds.schedules`` (which runs the public API of ``gdds/__init__``) and
    ``import gdds.process`` load the library only."""
    for statement in ("import gdds.schedules", "import gdds.process"):
        loaded = loaded_by(statement, bare=False)
        assert "gdds.kernels.base" in loaded and "gdds.likelihood" in loaded
        bad = [m for m in loaded if m.split(".")[0] in HEAVY or layer(m) not in ("leaf", "math", "inference", "api")]
        assert not bad, (statement, bad)


@pytest.mark.parametrize("module,layers", [
    ("gdds.schedules", {"leaf", "math"}),
    ("gdds.process", {"leaf", "math"}),
    ("gdds.likelihood", {"leaf", "math", "inference"}),
    ("gdds.nll_gap", {"leaf", "math", "inference"}),
    ("gdds.models", {"models", "leaf", "math:gdds.categorical"}),
    ("gdds.data", {"data", "leaf"}),
    ("gdds.objectives", {"objectives", "models", "leaf", "math", "inference"}),
    ("gdds.minilm", {"composition", "data", "leaf", "math"}),
])
def test_each_layer_loads_only_what_it_may(module, layers):
    """One rule per layer, on a fresh interpreter with a bare ``gdds`` package."""
    everything = loaded_by(f"import {module}", bare=True)
    loaded = [m for m in everything if m.startswith("gdds.")]
    assert module in loaded
    bad = [m for m in loaded if layer(m) not in layers and f"{layer(m)}:{m}" not in layers]
    assert not bad, bad
    if layer(module) in ("math", "inference", "models"):
        heavy = [m for m in everything if m.split(".")[0] in HEAVY]
        assert not heavy, heavy


def test_no_module_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_benchmark_script_over_400_lines():
    scripts = sorted((SRC.parent / "benchmarks").glob("*.py"))
    long = {path.name: n for path in scripts if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert len(scripts) > 10 and not long, long


def test_the_layer_table_covers_every_module():
    assert all(layer(name) in ALLOWED for name in modules())
    assert layer("gdds.kernels.knn") == "math" and layer("gdds.engine.train") == "engine" and layer("gdds") == "api"


ARCHITECTURE = SRC.parent / "ARCHITECTURE.md"
ROW = re.compile(r"^\| `([^`|]+)` \| ([^|]*\S[^|]*) \|$")


def section(title: str) -> str:
    """The text of ARCHITECTURE.md's ``## title`` section, up to the next ``## `` heading."""
    text = ARCHITECTURE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def documented_modules() -> dict[str, str]:
    """``path under src/gdds -> layer`` of each row of the module tables ("Modules": one table
    per ``### layer``); a row is a path in backquotes and a non-empty gloss."""
    rows, current = {}, None
    for line in section("Modules").splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
        elif (row := ROW.match(line)) and current is not None:
            assert row.group(1) not in rows, f"{row.group(1)} has two lines"
            rows[row.group(1)] = current
    return rows


def module_path(path: Path) -> str:
    """The path ARCHITECTURE.md names a module by: relative to ``src/gdds``, a package by its folder."""
    relative = path.relative_to(PACKAGE)
    if path.name == "__init__.py" and relative.parent != Path():
        return f"{relative.parent.as_posix()}/"
    return relative.as_posix()


def test_architecture_md_names_every_module_once_under_its_layer():
    """Every module of src/gdds (a package by its folder) has a line under its layer's heading, and
    every line names a module that exists: the plan of the house cannot drift from the house."""
    rows = documented_modules()
    actual = {module_path(path): layer(module_name(path)) for path in PACKAGE.rglob("*.py")}
    missing = sorted(set(actual) - set(rows))
    stale = sorted(set(rows) - set(actual))
    misplaced = sorted(f"{p}: under {rows[p]}, in layer {actual[p]}" for p in set(rows) & set(actual)
                       if rows[p] != actual[p])
    assert not missing and not stale and not misplaced, (
        f"modules without a line in ARCHITECTURE.md: {missing}; lines naming no module: {stale}; "
        f"lines under another layer: {misplaced}")


def registries() -> dict[str, object]:
    """Every ``NAME = Registry(...)`` of src/gdds at module level, as ``module.NAME -> the object``."""
    found = {}
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            if targets and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "Registry":
                for target in targets:
                    found[f"{name}.{target.id}"] = getattr(importlib.import_module(name), target.id)
    return found


def test_every_registry_is_in_the_registry_table():
    """The registry table ("One owner per concept") lists every ``Registry`` of src/gdds by a name
    that imports to that very object, and lists nothing else."""
    named = {}
    for line in section("One owner per concept").splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 3 and (match := re.fullmatch(r" `(gdds(?:\.\w+)+)` ", cells[2])):
            module, _, attribute = match.group(1).rpartition(".")
            named[match.group(1)] = getattr(importlib.import_module(module), attribute)
    found = registries()
    assert len(found) >= 12 and all(isinstance(entry, Registry) for entry in named.values()), named
    missing = sorted(name for name, entry in found.items() if not any(entry is listed for listed in named.values()))
    assert not missing, f"registries missing from ARCHITECTURE.md's registry table: {missing}"
    assert len({id(entry) for entry in named.values()}) == len(named) == len(found), named
