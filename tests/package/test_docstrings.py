"""Every docstring example that is not marked ``+SKIP`` runs, and shows what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import syvain_metrics

# The framework integrations import their framework when imported: their examples run in
# the integrations step, with the frameworks installed (tests/integrations/test_docstrings.py).
FRAMEWORKS = (
    "lightning",
    "pytorch_lightning",
    "transformers",
    "accelerate",
    "keras",
    "xgboost",
    "lightgbm",
    "optuna",
)
FRAMEWORK_MODULES = [f"syvain_metrics.integrations.{name}" for name in FRAMEWORKS]

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(syvain_metrics.__path__, prefix="syvain_metrics.")
    if not info.name.endswith("__main__") and info.name not in FRAMEWORK_MODULES
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
