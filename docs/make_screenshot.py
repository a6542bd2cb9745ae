"""Regenerate ``docs/dashboard-experiment.png`` and ``docs/dashboard-compare.png``, the
README's pictures of an experiment page and of a sweep's compare page.

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
COMPARE_OUT = Path(__file__).with_name("dashboard-compare.png")
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
    compare_screenshot()


def compare_screenshot() -> None:
    """The compare page of a 12-run learning-rate sweep: coloured by ``lr``, smoothing on,
    train and valid loss in charts of their own."""
    rng = random.Random(12)
    with LocalServer() as server, sync_playwright() as driver:
        session = server.session()
        folder = sm.Folder.create("lr-sweep", session=session)
        ids = []
        for index in range(12):
            lr = round(10 ** (-4 + 3 * index / 11), 6)
            exp = folder.create_experiment(
                f"sweep-{index:02d}",
                metadata={"lr": lr, "batch_size": 64, "optimizer": "adamw"},
            )
            # Too small learns slowly, too large diverges: the best is in the middle.
            speed = 0.4 + 6 * math.log10(lr * 1e4)
            floor = 0.35 + 0.12 * abs(math.log10(lr) + 2.3)
            events = []
            for step in range(1500):
                loss = 2.6 * math.exp(-step * speed / 1500) + floor + rng.gauss(0, 0.06)
                at = 1_790_000_000_000 + index * 900_000 + step * 400
                events.append(
                    {
                        "client_event_id": f"t{step}",
                        "name": "loss",
                        "value": loss,
                        "step": step,
                        "metadata": {"split": "train"},
                        "timestamp_ms": at,
                    }
                )
                if step % 50 == 0:
                    events.append(
                        {
                            "client_event_id": f"v{step}",
                            "name": "loss",
                            "value": loss + 0.08 + rng.gauss(0, 0.02),
                            "step": step,
                            "metadata": {"split": "valid"},
                            "timestamp_ms": at,
                        }
                    )
                    events.append(
                        {
                            "client_event_id": f"a{step}",
                            "name": "accuracy",
                            "value": max(0.0, 0.95 - 0.3 * (loss - floor) - 0.4 * (floor - 0.35)),
                            "step": step,
                            "timestamp_ms": at,
                        }
                    )
            exp.ingest(events, sync=True)
            ids.append(exp.id)
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 720})
        url = f"{server.url}/dashboard/compare?experiments={','.join(ids)}&color=lr&smooth=0.8"
        page.goto(server.dashboard_link(url))
        page.wait_for_function(
            "() => document.getElementById('compare')?.dataset.state === 'ready'"
        )
        box = page.locator(".cmp-over").nth(1).bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.4)
        page.locator("#cmp-tooltip").wait_for(state="visible")
        page.screenshot(path=str(COMPARE_OUT), clip={"x": 0, "y": 0, "width": 1400, "height": 720})
        browser.close()
        session.close()
    print(f"wrote {COMPARE_OUT}")


if __name__ == "__main__":
    main()
