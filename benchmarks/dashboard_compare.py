"""The dashboard's compare page at sweep scale: 100 runs x 10 series x 10,000 points.

Target: the page interactive (every chart drawn, controls answering) within 2 s of
navigation in headless Chromium, with each series reduced on the server as before.

What it does:

1. Builds the data once in a local server file (``--db``, by default in the system's
   temporary directory; reused when present, since it takes a minute or two): ``--runs``
   runs, each with 5 metrics x ``split`` train/valid = 10 sub-series of ``--points`` points,
   one point every 100 ms of client time, run metadata ``lr`` (log-uniform), ``batch_size``
   and ``optimizer``. Ingested in bulk straight into the store (50,000 events per call),
   written to ``<db>.partial`` and renamed when complete.
2. Serves that file with ``python -m syvain_metrics.cli serve --db ... --port 0`` from this
   working tree on 127.0.0.1, signs a fresh Chromium context in with the printed link and
   opens the compare page of every run. Times, from navigation start (the page's own
   ``performance.now()``):
   - ``ready``: the page's ``data-state="ready"`` marker, set after every chart's first
     draw (and ``1st``: its first chart drawn, ``data-first-at``). The first visit after the server starts ("cold": every series is reduced, about
     1 µs per point) and a second one in a new tab ("warm": the server kept the reductions,
     as it does until a run's events change);
   - the first redraw after a control change, on the warm page: the smoothing slider moved
     to 0.8, then one run toggled off in the legend.
3. The page before this change, for comparison: ``--baseline-ref`` (default ``main``) is
   checked out with ``git worktree add --detach`` into a temporary directory and served the
   same way (``PYTHONPATH`` set to it). Its compare page allows at most 64 runs and draws
   one metric, so it is given the first 64 runs; "ready" is every chart's ``data-state``
   being ``drawn`` (polled each animation frame), and its control change is the log-scale
   checkbox (it has no smoothing or toggles). ``--no-baseline`` skips it.

Prints one table, with each ready time's ratio to the 2 s target. Nothing is asserted: speed
is measured here, never in a test. Only 127.0.0.1 is contacted.

    PYTHONPATH=$PWD python benchmarks/dashboard_compare.py [--runs 100 --points 10000]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "ak_local_dashboard_compare_bench"
CHROMIUM = os.environ.get("SYVAIN_METRICS_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TARGET_S = 2.0
METRICS = ("loss", "accuracy", "grad_norm", "perplexity", "lr_scale")
BASELINE_MAX_RUNS = 64
VIEWPORT = {"width": 1400, "height": 900}

# Resolves once every chart of either page has drawn, with performance.now() at that moment.
READY_JS = """() => new Promise(resolve => {
  const check = () => {
    const root = document.getElementById('compare');
    if (root && root.dataset.state === 'ready') return resolve(Number(root.dataset.readyAt));
    const old = [...document.querySelectorAll('section.chart')];
    if (!root && old.length && old.every(s => s.dataset.state === 'drawn'))
      return resolve(performance.now());
    requestAnimationFrame(check);
  };
  check();
})"""

# Changes one control and resolves with the time to the first redraw after it.
CONTROL_JS = """(what) => new Promise(resolve => {
  const root = document.getElementById('compare');
  const t0 = performance.now();
  if (!root) {  // the page before: its log-scale checkbox redraws every chart
    const box = document.querySelector('.log-scale');
    box.checked = !box.checked;
    box.dispatchEvent(new Event('change'));
    requestAnimationFrame(() => resolve(performance.now() - t0));
    return;
  }
  const before = root.dataset.draws;
  if (what === 'smooth') {
    const slider = document.getElementById('cmp-smooth');
    slider.value = '0.8';
    slider.dispatchEvent(new Event('input'));
  } else {
    document.querySelector('#cmp-runs button.cmp-run').click();
  }
  const wait = () => root.dataset.draws !== before
    ? resolve(Number(root.dataset.drawnAt) - t0) : requestAnimationFrame(wait);
  wait();
})"""


def build(db: Path, runs: int, points: int) -> None:
    """The data set in ``db``: built in ``<db>.partial`` and renamed once complete."""
    sys.path.insert(0, str(ROOT))
    from syvain_metrics.server.store import Store

    partial = db.with_name(db.name + ".partial")
    for leftover in db.parent.glob(db.name + ".partial*"):
        leftover.unlink()
    store = Store(str(partial))
    [key] = store.use_api_keys([API_KEY])
    org = store.authenticate(key).org_id
    rng = random.Random(23)
    base = 1_790_000_000_000
    started = time.monotonic()
    for r in range(runs):
        lr = 10 ** rng.uniform(-4.5, -1.5)
        meta = {
            "lr": round(lr, 7),
            "batch_size": rng.choice([32, 64, 128]),
            "optimizer": rng.choice(["adam", "sgd"]),
        }
        exp = store.create_experiment(org, {"slug": f"sweep-{r:03d}", "metadata": meta})
        start = base + r * 3_600_000
        speed = 0.5 + 2000 * lr
        batch: list[dict[str, Any]] = []
        for m, name in enumerate(METRICS):
            for split, shift in (("train", 0.0), ("valid", 0.08)):
                for s in range(points):
                    decay = math.exp(-s * speed / points * 5)
                    value = (m + 1) * (0.3 + decay) + shift + rng.random() * 0.05
                    batch.append(
                        {
                            "client_event_id": f"{name}/{split}/{s}",
                            "name": name,
                            "value": value,
                            "step": s,
                            "metadata": {"split": split},
                            "timestamp_ms": start + s * 100,
                        }
                    )
                    if len(batch) >= 50_000:
                        store.ingest(org, exp.id, batch)
                        batch = []
        if batch:
            store.ingest(org, exp.id, batch)
        if (r + 1) % 10 == 0:
            done = (r + 1) * len(METRICS) * 2 * points
            rate = done / (time.monotonic() - started)
            print(f"  built {r + 1}/{runs} runs ({rate:,.0f} events/s)", flush=True)
    store.close()
    partial.rename(db)
    for extra in db.parent.glob(db.name + ".partial-*"):
        extra.rename(db.parent / extra.name.replace(".partial", ""))


class Served:
    """``syvain-metrics serve`` of ``db`` from the code at ``tree``."""

    def __init__(self, tree: Path, db: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        env = {k: v for k, v in env.items() if not k.startswith("SYVAIN_METRICS_")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "syvain_metrics.cli",
                "serve",
                "--db",
                str(db),
                "--port",
                "0",
                "--api-key",
                API_KEY,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(tree),
        )
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()
        printed = self.process.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+)", banner)
        if found is None:
            self.stop()
            raise SystemExit(f"the server did not start: {banner!r} {printed!r}")
        self.origin = found.group(1)
        self.link = printed.removeprefix("Dashboard: ").strip()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def experiment_ids(db: Path, count: int) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from syvain_metrics.server.store import Store

    store = Store(str(db))
    [key] = store.use_api_keys([API_KEY])
    org = store.authenticate(key).org_id
    found = store.list_experiments(org, limit=1000)
    store.close()
    ordered = sorted(found, key=lambda e: e.slug)
    return [e.id for e in ordered[:count]]


def measure(browser: Any, served: Served, ids: list[str], new_page: bool) -> dict[str, Any]:
    """Cold and warm ready times (s) and control responses (ms) of one server's page."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    reply = page.goto(served.link)
    assert reply is not None
    assert reply.ok
    page.wait_for_url(lambda url: "/dashboard/login" not in url)
    url = f"{served.origin}/dashboard/compare?experiments={','.join(ids)}"
    out: dict[str, Any] = {"runs": len(ids)}
    for visit in ("cold", "warm"):
        tab = context.new_page()
        tab.set_default_timeout(600_000)
        tab.goto(url, wait_until="commit")
        out[visit] = tab.evaluate(READY_JS) / 1000
        first = tab.get_attribute("#compare", "data-first-at") if new_page else None
        out[f"{visit}_first"] = float(first) / 1000 if first else out[visit]
        if visit == "warm":
            if new_page:
                out["charts"] = tab.evaluate("window.syvainCompare.charts().length")
                out["lines"] = tab.evaluate(
                    "window.syvainCompare.charts().reduce((n, c) => n + c.runs.length, 0)"
                )
            else:
                out["charts"] = tab.locator("section.chart").count()
                out["lines"] = tab.locator("path.series").count()
            out["smooth"] = tab.evaluate(CONTROL_JS, "smooth")
            out["toggle"] = tab.evaluate(CONTROL_JS, "toggle") if new_page else None
        tab.close()
    context.close()
    return out


