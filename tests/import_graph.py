"""The import graph of ptycho/ and runners/: folders, module sizes, cycles, and a Mermaid drawing.

    python tests/import_graph.py [--root .] [--out graph.md]

Reads the source with ``ast`` (nothing is imported). Prints, per folder, the number of modules and
the longest module; every import cycle between modules (strongly connected components); and a
Mermaid flowchart of the folder-level graph (an edge A --> B: a module of A imports one of B).
tests/test_layout.py holds the layout to these numbers.
"""
from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

PACKAGES = ("ptycho", "runners")


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` imports (any depth: inside functions too)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def external_imports(path: Path, module_level_only: bool = False) -> set[str]:
    """The modules ``path`` imports by absolute name (``from a.b import c`` -> ``a.b``), anywhere in it,
    or only those imported at import time (outside functions and classes) with ``module_level_only``."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def folder(name: str, known: dict[str, Path]) -> str:
    return name if known[name].name == "__init__.py" else name.rpartition(".")[0]


def report(root: Path) -> str:
    known = modules(root)
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    lines = ["## Folders", "", "| folder | modules (a package's non-empty __init__ counts) | longest module (lines) |", "|---|---|---|"]
    by_folder = defaultdict(list)
    for name, path in known.items():
        size = len(path.read_text().splitlines())
        if path.name != "__init__.py" or size:
            by_folder[folder(name, known)].append((size, name))
    for name in sorted(by_folder):
        entries = sorted(by_folder[name])
        lines.append(f"| {name}/ | {len(entries)} | {entries[-1][1]} ({entries[-1][0]}) |")
    over = sorted((n, m) for entries in by_folder.values() for n, m in entries if n > 400)
    lines += ["", f"Modules over 400 lines: {', '.join(f'{m} ({n})' for n, m in over) or 'none'}"]
    found = cycles(graph)
    lines += ["", "## Import cycles", ""]
    lines += [" <-> ".join(c) for c in found] or ["none"]
    edges = defaultdict(int)
    for name, targets in graph.items():
        for target in targets:
            a, b = folder(name, known), folder(target, known)
            if a != b:
                edges[(a, b)] += 1
    lines += ["", "## Folder graph (edge label: module-level imports)", "", "```mermaid", "flowchart LR"]
    lines += [f"    {a.replace('.', '_')}[{a}] -->|{n}| {b.replace('.', '_')}[{b}]"
              for (a, b), n in sorted(edges.items())]
    lines += ["```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = report(args.root)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
