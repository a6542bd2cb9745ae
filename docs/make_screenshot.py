"""Regenerate the README's pictures of the dashboard: an experiment page
(``docs/dashboard-experiment.png``), a sweep's compare page (``docs/dashboard-compare.png``),
and the runs table (``docs/dashboard-runs.png``, ``docs/dashboard-parallel.png``).

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
    runs_screenshots()


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


RUNS_OUT = Path(__file__).with_name("dashboard-runs.png")
PARALLEL_OUT = Path(__file__).with_name("dashboard-parallel.png")


def _sweep(session: sm.Session) -> list[sm.Experiment]:
    """A sweep of 12 runs (lr x batch size x optimizer) with train and valid loss."""
    rng = random.Random(11)
    folder = sm.Folder.create("sweeps", session=session)
    sweep = folder.create_subfolder("lr-batch")
    runs = []
    for index, (lr, batch, optimizer) in enumerate(
        (lr, batch, optimizer)
        for optimizer in ("adamw", "sgd")
        for lr in (0.0003, 0.001, 0.003)
        for batch in (32, 64)
    ):
        exp = sweep.create_experiment(
            f"{optimizer}-lr{lr}-bs{batch}",
            metadata={"lr": lr, "batch_size": batch, "optimizer": optimizer, "seed": index},
        )
        # a loss floor that depends on the hyperparameters, as a sweep's would
        floor = 0.3 + 4 * abs(math.log10(lr) + 3) ** 2 * 0.05 + (0.15 if optimizer == "sgd" else 0)
        floor += 0.04 * (batch == 64)
        with exp.run():
            for step in range(0, 600, 2):
                loss = 2.4 * math.exp(-step / 140) + floor + rng.uniform(0, 0.05)
                exp.log("loss", loss, step=step, metadata={"split": "train"})
                if step % 20 == 0:
                    valid = loss + 0.08 + rng.uniform(0, 0.03)
                    exp.log("loss", valid, step=step, metadata={"split": "valid"})
                    exp.log("accuracy", 0.95 - 0.6 * (loss - 0.3) / 2.7, step=step)
        runs.append(exp)
    return runs


def runs_screenshots() -> None:
    """The runs table of a 12-run sweep sorted by the best validation loss, and the parallel
    coordinates of its runs."""
    with LocalServer() as server, sync_playwright() as driver:
        session = server.session()
        runs = _sweep(session)
        columns = "&".join(
            f"col={c}"
            for c in (
                "loss%5Bsplit%3Dvalid%5D%3Amin",
                "loss%5Bsplit%3Dvalid%5D%3Alast",
                "loss%5Bsplit%3Dtrain%5D%3Alast",
                "accuracy%3Amax",
            )
        )
        folder = runs[0].folder.folder_id
        url = (
            f"{server.url}/dashboard/?folder={folder}&{columns}"
            "&sort=metric%3Aloss%5Bsplit%3Dvalid%5D%3Amin&order=asc"
        )
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 760})
        page.goto(server.dashboard_link(url))
        page.wait_for_url(url)
        for slug in [r.slug for r in runs][:12:3]:
            page.get_by_label(f"compare {slug}").check()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(RUNS_OUT), clip={"x": 0, "y": 0, "width": 1500, "height": 760})
        print(f"wrote {RUNS_OUT}")
        for slug in [r.slug for r in runs][:12]:  # every run in the parallel coordinates
            page.get_by_label(f"compare {slug}").check()
        page.get_by_role("button", name="Parallel coordinates").click()
        page.wait_for_url("**/dashboard/parallel?**")
        line = page.locator("svg.parallel path.run").first  # the lowest loss
        x, y = line.evaluate(
            "p => { const at = p.getPointAtLength(p.getTotalLength() * 0.6);"
            " const m = p.getScreenCTM(); return [at.x * m.a + m.e, at.y * m.d + m.f]; }"
        )
        page.mouse.move(x, y)
        page.screenshot(path=str(PARALLEL_OUT), clip={"x": 0, "y": 0, "width": 1500, "height": 760})
        print(f"wrote {PARALLEL_OUT}")
        browser.close()
        session.close()


if __name__ == "__main__":
    main()
