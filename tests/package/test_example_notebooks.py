"""The example notebooks run top to bottom in a real kernel (nbclient + ipykernel, the
``dev`` extra), each against its own embedded local server: no cell raises, and the
plots come out as PNG figures. They are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the 'dev' extra")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the 'dev' extra")
pytest.importorskip("ipykernel", reason="the notebook tests need the 'dev' extra")
pytest.importorskip("waitress", reason="the notebooks' local server needs the 'local' extra")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
PNG_FIGURES = {"sweep.ipynb": 2, "compare_runs.ipynb": 3, "organize.ipynb": 0}
# Notebooks that need a training framework: run by that integration's tests instead
# (tests/integrations/), since the core suite installs no framework.
NEEDS_FRAMEWORK = {"optuna_sweep.ipynb": "optuna"}


def test_every_example_notebook_is_listed_here() -> None:
    assert sorted(p.name for p in NOTEBOOKS) == sorted([*PNG_FIGURES, *NEEDS_FRAMEWORK])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a cell keeps its outputs"
            assert cell.execution_count is None


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.name in PNG_FIGURES], ids=lambda p: p.name
)
def test_notebook_runs_without_errors_and_draws_png_figures(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("SYVAIN_METRICS_"):
            monkeypatch.delenv(name)
    # A spool of its own: batches other tests' processes left behind would be announced
    # on stderr, as they are to a user who has some.
    monkeypatch.setenv("SYVAIN_METRICS_SPOOL_DIR", str(tmp_path / "spool"))
    # start_local_server()'s data file: the test's own, never the user's home.
    monkeypatch.setenv("SYVAIN_METRICS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        book,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if one fails
    outputs = [output for cell in book.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == PNG_FIGURES[path.name]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert tables, "objects and frames render as HTML"
