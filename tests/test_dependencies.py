"""The dependencies pyproject.toml declares are the ones the code imports, read from the source with ``ast``.

The package (``mm_gmpo/``): every module it imports outside the standard library is declared, in the core list or in
a feature's extra (``deepspeed``, ``lora``, ``gpu``, ``wandb``), and every declared one is imported; an extra's
module is loaded with ``require(module, purpose, install)``, whose install hint names the extra. Imports count
whether they are statements or calls with a literal module name (``require``, ``find_spec``, ``import_module``).
Tests, scripts and data scripts import only what some list (``test``, ``bench`` included) declares."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (CI); pyproject.toml cannot be read without it on 3.10

REPO = Path(__file__).resolve().parents[1]
RUNTIME_EXTRAS = ("deepspeed", "lora", "gpu", "wandb")  # what the package itself may import
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "antlr4": "antlr4-python3-runtime"}  # import name -> its package
THROUGH = {"torch.utils.tensorboard": "tensorboard"}  # a module of one package that imports another
UNDECLARED = {"flash-attn"}  # used when present, installed by hand against the CUDA torch (docs/gpu.md)
LOADERS = {"require", "find_spec", "import_module", "importorskip"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str], extras: dict[str, list[str]]) -> set[str]:
    """Package names of requirement strings, the project's own extras (``mm-gmpo[a,b]``) spelled out."""
    names = set()
    for req in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
        if normalized(name) == "mm-gmpo":
            for extra in req[req.index("[") + 1 : req.index("]")].split(","):
                names |= requirement_names(extras[extra.strip()], extras)
        else:
            names.add(normalized(name))
    return names


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return requirement_names(project["dependencies"], extras), {
        name: requirement_names(reqs, extras) for name, reqs in extras.items()
    }


def imported_modules(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(dotted module, node) of every absolute import statement and literal loader call in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in LOADERS and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, node))
    return found


def third_party(module: str) -> set[str]:
    """The packages an import of ``module`` needs (none for the standard library and the project's own)."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "mm_gmpo":
        return set()
    needs = {normalized(DISTRIBUTION.get(top, top))}
    needs |= {dist for prefix, dist in THROUGH.items() if module == prefix or module.startswith(prefix + ".")}
    return needs


def imports_under(*folders: str) -> dict[str, set[str]]:
    """package -> the files that import it, over the Python files under ``folders``."""
    local = {p.stem for folder in folders if folder != "mm_gmpo" for p in (REPO / folder).rglob("*.py")}  # conftest
    out: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for module, _ in imported_modules(ast.parse(path.read_text())):
                if module.split(".")[0] in local:
                    continue
                for dist in third_party(module):
                    out.setdefault(dist, set()).add(str(path.relative_to(REPO)))
    return out


def test_the_package_imports_exactly_what_it_declares():
    core, extras = declared()
    runtime = core.union(*(extras[name] for name in RUNTIME_EXTRAS))
    used = imports_under("mm_gmpo")
    undeclared = {dist: sorted(files)[:3] for dist, files in used.items() if dist not in runtime | UNDECLARED}
    assert not undeclared, f"imported by mm_gmpo but not declared in pyproject.toml: {undeclared}"
    unused = sorted(runtime - set(used))
    assert not unused, f"declared in pyproject.toml (dependencies or {RUNTIME_EXTRAS}) but never imported: {unused}"


def test_an_extra_is_loaded_with_require_naming_the_extra():
    """A package of an extra is imported only where its feature runs, with a hint that installs the extra."""
    core, extras = declared()
    own = {dist: name for name in ("deepspeed", "lora", "wandb") for dist in extras[name]}
    own |= {dist: "gpu" for dist in extras["gpu"] - core - set(own)}
    hints = []
    for path in sorted((REPO / "mm_gmpo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "require" and len(node.args) == 3:
                module, _, install = (getattr(arg, "value", None) for arg in node.args)
                if isinstance(module, str) and (dist := next(iter(third_party(module)), "")) in own:
                    hints.append((path.name, dist, install))
                    assert install == f"pip install -e '.[{own[dist]}]'", f"{path}: the hint for {dist} is {install!r}"
    assert {dist for _, dist, _ in hints} >= {"deepspeed", "peft", "vllm", "wandb"}, hints


def test_module_level_imports_of_the_package_are_core():
    """An extra's package imported at the top of a module would break every import of it in a core install."""
    core, extras = declared()
    optional = set().union(*(extras[name] for name in RUNTIME_EXTRAS)) - core
    for path in sorted((REPO / "mm_gmpo").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for module, _ in imported_modules(node):
                    assert not third_party(module) & optional, f"{path}: module-level import of {module}"


def test_tests_and_scripts_import_only_declared_packages():
    core, extras = declared()
    everything = core.union(*extras.values()) | UNDECLARED
    used = imports_under("tests", "scripts", "data")
    undeclared = {dist: sorted(files)[:3] for dist, files in used.items() if dist not in everything}
    assert not undeclared, f"imported but declared in no list of pyproject.toml: {undeclared}"


def test_the_checks_see_what_they_check():
    """The parser finds imports of each kind (a statement, a loader call, a module through another package)."""
    tree = ast.parse(
        "import PIL.Image\nfrom torch.utils.tensorboard import SummaryWriter\n"
        "def f():\n    require('peft', 'model.lora', 'x')\n    importlib.util.find_spec('flash_attn')\n"
    )
    found = set().union(*(third_party(module) for module, _ in imported_modules(tree)))
    assert found == {"pillow", "torch", "tensorboard", "peft", "flash-attn"}
    assert requirement_names(["mm-gmpo[a]", "Foo_Bar>=1"], {"a": ["peft"]}) == {"peft", "foo-bar"}
