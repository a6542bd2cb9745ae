"""The package's layout keeps its promises: no module grows past 500 lines, so each stays
one idea a reader can hold (``docs/architecture.md`` says where each kind of change goes)."""

from __future__ import annotations

from pathlib import Path

import syvain_metrics

PACKAGE = Path(syvain_metrics.__file__).parent
LIMIT = 500


def test_no_module_is_longer_than_500_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert long == {}


def test_the_architecture_page_names_every_package() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    packages = sorted(
        init.parent.relative_to(PACKAGE).as_posix()
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE
    )
    assert packages, "the package has subpackages"
    assert [name for name in packages if f"`{name}/`" not in page] == []
