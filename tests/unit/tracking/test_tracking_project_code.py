"""A project's own modules come from its own directory, with several projects in one process.

Every project's code is the module ``train``: another project's ``train`` cached in ``sys.modules``,
or a stray ``train.py`` earlier on ``sys.path``, must not stand in for it.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mloop.tracking.project_code import import_project_module, loaded_project_module, project_imports

NAMES = ("train", "helpers", "pkg", "pkg.nets", "only_here", "colorsys")


@pytest.fixture(autouse=True)
def _imports_restored() -> Iterator[None]:
    """Each test leaves sys.path and the modules it names as it found them."""
    path = list(sys.path)
    modules = {name: sys.modules[name] for name in NAMES if name in sys.modules}
    yield
    sys.path[:] = path
    for name in NAMES:
        sys.modules.pop(name, None)
    sys.modules.update(modules)


def _project(root: Path, tag: str) -> Path:
    """A project whose train.py says ``tag`` from a function, a class and a sibling module."""
    root.mkdir(parents=True)
    (root / "helpers.py").write_text(f"TAG = {tag!r}\n", encoding="utf-8")
    (root / "train.py").write_text(
        f"from helpers import TAG\n\ndef build():\n    return TAG\n\nclass Net:\n    tag = {tag!r}\n",
        encoding="utf-8",
    )
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pkg" / "nets.py").write_text(f"tag = {tag!r}\n", encoding="utf-8")
    return root


def test_two_projects_loaded_one_after_the_other_each_get_their_own_train(tmp_path: Path) -> None:
    a, b = _project(tmp_path / "a", "a"), _project(tmp_path / "b", "b")
    for root, tag in ((a, "a"), (b, "b"), (a, "a")):
        train = import_project_module("train", root)
        assert train.build() == tag and train.Net.tag == tag
        assert Path(train.__file__).parent == root.resolve()
        # the plain name now means this project's module: skops and pickle find `train.Net` there
        assert sys.modules["train"] is train and train.Net.__module__ == "train"
        nets = import_project_module("pkg.nets", root)
        assert nets.tag == tag and sys.modules["pkg"].nets is nets


def test_a_stray_train_earlier_on_sys_path_does_not_win(tmp_path: Path) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "train.py").write_text("def build():\n    return 'stray'\n", encoding="utf-8")
    sys.path.insert(0, str(stray))
    assert importlib.import_module("train").build() == "stray"  # cached and first on sys.path
    project = _project(tmp_path / "project", "mine")
    assert import_project_module("train", project).build() == "mine"
    assert sys.path[0] == str(stray)  # left where it was
    assert sys.path[-1] == str(project.resolve())  # at the end, for worker processes' imports by name


def test_loaders_that_import_by_name_see_the_project_s_modules(tmp_path: Path) -> None:
    a, b = _project(tmp_path / "a", "a"), _project(tmp_path / "b", "b")
    import_project_module("train", a)
    with project_imports(b):
        assert importlib.import_module("train").Net.tag == "b"
        with project_imports(a):
            assert import_project_module("train").build() == "a"
            sys.modules.pop("helpers")
            assert importlib.import_module("helpers").TAG == "a"  # a later import by name, too
        assert import_project_module("train").build() == "b"


def test_installed_modules_are_imported_as_python_does(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", "p")
    assert import_project_module("json", project) is json
    assert import_project_module("email.mime.text", project) is importlib.import_module("email.mime.text")


def test_a_module_the_project_lacks_names_the_file_looked_for(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", "p")
    with pytest.raises(ModuleNotFoundError) as caught:
        import_project_module("trian", project)
    message = str(caught.value)
    assert str(project.resolve() / "trian.py") in message and "Put that file in the project" in message
    with pytest.raises(ModuleNotFoundError, match=r"no project directory was given to look for trian\.py"):
        import_project_module("trian")


def test_another_project_s_module_does_not_stand_in_for_a_missing_one(tmp_path: Path) -> None:
    a = _project(tmp_path / "a", "a")
    (a / "only_here.py").write_text("X = 1\n", encoding="utf-8")
    b = _project(tmp_path / "b", "b")
    import_project_module("only_here", a)
    with pytest.raises(ModuleNotFoundError, match="another project's code"):
        import_project_module("only_here", b)


def test_a_project_file_never_shadows_an_installed_module(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", "p")
    (project / "json.py").write_text("X = 1\n", encoding="utf-8")
    (project / "colorsys.py").write_text("X = 1\n", encoding="utf-8")
    with pytest.raises(ImportError, match=r"Rename json\.py"):
        import_project_module("json", project)
    assert sys.modules["json"] is json
    sys.modules.pop("colorsys", None)
    with project_imports(project):  # not imported yet: still the standard library's
        assert not hasattr(importlib.import_module("colorsys"), "X")


def test_an_already_imported_module_counts_only_for_its_own_project(tmp_path: Path) -> None:
    """What a network rebuilt without importing (``trusted=None``) may use."""
    a, b = _project(tmp_path / "a", "a"), _project(tmp_path / "b", "b")
    train = import_project_module("train", a)
    assert loaded_project_module("train") is train  # no project open: the process's module
    assert loaded_project_module("json") is json
    with project_imports(b):
        assert "train" not in sys.modules  # a's was set aside on entry
        sys.modules["train"] = train  # as another thread importing a's code could put it back
        assert loaded_project_module("train") is None  # a's train is not b's
    with project_imports(a):
        assert loaded_project_module("train") is train
