"""The example notebooks run top to bottom in a real kernel (nbclient + ipykernel, the
``dev`` extra), each against its own embedded local server: no cell raises, the plots
come out as PNG figures, and running every cell a second time in the same kernel raises
nothing and stores nothing twice. They are stored without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the 'dev' extra")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the 'dev' extra")
pytest.importorskip("ipykernel", reason="the notebook tests need the 'dev' extra")
pytest.importorskip("waitress", reason="the notebooks' local server needs the 'local' extra")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
PNG_FIGURES = {"sweep.ipynb": 3, "compare_runs.ipynb": 3, "organize.ipynb": 0}
# A last cell per notebook, run after every cell ran twice: it prints, as JSON, the raw
# rows (or folders) the test checks by itself, without the code the notebook shows.
CHECKS = {
    "sweep.ipynb": """
import json
print(json.dumps({
    "best": best.slug,
    "rows": {
        run.slug: [[m.metadata.get("split"), m.step, m.value] for m in run.metrics("loss")]
        for run in sm.Experiment.list(folder=sweep)
    },
}))
""",
    "compare_runs.ipynb": """
import json
print(json.dumps({run.slug: len(run.metrics()) for run in sm.Experiment.list()}))
""",
    "organize.ipynb": """
import json
print(json.dumps(sorted(folder.path_name for folder in sm.Folder.list())))
""",
}
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
    cells = len(book.cells)
    # Every cell again, in order, as a user re-running the notebook's cells would; then
    # the check.
    again = [
        nbformat.v4.new_code_cell(cell.source) for cell in book.cells if cell.cell_type == "code"
    ]
    book.cells.extend([*again, nbformat.v4.new_code_cell(CHECKS[path.name])])
    client = nbclient.NotebookClient(
        book,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if one fails
    first, second = book.cells[:cells], book.cells[cells:-1]
    for run in (first, second):
        outputs = [output for cell in run if cell.cell_type == "code" for output in cell.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(figures) == PNG_FIGURES[path.name]
        tables = [o for o in outputs if "text/html" in o.get("data", {})]
        assert tables, "objects and frames render as HTML"
    (printed,) = [o.text for o in book.cells[-1].outputs if o.output_type == "stream"]
    CHECKED[path.name](json.loads(printed))


def check_sweep(found: dict[str, Any]) -> None:
    """``best`` is the run with the lowest validation loss, and each run holds its 300
    train and 12 valid values once."""
    rows = found["rows"]
    assert len(rows) == 5
    lowest = {
        slug: min(value for split, _, value in run if split == "valid")
        for slug, run in rows.items()
    }
    assert found["best"] == min(lowest, key=lambda slug: lowest[slug])
    for run in rows.values():
        steps = [(split, step) for split, step, _ in run]
        assert len(steps) == len(set(steps)) == 300 + 12


def check_compare_runs(found: dict[str, int]) -> None:
    """Each run holds its 400 train and 20 valid points once."""
    assert found == {"baseline": 420, "wider": 420}


def check_organize(found: list[str]) -> None:
    """The renamed folder is not created again under its old name."""
    assert found == ["projects", "projects/computer-vision", "projects/nlp"]


CHECKED: dict[str, Any] = {
    "sweep.ipynb": check_sweep,
    "compare_runs.ipynb": check_compare_runs,
    "organize.ipynb": check_organize,
}
