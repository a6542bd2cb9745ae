"""Regenerate ``docs/dashboard-experiment.png``, the README's picture of an experiment page.

Needs the ``dev`` extra and Debian's chromium (``apt-get install chromium``)::

    python docs/make_screenshot.py
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from playwright.sync_api import sync_playwright

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer

OUT = Path(__file__).with_name("dashboard-experiment.png")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main() -> None:
    rng = random.Random(7)
    with LocalServer() as server, sync_playwright() as driver:
        session = server.session()
        folder = sm.Folder.create("baselines", session=session)
        exp = folder.create_experiment(
            "mamba-run-001",
            description="Baseline, cosine schedule",
            metadata={"lr": 0.0003, "batch_size": 64, "model": "mamba-130m"},
        )
        with exp.run():
            for step in range(2000):
                loss = 2.6 * math.exp(-step / 450) + 0.35 + rng.uniform(0, 0.08)
                exp.log("loss", loss, step=step, metadata={"split": "train"})
                if step % 50 == 0:
                    exp.log("loss", loss + 0.06, step=step, metadata={"split": "valid"})
                    exp.log("accuracy", 0.92 - 0.7 * math.exp(-step / 500), step=step)
            exp.annotate("Checkpoint saved", metadata={"path": "ckpt/mamba-run-001/1999.pt"})
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(server.dashboard_link(exp.url))
        page.wait_for_url(exp.url)
        page.wait_for_function(
            "() => [...document.querySelectorAll('section.chart')]"
            ".every(s => s.dataset.state === 'drawn')"
        )
        box = page.locator('section.chart[data-metric="loss"] rect.overlay').bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
        page.screenshot(path=str(OUT), clip={"x": 0, "y": 0, "width": 1200, "height": 860})
        browser.close()
        session.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
