"""The layout tells the truth about the design: no import cycles in rtcore (``TYPE_CHECKING``
and function-level imports included), and files and functions of a readable size.

The import graph is built from the source, not by importing: an edge from module A to module B
for every ``import`` or ``from ... import`` in A that names B (or a name defined in B's package
``__init__``), and one to each package ``__init__`` that importing B runs first (the root
``rtcore/__init__.py`` aside: it imports only what is light, and the rest lazily).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import rtcore

ROOT = Path(rtcore.__file__).parent
REPO = ROOT.parent

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 40
LONG_FILE = "# layout: longer than 500 lines because"
LONG_FUNCTION = "# layout: longer than 40 lines because"


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names an import statement may load (the longest existing prefix counts)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")[: None if is_package else -1]
            base = base[: len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        yield source
        yield from (f"{source}.{alias.name}" for alias in node.names)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (directly or by package init)."""
    modules = module_names(root)
    top = root.name
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py"):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                parent = target
                while parent and parent != top:  # each package __init__ on the way runs too
                    if parent != name and not name.startswith(parent + "."):
                        graph[name].add(parent)
                    parent = parent.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for succ in edges:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_rtcore_has_no_import_cycle() -> None:
    assert cycles(import_graph(ROOT)) == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_cycle_check_sees_every_kind_of_cycle(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import x\n",
            "pkg/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg import a\n",
            "pkg/c.py": "def f():\n    import pkg.d\n",
            "pkg/d.py": "from .c import f\n",
            "pkg/sub/__init__.py": "from pkg.sub.e import y\n",
            "pkg/sub/e.py": "y = 1\n",
            "pkg/g.py": "from pkg.sub import e\n",
            "pkg/h.py": "import pkg.sub.e\n",
        },
    )
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
    # a package whose __init__ imports a module that imports the package's sibling back
    (pkg / "sub" / "e.py").write_text("from pkg.g import z\n")
    assert ["pkg.g", "pkg.sub", "pkg.sub.e"] in cycles(import_graph(pkg))


def _long_files() -> list[str]:
    files = [*ROOT.rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    return sorted(
        str(path.relative_to(REPO))
        for path in files
        if len(text := path.read_text(encoding="utf-8").splitlines()) > MAX_FILE_LINES
        and not any(line.startswith(LONG_FILE) for line in text)
    )


def _comment_above(lines: list[str], first: int) -> Iterator[str]:
    """The block of comment lines right above line ``first`` (1-based), stripped."""
    index = first - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        yield lines[index].strip()
        index -= 1


def _long_functions(path: Path, base: Path = REPO) -> Iterator[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
            continue
        if any(line.startswith(LONG_FUNCTION) for line in _comment_above(lines, first)):
            continue
        yield f"{path.relative_to(base)}:{node.lineno} {node.name}"


def test_files_and_functions_are_short_or_say_why() -> None:
    assert _long_files() == []
    files = [*ROOT.rglob("*.py"), *(REPO / "bench").rglob("*.py")]
    assert [f for path in sorted(files) for f in _long_functions(path)] == []


def test_the_size_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text(f"def f():\n{body}")
    assert list(_long_functions(path, tmp_path)) == ["long.py:1 f"]
    path.write_text(f"{LONG_FUNCTION} a test,\n# said on two lines\ndef f():\n{body}")
    assert list(_long_functions(path, tmp_path)) == []
    path.write_text(f"{LONG_FUNCTION} a test\n\ndef f():\n{body}")  # not right above
    assert list(_long_functions(path, tmp_path)) == ["long.py:3 f"]
    path.write_text(f"def f():\n{body[: body.rindex('    x')]}")  # 40 lines: short enough
    assert list(_long_functions(path, tmp_path)) == []


def documented_tree(text: str) -> set[str]:
    """The paths in docs/architecture.md's tree: each line's first word, nested by indent."""
    block = text.split("```\n", 2)[1]
    stack: list[tuple[int, str]] = []
    paths = set()
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 20):  # a description's continuation
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(part for _, part in stack) + name
        paths.add(path.rstrip("/"))
        if name.endswith("/"):
            stack.append((indent, name))
    return paths


def test_the_architecture_doc_shows_the_tree_that_is_there() -> None:
    documented = documented_tree((REPO / "docs" / "architecture.md").read_text(encoding="utf-8"))
    modules = {
        path.relative_to(REPO).as_posix()
        for path in ROOT.rglob("*.py")
        if path.name != "__init__.py" or path.parent == ROOT
    }
    assert modules - documented == set()  # every module has its line
    listed = {p for p in documented if "*" not in p and not p.endswith(("__init__.py",))}
    assert {p for p in listed if not (REPO / p).exists()} == set()  # and no line is stale
