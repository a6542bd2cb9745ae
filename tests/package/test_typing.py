"""A user's script type-checks against the installed package (``mypy --strict``, run as a
user would, from a directory of their own): the package is found with its ``py.typed``
marker, so its methods have real types rather than ``Any``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="the typing check needs the 'dev' extra")

SCRIPT = """
from matplotlib.axes import Axes

import syvain_metrics as sm


def explore(session: sm.Session) -> Axes:
    runs: sm.ExperimentList = sm.Experiment.list(metadata={"optimizer": "sgd"}, session=session)
    first: sm.Experiment = runs[0]
    print(runs.to_pandas().columns, first.summary(["loss"]).get("loss:min"))
    rows: sm.MetricRows = first.metrics("loss")
    return rows.plot(hue="split", logy=True)


server = sm.start_local_server()
exp = sm.Experiment.create("x", exist_ok=True)
slug: str = exp.slug
"""

MISTAKES = """
not_a_number: int = exp.slug
exp.description = "changed"
"""


def test_a_users_script_type_checks_against_the_package(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(SCRIPT + MISTAKES, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / ".cache"),
            "user.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = done.stdout
    assert "import-not-found" not in report, report
    errors = [line for line in report.splitlines() if ": error:" in line]
    # Exactly the two mistakes: a str is not an int, and a read-only field is refused.
    assert len(errors) == 2, report
    assert 'expression has type "str", variable has type "int"' in errors[0]
    assert errors[1].startswith("user.py:20:"), report
    assert "[assignment]" in errors[1]


def test_the_package_ships_its_py_typed_marker() -> None:
    import syvain_metrics

    assert (Path(syvain_metrics.__file__).parent / "py.typed").is_file()
