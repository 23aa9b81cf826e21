"""mloop without the torch extra: nothing imports torch unless a model needs it, and then says how."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_without_the_torch_extra_mloop_says_what_to_install() -> None:
    """torch and skorch hidden from a fresh interpreter: models without them load, torch_mlp says why."""
    code = textwrap.dedent(
        """
        import sys

        class Uninstalled:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("torch", "skorch"):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, Uninstalled())
        from mloop.errors import TrainingError
        from mloop.tracking.torch_io import restore_networks
        from mloop.training.estimators import build_estimator
        from sklearn.linear_model import LogisticRegression
        restore_networks(LogisticRegression(), [])  # a model without PyTorch steps: nothing to do
        try:
            build_estimator("torch_mlp", "classification")
        except TrainingError as exc:
            print(exc.message)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'mloop[torch]'" in out.stdout and "download.pytorch.org/whl/cpu" in out.stdout


def test_mloop_imports_torch_only_for_a_model_that_holds_a_network() -> None:
    code = (
        "import sys\n"
        "import mloop.server, mloop.serving.runtime, mloop.tracking.registry, mloop.training.pipeline\n"
        "import mloop.training.estimators, mloop.training.torch_net\n"
        "print(sorted(m for m in ('torch', 'skorch') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
