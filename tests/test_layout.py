"""The layout holds (docs/design.md §2): folders that show the architecture, imports that point one way.

Read from the source with ``ast`` (tests/import_graph.py); nothing is imported.
"""
from pathlib import Path

import pytest

from .import_graph import cycles, external_imports, folder, imports_of, modules

ROOT = Path(__file__).resolve().parents[1]
KNOWN = modules(ROOT)
GRAPH = {name: imports_of(name, path, KNOWN) for name, path in KNOWN.items()}
MAX_MODULE_LINES = 400
MAX_FOLDER_MODULES = 12
FRAMEWORKS = {"tensorflow", "keras", "torch"}
RUNNER_ONLY = {"runners", "hydra", "omegaconf", "mlflow"}


def _in(package: str, name: str) -> bool:
    return name == package or name.startswith(package + ".")


def _tops(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_no_module_over_the_line_budget():
    sizes = {name: len(path.read_text().splitlines()) for name, path in KNOWN.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_folder_over_the_module_budget():
    counts = {}
    for name, path in KNOWN.items():
        if path.name != "__init__.py" or path.read_text().strip():
            counts[folder(name, KNOWN)] = counts.get(folder(name, KNOWN), 0) + 1
    assert {name: n for name, n in counts.items() if n > MAX_FOLDER_MODULES} == {}


@pytest.mark.parametrize("name", sorted(n for n in KNOWN if _in("ptycho", n)))
def test_the_core_never_imports_the_runner_or_its_services(name):
    assert _tops(external_imports(KNOWN[name])) & RUNNER_ONLY == set()


@pytest.mark.parametrize("name", sorted(n for n in KNOWN if _in("ptycho", n)
                                        and not _in("ptycho.tf", n) and not _in("ptycho.torch", n)))
def test_the_neutral_core_imports_no_framework_at_import(name):
    at_import = external_imports(KNOWN[name], module_level_only=True)
    assert _tops(at_import) & FRAMEWORKS == set()
    assert {m for m in at_import if _in("ptycho.tf", m) or _in("ptycho.torch", m)} == set()


@pytest.mark.parametrize("twin, other", [("ptycho.tf", "ptycho.torch"), ("ptycho.torch", "ptycho.tf")])
def test_the_backend_twins_never_import_each_other(twin, other):
    assert {n: sorted(t for t in GRAPH[n] if _in(other, t)) for n in GRAPH
            if _in(twin, n) and any(_in(other, t) for t in GRAPH[n])} == {}


def test_the_twins_share_their_module_names():
    names = {pkg: {p.stem for p in (ROOT / pkg.replace(".", "/")).glob("*.py")} for pkg in ("ptycho.tf", "ptycho.torch")}
    shared = {"__init__", "inference", "model", "ops", "reassembly", "training", "workflow"}
    assert shared <= names["ptycho.tf"] and shared <= names["ptycho.torch"]


def test_the_graph_tool_sees_a_cycle_it_is_shown():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
