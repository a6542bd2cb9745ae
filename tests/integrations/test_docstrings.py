"""The framework integrations' docstring examples, with their frameworks installed (the core
suite's docstring test leaves these modules out)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import syvain_metrics.integrations
from tests.integrations.conftest import framework
from tests.package.test_docstrings import FRAMEWORK_MODULES

PRESENT = sorted(
    info.name
    for info in pkgutil.iter_modules(
        syvain_metrics.integrations.__path__, prefix="syvain_metrics.integrations."
    )
)


@pytest.mark.parametrize("name", sorted(set(FRAMEWORK_MODULES) & set(PRESENT)))
def test_docstring_examples_run(name: str) -> None:
    framework(name.rsplit(".", 1)[1])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
