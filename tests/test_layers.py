"""The package reads one way: config loading -> pieces -> the wiring of a config (wiring.py) -> jobs -> the
command line, which nothing imports. Checked on the source: every import of a score_sde module, top-level or
inside a function, must point to the same layer or one below, and the imports must form no cycle."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "score_sde"
CONFIG, PIECE, WIRING, JOB, COMMAND_LINE = range(5)
LAYERS = {
    "score_sde.config": CONFIG,
    "score_sde.wiring": WIRING,
    "score_sde.train": JOB,
    "score_sde.evaluate": JOB,
    "score_sde.solve": JOB,
    "score_sde.quickstart": JOB,
    "score_sde.convert": JOB,
    "score_sde.evaluation.commands": JOB,
    "score_sde.cli": COMMAND_LINE,
    "score_sde.__main__": COMMAND_LINE,
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def layer(module: str) -> int:
    return LAYERS.get(module, PIECE)


def imports(module: str) -> set[str]:
    """The score_sde modules `module` imports anywhere in its source (a `from package import name` counts
    as importing package.name when that is a module)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
    return {m for m in found if m in MODULES and m != module}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(m for m in imports(module) if layer(m) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports the higher layers' {upward}"


def test_no_import_cycles():
    graph = {m: imports(m) - {p for p in MODULES if m.startswith(p + ".")} for m in MODULES}  # a parent package
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        if state.get(m) == "open":
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(m) :] + [m])}")
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])
