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


def read_with_options(exp: sm.Experiment, other: sm.Experiment, runs: sm.ExperimentList) -> Axes:
    first_ten: sm.MetricRows = exp.metrics("loss", from_step=1, limit=10)
    both = sm.compare([exp.series("loss"), other.series("loss")], sort_direction="desc")
    for page in sm.iter_compare([exp.series("loss")], sort_by=["series", "step"], page_size=100):
        print(len(page), first_ten.values, both.to_pandas())
    runs.plot("loss", metadata={"split": "valid"}, hue="lr", smooth=0.5)
    return exp.metrics("loss", progress=True).plot(x="time", smooth=0.5)


server = sm.start_local_server()
exp = sm.Experiment.create("x", exist_ok=True)
slug: str = exp.slug
"""

# Each mistake with the error code mypy gives it.
MISTAKES = [
    ("not_a_number: int = exp.slug", "assignment", 'variable has type "int"'),
    ('exp.description = "changed"', "assignment", "Incompatible types in assignment"),
    ('exp.metrics("loss", from_stpe=1)', "call-arg", 'keyword argument "from_stpe"'),
    ('exp.metrics("loss", limit="10")', "arg-type", '"limit"'),
    ("exp.metrics(123)", "arg-type", 'Argument 1 to "metrics"'),
]


def test_a_users_script_type_checks_against_the_package(tmp_path: Path) -> None:
    text = SCRIPT + "".join(f"{line}\n" for line, _, _ in MISTAKES)
    (tmp_path / "user.py").write_text(text, encoding="utf-8")
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
    # Exactly the mistakes, one error each on its own line: the correct calls above them
    # (options passed as keywords included) type-check.
    first = len(SCRIPT.splitlines()) + 1
    assert len(errors) == len(MISTAKES), report
    for number, (error, (_, code, words)) in enumerate(
        zip(errors, MISTAKES, strict=True), start=first
    ):
        assert error.startswith(f"user.py:{number}:"), report
        assert error.endswith(f"[{code}]"), report
        assert words in error, report


def test_the_package_ships_its_py_typed_marker() -> None:
    import syvain_metrics

    assert (Path(syvain_metrics.__file__).parent / "py.typed").is_file()


def test_typing_extensions_is_imported_for_type_checkers_only() -> None:
    # ``Unpack`` comes from typing_extensions, which is no runtime dependency (Python 3.10):
    # every import of it sits under ``if TYPE_CHECKING:`` (annotations are never evaluated).
    import ast

    import syvain_metrics

    def imports_it(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(alias.name.split(".")[0] == "typing_extensions" for alias in node.names)
        return isinstance(node, ast.ImportFrom) and node.module == "typing_extensions"

    root = Path(syvain_metrics.__file__).parent
    unguarded: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = {
            id(node)
            for branch in ast.walk(tree)
            if isinstance(branch, ast.If) and ast.unparse(branch.test).endswith("TYPE_CHECKING")
            for statement in branch.body
            for node in ast.walk(statement)
        }
        unguarded += [
            f"{path.relative_to(root)}:{node.lineno}"  # type: ignore[attr-defined]
            for node in ast.walk(tree)
            if imports_it(node) and id(node) not in guarded
        ]
    assert unguarded == []
    assert "from typing_extensions import Unpack" in (root / "resources" / "compare.py").read_text(
        encoding="utf-8"
    )
