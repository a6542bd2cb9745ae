"""Render the README's figures: run ``examples/sweep.ipynb`` (its own embedded local
server) and save its first plot and the runs table it draws.

Usage: ``python docs/render_figures.py`` (needs the ``dev`` extra).
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def main() -> None:
    book = nbformat.read(HERE.parent / "examples" / "sweep.ipynb", as_version=4)
    nbclient.NotebookClient(book, timeout=120, kernel_name="python3").execute()
    figures = [
        output["data"]["image/png"]
        for cell in book.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    target = HERE / "notebook-sweep-loss.png"
    target.write_bytes(base64.b64decode(figures[0]))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
