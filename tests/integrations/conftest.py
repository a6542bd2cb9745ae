"""The framework integrations' tests: real frameworks on CPU, tiny models, the real local
server. Every test here is marked ``integrations`` and runs only when asked for
(``python -m pytest -m integrations``, the `integrations-test` extra installed), so the core
suite stays fast. A framework that is missing skips its tests locally, with the command that
installs it, and fails them under ``CI=true``: CI cannot pass without running them."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from types import ModuleType

import pytest

# Keras 3 on the torch backend: the only backend the test extra installs (torch==2.13.0, CPU).
os.environ.setdefault("KERAS_BACKEND", "torch")

HERE = Path(__file__).parent
INSTALL = 'pip install "torch==2.13.0" && pip install -e ".[dev,integrations-test]"'


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Left out of the core run (``-m 'not integrations'``, the default) before their
    modules are imported: a framework missing there is not a skip of anything."""
    selected = str(config.getoption("markexpr", "") or "")
    if "integrations" in selected and not re.search(r"\bnot\s+integrations\b", selected):
        return None
    return collection_path.suffix == ".py" and collection_path.name != "conftest.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integrations)


def framework(module: str) -> ModuleType:
    """Import a framework for a test module; skip (locally) or fail (``CI=true``) without it.

    Example:
        >>> xgb = framework("xgboost")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = f"{module} is not installed ({error}); install it with: {INSTALL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)
