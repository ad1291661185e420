"""The package's layers: no module imports one of a layer above its own, no cycles between
its parts, and digitgan's own modules imported inside functions only by the command line."""

import ast
import re
from pathlib import Path

import digitgan

PACKAGE = Path(digitgan.__file__).parent

LAYERS = [
    {"errors", "fileio", "options", "version"},
    {"data", "models", "losses", "augment", "viz"},
    {"config"},
    {"store"},
    {"projection", "sampling", "eval", "training", "export", "web"},
    {"serve", "cli", "__init__", "__main__"},
]
"""From the bottom: each part (a top-level module or subpackage of digitgan) and its layer."""

LAZY_ALLOWED = {"cli", "__init__"}
"""Parts that import digitgan modules inside functions: to start without loading PyTorch."""


def part_of(module: str) -> str:
    """``digitgan.training.loop`` -> ``training``; ``digitgan`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(part: str) -> int:
    (layer,) = [i for i, names in enumerate(LAYERS) if part in names]
    return layer


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported digitgan module, whether the import is inside a function) of one file."""
    module = "digitgan." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # for type annotations only, never executed
            if isinstance(child, ast.ImportFrom):
                base = package.split(".")
                if child.level:
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.extend((f"{target}.{a.name}", inner) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return [(m, inner) for m, inner in found if m.split(".")[0] == "digitgan"]


def edges() -> dict[tuple[str, str], list[str]]:
    """(importing part, imported part) -> the files where it happens."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        source = rel.parts[0].removesuffix(".py")
        for module, _ in imports(path):
            target = part_of(module)
            if target != source:
                out.setdefault((source, target), []).append(str(rel))
    return out


def test_every_part_has_a_layer():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()}
    parts = {p for p in parts if not p.startswith((".", "_")) or p in ("__init__", "__main__")}
    parts -= {"__pycache__"}
    known = set().union(*LAYERS)
    assert parts - known == set(), "give each new module or subpackage a layer in LAYERS"


def test_no_part_imports_one_above_it():
    upward = {(a, b): files for (a, b), files in edges().items() if layer_of(b) > layer_of(a)}
    assert upward == {}


def test_no_cycles_between_parts():
    graph: dict[str, set[str]] = {}
    for a, b in edges():
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(a for a in graph if reaches(a, a, {a}))
    assert cycles == []


def test_the_walk_sees_imports():
    """The checks above are only as good as the import walk: it finds known imports."""
    found = edges()
    assert ("training", "eval") in found and ("eval", "sampling") in found
    assert ("store", "config") in found and ("config", "models") in found
    assert ("cli", "training") in found  # an import inside a function


def test_digitgan_modules_are_imported_inside_functions_only_by_the_command_line():
    lazy = {
        str(path.relative_to(PACKAGE)): [m for m, inner in imports(path) if inner]
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0].removesuffix(".py") not in LAZY_ALLOWED
    }
    assert {k: v for k, v in lazy.items() if v} == {}


def test_the_package_uses_public_torch_names():
    """No private ``torch._*`` name beyond the ``torch._foreach_*`` family that torch.optim
    itself is built on."""
    private = re.compile(r"\btorch\._(?!foreach_|_)\w+")
    found = {
        str(path.relative_to(PACKAGE)): private.findall(path.read_text())
        for path in PACKAGE.rglob("*.py")
    }
    assert {k: v for k, v in found.items() if v} == {}
