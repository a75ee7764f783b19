"""The shape of the code, checked from its source with `ast` (nothing is imported).

The import graph: one node per module under ``src/llm_unlearn`` (a package is its ``__init__.py``). An
edge ``a -> b`` for every ``import`` / ``from ... import`` statement in ``a`` that names ``b``, at module
level or inside a function alike (a function-level import still ties the two modules together; it only
moves the moment). Resolution: relative imports against ``a``'s package; ``from pkg import name`` is an
edge to the submodule ``pkg.name`` when that module exists, else to ``pkg`` itself; ``import a.b.c`` is
an edge to the longest prefix that is a module. Imports outside ``llm_unlearn`` are ignored.

The rule for packages, kept simple: only explicit imports count. Python also runs a package's
``__init__`` before any of its submodules, but that implicit step is no edge: an ``__init__`` that
imports (re-exports) its own submodules is fine. A submodule that explicitly imports a name from its
parent package is an edge like any other, so it makes a cycle when that ``__init__`` imports the
submodule back: exactly the case where the order of initialization matters.

Checked here:

* no cycle (the cycle found is printed);
* the layering (:data:`LAYERS`): a module may import only from its own layer or lower ones;
* no module over :data:`MAX_MODULE_LINES` lines and no function over :data:`MAX_FUNCTION_LINES` lines
  (``end_lineno - lineno + 1``, decorators excluded), except :data:`LONG_ALLOWED`.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "llm_unlearn"

# Lowest first. A module belongs to the layer of its top-level part (``llm_unlearn.train.loss`` ->
# ``train``); ``llm_unlearn`` itself (its ``__init__``: the version string only) is the bottom.
# Parts on one line are peers: neither imports the other.
LAYERS: list[tuple[str, ...]] = [
    ("__init__",),  # __version__ (outputs.py, train/process.py, cli.py read it); if it becomes the lazy
    # public API (DESIGN.md), it moves to the top and the version to a module of its own
    ("errors",),
    ("io_utils",),
    ("data",),  # readers, tokenization, batching, schedule: no model, no options
    ("losses",),  # pure formulas
    ("config",),  # options, presets, validate (the method names live here as plain strings)
    ("outputs",),  # the output-directory policy
    ("adapter",),  # a PEFT adapter: attaching it, its fit and its base model
    ("modeling", "tiny"),  # loading / building models
    ("plots",),
    ("evaluation",),  # passes, metrics, benchmarks, the runner: they know nothing of training
    ("train",),  # its calibration monitor evaluates with evaluation's passes and metrics
    ("finetune",),
    ("attacks",),  # is it really forgotten? quantization, relearning (uses finetune), prompts, logit lens
    ("sweep",),  # Optuna trials of train + evaluation on a validation split
    ("demo",),
    ("api",),  # the public functions (llm_unlearn.unlearn / finetune / build_config; lazily from __init__)
    ("cli",),
    ("__main__",),
]

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# path relative to src/llm_unlearn (a module) or "path:function" -> why it may be longer
LONG_ALLOWED: dict[str, str] = {
    "config/options.py": "every option declared once, with its help text: a table, not logic",
}


# ----------------------------------------------------------------------------- the graph
def module_files() -> dict[str, Path]:
    """{dotted module name: its file} for every module of the package."""
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def _resolve(node: ast.AST, module: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that one import statement names."""

    def longest(name: str) -> str | None:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in modules:
                return candidate
        return None

    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = longest(alias.name)
            if target:
                found.add(target)
        return found
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = _package_of(module, path).split(".")
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    if origin != ROOT and not origin.startswith(ROOT + "."):
        return found
    for alias in node.names:
        sub = f"{origin}.{alias.name}"
        target = sub if sub in modules else longest(origin)
        if target:
            found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """{module: the modules it imports} (self-edges dropped)."""
    files = module_files()
    names = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _resolve(node, module, path, names)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search, sorted for a stable answer)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{module}: its part {part!r} is in no layer of LAYERS; add it")


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) where the imported module sits in a higher layer, or in a peer layer of
    another part."""
    bad = []
    for a, targets in graph.items():
        for b in targets:
            la, lb = layer_of(a), layer_of(b)
            if lb > la or (lb == la and a.split(".")[:2] != b.split(".")[:2]):
                bad.append((a, b))
    return sorted(bad)


# ----------------------------------------------------------------------------- the tests
def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "llm_unlearn.train.loss" in graph["llm_unlearn.train.trainer"]
    assert "llm_unlearn.data.records" in graph["llm_unlearn.train.prepare"]  # a function-level import
    names = {"llm_unlearn", "llm_unlearn.train", "llm_unlearn.train.step", "llm_unlearn.train.methods"}
    names.add("llm_unlearn.train.methods.npo")
    rel = ast.parse("from ..step import Step").body[0]
    assert _resolve(rel, "llm_unlearn.train.methods.npo", Path("npo.py"), names) == {"llm_unlearn.train.step"}
    sub = ast.parse("from . import npo").body[0]
    init = Path("__init__.py")
    assert _resolve(sub, "llm_unlearn.train.methods", init, names) == {"llm_unlearn.train.methods.npo"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_upward_import():
    bad = upward_imports(import_graph())
    layers = " < ".join("/".join(names) for names in LAYERS)
    assert not bad, f"imports against the layering ({layers}):\n" + "\n".join(f"  {a} -> {b}" for a, b in bad)


def _too_long() -> list[str]:
    out = []
    for path in module_files().values():
        rel = path.relative_to(SRC / ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES and rel not in LONG_ALLOWED:
            out.append(f"{rel}: {n} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and f"{rel}:{node.name}" not in LONG_ALLOWED:
                    out.append(f"{rel}:{node.name}: {length} lines (max {MAX_FUNCTION_LINES})")
    return out


def test_no_long_module_or_function():
    long = _too_long()
    assert not long, "too long (split it, or add it to LONG_ALLOWED with a reason):\n" + "\n".join(long)


def test_long_allowed_entries_exist():
    files = {p.relative_to(SRC / ROOT).as_posix() for p in module_files().values()}
    assert all(key.split(":")[0] in files for key in LONG_ALLOWED), LONG_ALLOWED