def baseline_tree(ref: str, where: Path) -> Path:
    tree = where / "baseline"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
    )
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    db = args.db or Path(tempfile.gettempdir()) / (
        f"syvain_metrics_dashboard_compare_{args.runs}x{args.points}.sqlite"
    )
    if db.exists():
        print(f"data: reusing {db}")
    else:
        total = args.runs * len(METRICS) * 2 * args.points
        print(f"data: building {db} ({total:,} events)")
        began = time.monotonic()
        build(db, args.runs, args.points)
        print(f"data: built in {time.monotonic() - began:.0f} s")
    ids = experiment_ids(db, args.runs)

    from playwright.sync_api import sync_playwright

    rows: list[tuple[str, dict[str, Any]]] = []
    scratch = Path(tempfile.mkdtemp(prefix="dashboard-compare-"))
    tree = None
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            served = Served(ROOT, db)
            try:
                rows.append(("this tree", measure(browser, served, ids, new_page=True)))
            finally:
                served.stop()
            if not args.no_baseline:
                tree = baseline_tree(args.baseline_ref, scratch)
                served = Served(tree, db)
                try:
                    first = ids[:BASELINE_MAX_RUNS]
                    rows.append((args.baseline_ref, measure(browser, served, first, False)))
                finally:
                    served.stop()
            browser.close()
    finally:
        if tree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(
        f"compare page, {args.runs} runs x 10 series x {args.points:,} points "
        f"(target: ready <= {TARGET_S:.0f} s)"
    )
    head = (
        f"{'page':<12} {'runs':>4} {'charts':>6} {'lines':>6} {'cold 1st':>8} {'cold s':>7}"
        f" {'/2 s':>5} {'warm 1st':>8} {'warm s':>7} {'/2 s':>5} {'smooth ms':>9} {'toggle ms':>9}"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows:
        toggle = "n/a" if r["toggle"] is None else f"{r['toggle']:.0f}"
        print(
            f"{name:<12} {r['runs']:>4} {r['charts']:>6} {r['lines']:>6}"
            f" {r['cold_first']:>8.2f} {r['cold']:>7.2f} {r['cold'] / TARGET_S:>5.2f}"
            f" {r['warm_first']:>8.2f} {r['warm']:>7.2f} {r['warm'] / TARGET_S:>5.2f}"
            f" {r['smooth']:>9.0f} {toggle:>9}"
        )
    if len(rows) == 2:
        print(
            f"(the page before allows at most {BASELINE_MAX_RUNS} runs and draws one metric;"
            " its control is the log-scale checkbox)"
        )


if __name__ == "__main__":
    main()
