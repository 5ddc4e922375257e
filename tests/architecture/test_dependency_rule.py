"""The dependency rule, checked on the source: domain -> nothing, ports -> domain,
adapters -> domain + ports (+ their own library), entrypoints -> everything."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names)
HEAVY = (
    "jax",
    "jaxlib",
    "flax",
    "llama_cpp",
    "mlx",
    "mlx_lm",
    "transformers",
    "torch",
    "huggingface_hub",
    "falcon",
    "gunicorn",
    "numpy",
    "gguf",
    "tokenizers",
    "safetensors",
    "llguidance",
)


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``; relative ones resolved."""
    package = ["modelport", *path.relative_to(root).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def top(module: str) -> str:
    return module.split(".")[0]


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "modelport" and len(parts) > 1 else None


@pytest.mark.parametrize("path", sources("domain"), ids=lambda p: p.name)
def test_domain_imports_only_stdlib_attrs_and_itself(path: Path) -> None:
    for line, module in imports_of(path):
        allowed = top(module) in STDLIB or top(module) == "attrs" or layer_of(module) == "domain"
        assert allowed, f"{path.relative_to(ROOT)}:{line} imports {module}"


@pytest.mark.parametrize("path", sources("ports"), ids=lambda p: p.name)
def test_ports_import_only_the_domain(path: Path) -> None:
    for line, module in imports_of(path):
        allowed = top(module) in STDLIB or top(module) == "attrs" or layer_of(module) in ("domain", "ports")
        assert allowed, f"{path.relative_to(ROOT)}:{line} imports {module}"


@pytest.mark.parametrize("path", sources("adapters"), ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_never_import_entrypoints(path: Path) -> None:
    for line, module in imports_of(path):
        assert layer_of(module) != "entrypoints", f"{path.relative_to(ROOT)}:{line} imports {module}"


@pytest.mark.parametrize("path", sources("entrypoints"), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_bootstrap_imports_adapters(path: Path) -> None:
    """The composition root is the one module that knows the concrete adapters; the
    CLI and the HTTP app get them from it (as ports)."""
    if path == ROOT / "entrypoints" / "bootstrap.py":
        return
    for line, module in imports_of(path):
        assert layer_of(module) != "adapters", f"{path.relative_to(ROOT)}:{line} imports {module}"


def test_the_rule_sees_an_entrypoint_importing_an_adapter(tmp_path: Path) -> None:
    (tmp_path / "entrypoints").mkdir()
    probe = tmp_path / "entrypoints" / "probe.py"
    probe.write_text("def f():\n    from ..adapters.filesystem.files import write_atomic\n")
    assert [layer_of(m) for _, m in imports_of(probe, root=tmp_path)] == ["adapters"]


def module_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for the imports a module runs when it is imported;
    ``from . import x`` counts as importing the submodule ``x``."""
    package = ["modelport", *path.relative_to(ROOT).parent.parts]
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def source_of(module: str) -> Path | None:
    """The file of a modelport module, or None when it is not one (a class name)."""
    if layer_of(module) is None:
        return None
    base = ROOT.joinpath(*module.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def eagerly_imported_adapters() -> list[Path]:
    """Every adapters module that importing an adapter package runs: the packages'
    ``__init__`` files and, transitively, what they import at module level. Other
    modules (model code that needs its framework to define classes) are only
    imported from inside functions, once an engine is used."""
    seen: set[Path] = set()
    todo = [p for p in sources("adapters") if p.name == "__init__.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for _, module in module_level_imports(path):
            target = source_of(module)
            if target is not None and target.is_relative_to(ROOT / "adapters"):
                todo.append(target)
    return sorted(seen)


@pytest.mark.parametrize("path", eagerly_imported_adapters(), ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_import_heavy_libraries_lazily(path: Path) -> None:
    """Module-level imports of an engine's library would load it on `modelport --help`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        for name in names:
            assert top(name) not in HEAVY, f"{path.relative_to(ROOT)}:{node.lineno} imports {name} at load time"


def test_engine_packages_import_no_engine_library() -> None:
    """What bootstrap imports to build an engine loads none of the heavy libraries."""
    packages = sorted(
        {
            ".".join(["modelport", *p.relative_to(ROOT).parent.parts])
            for p in sources("adapters")
            if p.name == "__init__.py"
        }
    )
    code = (
        "import importlib, sys\n"
        f"for name in {packages!r}: importlib.import_module(name)\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing the adapters loaded {result.stdout.strip()}"


def test_lazily_imported_model_code_is_known() -> None:
    """The adapters modules outside the eager set are the engines' model code."""
    eager = set(eagerly_imported_adapters())
    lazy = {str(p.relative_to(ROOT)) for p in sources("adapters") if p not in eager}
    assert all(path.startswith("adapters/jax/") for path in lazy), lazy


def test_the_rule_sees_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "domain").mkdir()
    probe = tmp_path / "domain" / "probe.py"
    probe.write_text("import json\nfrom ..ports import engine\nfrom . import models\n")
    layers = [layer_of(m) for _, m in imports_of(probe, root=tmp_path)]
    assert layers == [None, "ports", "domain"]


def test_help_does_not_import_engine_libraries() -> None:
    code = (
        "import io, sys\n"
        "from modelport.entrypoints.cli import main\n"
        "assert main(['--help'], out=io.StringIO()) == 0\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"--help imported {result.stdout.strip()}"


def test_no_bare_layer_package_is_importable() -> None:
    for name in ("domain", "ports", "adapters", "entrypoints"):
        code = (
            f"import importlib.util, sys; sys.path.remove('') if '' in sys.path else None; "
            f"spec = importlib.util.find_spec('{name}'); "
            f"print(spec.origin if spec else '')"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
        origin = result.stdout.strip()
        assert not origin.startswith(str(ROOT)), f"bare '{name}' resolves to {origin}"
