"""The shape issue 12 set, held by tests so that it cannot erode unseen:

- the layers import only downwards (uptane at the ground, storage above it, and so on);
- no product package has an import cycle;
- image identity has one definition (uptane/identity.py);
- agent code carries no fault or crash hooks (faults are injected by wrapping the
  storage object, docs/storage.md);
- modules and functions stay small enough to read.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = (
    "uptane",
    "storage",
    "keystore",
    "hardware",
    "director",
    "primary",
    "secondary",
    "timeserver",
)

#: what each product package may import from the project (besides itself)
ALLOWED = {
    "uptane": set(),
    "storage": {"uptane"},
    "keystore": {"uptane", "storage"},
    "hardware": {"uptane", "storage"},
    "timeserver": {"uptane", "storage"},
    "director": {"uptane", "storage", "keystore"},
    "primary": {"uptane", "storage", "keystore", "hardware", "timeserver"},
    "secondary": {"uptane", "storage", "keystore", "hardware"},
}

MODULE_LINES = 650  # "no module over ~600 lines" in director/, primary/, secondary/
FUNCTION_LINES = 65  # "no function over ~60 lines outside migrations"


def _modules(package: str) -> Iterator[Path]:
    for p in sorted((ROOT / package).rglob("*.py")):
        if "migrations" not in p.parts:
            yield p


def _name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (type-only imports
    make no cycle at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports at run time, at any depth (local imports too)."""
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PRODUCT}


@pytest.mark.parametrize("package", PRODUCT)
def test_layers_import_only_downwards(package: str) -> None:
    wrong = []
    for path in _modules(package):
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules() -> None:
    known = {_name(p): p for pkg in PRODUCT for p in _modules(pkg)}
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        deps = set()
        for mod in _imports(path):
            # "from a.b import c" names a.b.c (a module) or a.b (c is a name in it)
            while mod and mod not in known:
                mod = mod.rpartition(".")[0]
            if mod and mod != name:
                deps.add(mod)
        graph[name] = deps
    # a package's __init__ importing its own submodules is not a cycle of interest
    for name in graph:
        graph[name] = {d for d in graph[name] if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle = [*stack[stack.index(d) :], d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


#: comparisons of hashes that are not image identity: §5.4.4.2 step 10.2.1 wants the
#: Director's and the Image repository's entries to carry exactly the same hashes
NOT_IDENTITY = {("uptane/verify.py", "check_director_image_match")}
_COMPARE = re.compile(r"hashes\)?\s*[!=]=|==\s*dict\([^)]*hashes")
_OLD_NAMES = {"_same_image", "_image_key", "_is_installed", "_already_installed"}


def test_image_identity_has_one_definition() -> None:
    """No code outside uptane/identity.py compares two images' hashes itself."""
    found = []
    for pkg in PRODUCT:
        for path in _modules(pkg):
            rel = str(path.relative_to(ROOT))
            if rel == "uptane/identity.py":
                continue
            lines = path.read_text("utf-8").splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if node.name in _OLD_NAMES:
                    found.append(f"{rel}:{node.lineno}: def {node.name}")
                if (rel, node.name) in NOT_IDENTITY:
                    continue
                for i in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                    if _COMPARE.search(lines[i - 1]):
                        found.append(f"{rel}:{i}: {lines[i - 1].strip()}")
    assert not found, "\n".join(sorted(set(found)))


#: names that only fault injection uses: none may appear in agent code
_HOOKS = {
    "PowerCut",
    "PowerLoss",
    "KillAt",
    "WritePointCounter",
    "FaultyFileSystem",
    "fault",
    "_crash_point",
    "_power_point",
    "CRASH_ENV",
}


@pytest.mark.parametrize("package", ["primary", "secondary", "director", "timeserver"])
def test_agents_carry_no_fault_hooks(package: str) -> None:
    found = []
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names: set[str] = set()
            if isinstance(node, ast.Name):
                names = {node.id}
            elif isinstance(node, ast.Attribute):
                names = {node.attr}
            elif isinstance(node, ast.arg) or (isinstance(node, ast.keyword) and node.arg):
                names = {node.arg}
            elif isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names} | {node.module or ""}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            hooks = names & _HOOKS | {n for n in names if n.startswith("storage.faults")}
            if hooks or (isinstance(node, ast.Constant) and str(node.value).startswith("UPTANE_")):
                found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}: {hooks}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", ["director", "primary", "secondary"])
def test_modules_stay_readable(package: str) -> None:
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _modules(package)
        if (n := len(p.read_text("utf-8").splitlines())) > MODULE_LINES
    ]
    assert not big, "\n".join(big)


@pytest.mark.parametrize("package", PRODUCT)
def test_functions_stay_readable(package: str) -> None:
    long = []
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)
