"""What mloop imports: the layering contracts of pyproject.toml hold, and every core dependency is used.

The contracts (``[tool.importlinter]``) encode DESIGN.md's "imports point inward"; running them here
puts them in ``make test`` and so in CI, beside ``make lint``.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]

# Core dependencies that mloop does not import and why they stay. Keep this short: a dependency
# nothing imports should be dropped instead.
NOT_IMPORTED = {
    "pydantic-settings": "named by DESIGN.md for the settings tree; the loader reads MLOOP_* itself today",
}


def test_import_linter_contracts_are_kept() -> None:
    # lint-imports prints the broken contracts and the offending import lines on failure.
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_the_contracts_cover_layers_outer_layers_and_private_modules() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    kinds = {c["type"]: c for c in config["contracts"]}
    assert set(kinds) == {"layers", "forbidden", "private_modules"}
    layers = [re.split(r"\s*[:|]\s*", layer) for layer in kinds["layers"]["layers"]]
    # DESIGN.md: cli/server -> control -> capabilities -> predlog/tracking/data/store -> config.
    assert layers[:2] == [["cli", "server"], ["control"]]
    assert {"rollout", "training", "serving", "monitoring"} <= set(layers[2])
    assert set(layers[3]) == {"predlog", "tracking", "data", "store"}
    assert layers[4:] == [["config", "periodic"], ["errors"]]
    # Every subpackage and module of mloop is in exactly one layer, so a new one cannot slip past.
    src = ROOT / "src" / "mloop"
    packages = {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in src.glob("*.py")} - {"__init__", "__main__"}
    placed = [name for layer in layers for name in layer]
    assert sorted(placed) == sorted(packages | modules)
    assert set(kinds["forbidden"]["forbidden_modules"]) == {"mloop.cli", "mloop.server"}


def test_every_core_dependency_is_imported() -> None:
    graph = grimp.build_graph("mloop", include_external_packages=True, cache_dir=None)
    imported = {m for m in graph.modules if not m.startswith("mloop")}
    provides: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            provides.setdefault(_normal(dist), set()).add(module)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    unused = [
        name
        for name in (_normal(re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0]) for d in dependencies)
        if not provides.get(name, set()) & imported and name not in NOT_IMPORTED
    ]
    assert unused == [], f"core dependencies that nothing in mloop imports: {unused}"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
