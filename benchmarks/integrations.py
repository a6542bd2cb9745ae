"""What a Lightning logger costs a fit: ours vs CSVLogger, MLflow's and W&B's, and no logger.

One Lightning fit (``benchmarks/integrations_fit.py``: a small MLP on CPU, ``--steps``
steps (5,000), batches of 16 from an in-memory dataset, ``num_workers=0``, ``train_loss``
and ``train_acc`` logged every step with ``log_every_n_steps=1``, validation metrics at each
epoch's end, ``torch.set_num_threads(1)`` everywhere) runs with each contender's logger:

* none: ``Trainer(logger=False)``, the baseline;
* csv: Lightning's ``CSVLogger`` (its defaults: a file write every 100 steps);
* mlflow: Lightning's ``MLFlowLogger`` on a local SQLite store (``sqlite:///<tmp>/mlflow.db``,
  its schema made before the timed fit, as it is once per database); mlflow's own defaults,
  so each ``log_metrics`` is a synchronous write (``--mlflow-async`` adds a run with
  ``synchronous=False``). ``mlflow==3.18.0`` itself pins ``mlflow-tracing==3.18.0``, which the
  package index here does not have: the venv holds ``mlflow-skinny==3.18.0`` (the same
  tracking client and SQL store) with ``sqlalchemy`` and ``alembic``;
* wandb: Lightning's ``WandbLogger(offline=True)`` with ``WANDB_MODE=offline`` (its defaults
  otherwise), then ``wandb.finish()``;
* ours: ``SyvainLogger(slug, session=sm.Session(key, host=url, spool_dir=...))`` from
  ``syvain_metrics.integrations.lightning`` against a ``syvain-metrics serve`` process on
  127.0.0.1 (a fresh database per run, started before the worker), then ``session.close()``.

MLflow and W&B run in venvs of their own (``benchmarks/.venv-mlflow``, ``.venv-wandb``:
``torch==2.13.0`` (the CPU build this machine has on disk), ``lightning`` and ``numpy`` at
this environment's versions, plus the tracker), made on first use and reused. Every
contender runs in a fresh process; its worker prints the versions it imported.

Figures per run: the whole ``trainer.fit()`` (set-up, loop, the logger's end) plus the
contender's close, and apart the loop (``on_train_start`` to ``on_train_end``). Slowdown =
median over ``--rounds`` rounds (3) of the fit+close, against the median of no logger; the
rounds are interleaved (each round runs every contender once, in an order rotated by one).
Every logger is wrapped alike to record what it was given (a list append per call); for
ours, what the server holds is counted against that: lost = logged (name, step, value) not
stored, duplicated = rows beyond one per (name, step, value).

Fault scenarios (ours only; ``--skip-faults`` leaves them out):

* outage: the ``serve`` process is SIGKILLed 2 s into the loop, stays down
  ``--outage-seconds`` (30), and a new one starts on the same port and database; the fit
  goes on through it and is told to stop ``--outage-tail`` (5) seconds after the server is
  back. Counted: exceptions raised into the fit, values lost and duplicated, the
  warnings the SDK logged, the run's final status;
* kill and resume: a fit with a ``ModelCheckpoint`` every ``--checkpoint-every`` steps (300)
  gets SIGKILL when it reports step ``--kill-at`` (2,500); ``syvain-metrics sync`` sends what
  its spool held; a new fit resumes from the last checkpoint with the same slug. Checked
  through ``exp.metrics(name, last_per_step=True)``: one run, each series holding steps
  0..N-1 each once, with the resumed fit's values where the two fits overlap and the killed
  fit's before.

Run (from the repository root; 7 to 14 minutes on 2 shared cores, as loaded as they are)::

    python benchmarks/integrations.py
    python benchmarks/integrations.py --rounds 1 --steps 1000 --skip-peers --skip-faults
    python benchmarks/integrations.py --skip-main --outage-seconds 5   # the faults only

Targets (ours): slowdown <= 3% and below both MLflow's and W&B's; in the outage, 0 raised /
0 lost / 0 duplicated; after kill, sync and resume, one curve. The exit status is 0 whether a
target passes or misses; it is non-zero only when the set-up or a worker fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training_loop import API_KEY, ServerProcess  # benchmarks/ is on sys.path as a script

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
FIT = BENCH / "integrations_fit.py"
UNUSED_HOST = "http://127.0.0.1:9"

TORCH = "2.13.0"
MLFLOW = ("mlflow-skinny", "3.18.0")
WANDB = ("wandb", "0.31.0")
OUTAGE_AFTER = 2.0  # seconds into the loop
TARGET = 0.03

Json = dict[str, Any]


# -- environments ----------------------------------------------------------------------------


def installed(python: Path, names: list[str]) -> dict[str, str]:
    probe = (
        "import importlib.metadata as m, json, sys\n"
        "found = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(found))"
    )
    done = subprocess.run(
        [str(python), "-c", probe, *names], capture_output=True, text=True, check=False
    )
    return json.loads(done.stdout) if done.returncode == 0 else {}


def ensure_env(venv: Path, pins: dict[str, str]) -> Path:
    """Create (or reuse) ``venv`` holding each ``name==version`` of ``pins`` (an empty version:
    any); return its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / ".gitignore").write_text("*\n")
    have = installed(python, list(pins))
    missing = [n for n, v in pins.items() if n not in have or (v and have[n].split("+")[0] != v)]
    if missing:
        wanted = [f"{n}=={v}" if v else n for n, v in pins.items()]
        print(f"installing {' '.join(wanted)} into {venv} ...", file=sys.stderr, flush=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *wanted], check=True)
    return python


def peer_pins(tracker: tuple[str, str], *extra: str) -> dict[str, str]:
    """The peer's tracker, and the training stack at this environment's versions."""
    here = installed(Path(sys.executable), ["lightning", "numpy"])
    pins = {"torch": TORCH, "lightning": here.get("lightning", ""), "numpy": here.get("numpy", "")}
    pins.update({tracker[0]: tracker[1]}, **dict.fromkeys(extra, ""))
    return pins


def machine() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    try:
        load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "?"
    return [
        f"machine: {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"load average at the start {load}",
        f"python {platform.python_version()}; syvain-metrics at {commit or '?'}",
    ]


# -- one fit in a worker process ---------------------------------------------------------------


class Fit:
    """A worker running one fit; its JSON lines are read by a thread; killed on exit."""

    def __init__(self, python: Path, kind: str, options: list[str], log: Path) -> None:
        self.kind = kind
        self.log = log
        env = dict(os.environ)
        if Path(python) != Path(sys.executable):
            env.pop("PYTHONPATH", None)  # a peer venv imports nothing of this checkout
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [str(python), str(FIT), "--kind", kind, *options],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        self._events: queue.Queue[Json | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                sys.stderr.write(f"[{self.kind}] {line}")
        self._events.put(None)

    def expect(self, event: str, timeout: float) -> Json:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise SystemExit(
                    f"the {self.kind} fit sent no {event!r} in {timeout:g} s"
                ) from None
            if message is None:
                code = self.process.wait()
                tail = self.log.read_text()[-3000:]
                raise SystemExit(f"the {self.kind} fit ended (exit {code}):\n{tail}")
            if message.get("event") == event:
                return message

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Fit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- what the server holds against what was logged ------------------------------------------


def recorded(path: Path) -> list[tuple[int, Json]]:
    """The ``(step, metrics)`` calls a worker recorded (a torn last line is left out)."""
    calls = []
    for line in path.read_text().splitlines():
        try:
            step, metrics = json.loads(line)
        except ValueError:
            continue
        calls.append((step, metrics))
    return calls


def reader(url: str, spool: Path) -> Any:
    import syvain_metrics as sm

    return sm.Session(API_KEY, host=url, spool_dir=spool, page_size=100_000)


def the_run(session: Any, slug: str) -> Any:
    import syvain_metrics as sm

    found = list(sm.Experiment.list(slug=slug, session=session))
    if len(found) != 1:
        raise SystemExit(f"{len(found)} experiments have the slug {slug!r}, not 1")
    return found[0]


def count(url: str, slug: str, record: Path, spool: Path) -> Json:
    """Logged (distinct name, step, value), stored rows, lost and duplicated, the status."""
    logged = {(n, s, float(v)) for s, m in recorded(record) for n, v in m.items()}
    with reader(url, spool) as session:
        exp = the_run(session, slug)
        rows = exp.metrics()
        stored = list(zip(rows.names, rows.steps, rows.values, strict=True))
        status = exp.status
    kept = set(stored)
    return {
        "logged": len(logged),
        "stored": len(stored),
        "lost": len(logged - kept),
        "duplicated": len(stored) - len(kept),
        "unexpected": len(kept - logged),
        "status": status,
    }


# -- the scenarios -------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    kind: str
    round: int
    result: Json
    ready: Json
    counted: Json = field(default_factory=dict)
    note: str = ""

    @property
    def total(self) -> float:
        return float(self.result["fit_s"]) + float(self.result["close_s"])


def progress(message: str) -> None:
    print(f"{message} ...", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, pythons: dict[str, Path]) -> None:
        self.args = args
        self.tmp = tmp
        self.pythons = pythons
        self.runs: list[Run] = []
        self.versions: dict[str, Json] = {}

    def options(self, name: str, steps: int, url: str = UNUSED_HOST, **more: Any) -> list[str]:
        out = self.tmp / name
        options = ["--steps", str(steps), "--out", str(out), "--slug", f"bench-{name}"]
        options += [
            "--host",
            url,
            "--api-key",
            API_KEY,
            "--spool-dir",
            str(self.tmp / f"spool-{name}"),
        ]
        for key, value in more.items():
            flag = "--" + key.replace("_", "-")
            options += [flag] if value is True else [flag, str(value)]
        return options

    def fit(self, kind: str, name: str, options: list[str], during: Any = None) -> Json:
        """One worker's fit to its result; ``during(fit)`` runs once the fit is ready."""
        with Fit(self.pythons[kind], kind, options, self.tmp / f"{name}.log") as worker:
            ready = worker.expect("ready", 300)
            self.versions.setdefault(kind, ready["versions"])
            if during is not None:
                during(worker)
            result = worker.expect("result", 600 + 0.05 * self.args.steps)
            worker.process.wait(timeout=120)
        if result["error"]:
            print(f"[{kind}] the fit raised: {result['error']}", file=sys.stderr)
        result["ready"] = ready
        return result

    def main_run(self, kind: str, round_no: int) -> Run:
        progress(f"round {round_no}: {kind} ({self.args.steps:,} steps)")
        name = f"main-{kind}-{round_no}"
        record = self.tmp / f"{name}.rec"
        if kind != "ours":
            result = self.fit(kind, name, self.options(name, self.args.steps, record=record))
            run = Run("main", kind, round_no, result, result["ready"])
        else:
            with ServerProcess(self.tmp / f"{name}.sqlite") as server:
                options = self.options(name, self.args.steps, server.url, record=record)
                result = self.fit(kind, name, options)
                run = Run("main", kind, round_no, result, result["ready"])
                run.counted = count(server.url, f"bench-{name}", record, self.tmp / "reader")
        if result["steps"] != self.args.steps:
            raise SystemExit(f"the {kind} fit ran {result['steps']} steps, not {self.args.steps}")
        self.runs.append(run)
        return run

    def main_rounds(self, kinds: list[str]) -> None:
        for round_no in range(1, self.args.rounds + 1):
            shift = (round_no - 1) % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                self.main_run(kind, round_no)

    def outage(self) -> Run:
        down_for, tail = float(self.args.outage_seconds), float(self.args.outage_tail)
        progress(f"outage: ours (the server down {down_for:g} s, the fit ends {tail:g} s later)")
        name = "outage"
        record, stop = self.tmp / f"{name}.rec", self.tmp / f"{name}.stop"
        timeline: list[str] = []

        def during(worker: Fit) -> None:
            worker.expect("loop_started", 120)
            at = time.monotonic()
            time.sleep(OUTAGE_AFTER)
            server.process.kill()  # SIGKILL: no clean shutdown, requests cut mid-way
            server.process.wait()
            down = time.monotonic()
            time.sleep(down_for)
            server.restart()
            up = time.monotonic()
            time.sleep(tail)
            stop.touch()  # the fit ends at its next 20th step
            timeline.append(
                f"server SIGKILLed {down - at:.1f} s into the loop, back on the same port and "
                f"database at +{up - at:.1f} s, the fit told to stop at +{time.monotonic() - at:.1f} s"
            )

        with ServerProcess(self.tmp / f"{name}.sqlite") as server:
            options = self.options(name, 10**8, server.url, record=record, stop_file=stop)
            begun = time.monotonic()
            result = self.fit("ours", name, options, during)
            took = time.monotonic() - begun
            run = Run("outage", "ours", 0, result, result["ready"])
            run.counted = count(server.url, f"bench-{name}", record, self.tmp / "reader")
        run.note = f"{timeline[0] if timeline else ''}; the worker ended after {took:.1f} s"
        self.runs.append(run)
        return run

    def kill_and_resume(self) -> Run:
        steps, kill_at, every = self.args.steps, self.args.kill_at, self.args.checkpoint_every
        if not 0 < every < kill_at < steps:
            raise SystemExit("need 0 < --checkpoint-every < --kill-at < --steps")
        progress(f"kill and resume: ours ({steps:,} steps, SIGKILL at step {kill_at:,})")
        name, slug = "resume", "bench-resume"
        first, second = self.tmp / "resume-1.rec", self.tmp / "resume-2.rec"
        with ServerProcess(self.tmp / f"{name}.sqlite") as server:
            options = self.options(name, steps, server.url, checkpoint_every=every)
            options += ["--announce-step", str(kill_at), "--record", str(first), "--live-record"]
            with Fit(self.pythons["ours"], "ours", options, self.tmp / "resume-1.log") as fit:
                fit.expect("step", 600)
                fit.process.send_signal(signal.SIGKILL)
                fit.process.wait()
            killed = recorded(first)
            killed_step = max(s for s, _ in killed)
            checkpoints = sorted(
                (self.tmp / name / "checkpoints").glob("step=*.ckpt"),
                key=lambda p: int(p.stem.split("=")[1]),
            )
            if not checkpoints:
                raise SystemExit("the killed fit left no checkpoint")
            resume_step = int(checkpoints[-1].stem.split("=")[1])
            sync = [sys.executable, "-m", "syvain_metrics.cli", "sync", "--spool-dir"]
            sync += [str(self.tmp / f"spool-{name}"), "--api-key", API_KEY, "--host", server.url]
            begun = time.monotonic()
            synced = subprocess.run(sync, capture_output=True, text=True, check=False)
            sync_s = time.monotonic() - begun
            said = (synced.stdout + synced.stderr).strip().replace("\n", " / ")
            options = self.options(name, steps, server.url, checkpoint_every=every)
            options += ["--resume-from", str(checkpoints[-1]), "--record", str(second)]
            result = self.fit("ours", "resume-2", options)
            run = Run("resume", "ours", 0, result, result["ready"])
            run.counted = self.one_curve(server.url, slug, killed, recorded(second), resume_step)
        run.note = (
            f"SIGKILL at step ~{killed_step:,} (the last step the killed fit recorded), the last "
            f"checkpoint at step {resume_step:,} ({killed_step - resume_step} steps before); "
            f"`syvain-metrics sync` exit {synced.returncode} "
            f"in {sync_s:.1f} s: {said[:300]}"
        )
        self.runs.append(run)
        return run

    def one_curve(
        self,
        url: str,
        slug: str,
        killed: list[tuple[int, Json]],
        resumed: list[tuple[int, Json]],
        resume_step: int,
    ) -> Json:
        """Each series read with ``last_per_step=True`` against the killed fit's values before
        the resume step and the resumed fit's after."""
        expected: dict[str, dict[int, float]] = {}
        for step, metrics in killed:
            if step < resume_step:
                for metric, value in metrics.items():
                    expected.setdefault(metric, {})[step] = float(value)
        overlap: dict[str, int] = {}
        differ = 0
        for step, metrics in resumed:
            for metric, value in metrics.items():
                series = expected.setdefault(metric, {})
                before = [float(m[metric]) for s, m in killed if s == step and metric in m]
                if before and step >= resume_step:
                    overlap[metric] = overlap.get(metric, 0) + 1
                    differ += any(b != float(value) for b in before)
                series[step] = float(value)
        checks: Json = {"series": {}, "overlap_steps": max(overlap.values(), default=0)}
        checks["overlap_values_differing"] = differ
        with reader(url, self.tmp / "reader") as session:
            exp = the_run(session, slug)
            checks["status"] = exp.status
            for metric, series in sorted(expected.items()):
                rows = exp.metrics(metric, last_per_step=True)
                got = list(zip(rows.steps, rows.values, strict=True))
                steps = [s for s, _ in got]
                checks["series"][metric] = {
                    "missing": ranges(set(series) - set(steps)),
                    "points": len(got),
                    "expected": len(series),
                    "each_once": len(steps) == len(set(steps)),
                    "same_steps": sorted(steps) == sorted(series),
                    "right_values": all(series.get(s) == v for s, v in got),  # type: ignore[arg-type]
                }
        checks["one_curve"] = all(
            c["each_once"] and c["same_steps"] and c["right_values"]
            for c in checks["series"].values()
        )
        return checks


def ranges(steps: set[int]) -> str:
    """``{3, 4, 5, 9}`` as ``"3..5, 9"``."""
    spans: list[list[int]] = []
    for step in sorted(steps):
        if spans and step == spans[-1][1] + 1:
            spans[-1][1] = step
        else:
            spans.append([step, step])
    return ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in spans)


# -- report ----------------------------------------------------------------------------------------


def pct(value: float) -> str:
    return f"{value:+.1%}"


def report(bench: Bench, kinds: list[str]) -> None:
    runs = [r for r in bench.runs if r.scenario == "main"]
    print()
    for line in machine():
        print(line)
    for kind in kinds:
        if kind in bench.versions:
            shown = ", ".join(f"{k} {v}" for k, v in bench.versions[kind].items())
            print(f"  {kind:12} {shown}")
    if runs:
        print(
            f"\nA Lightning fit of {bench.args.steps:,} steps (MLP 32-64-64-4, batch 16, "
            "train_loss + train_acc every step, validation each epoch), torch 1 thread, "
            f"{bench.args.rounds} interleaved round(s)\n"
        )
        print(
            f"{'run':16} {'fit+close s':>11} {'loop s':>7} {'set-up s':>8} {'end s':>6} "
            f"{'close s':>7} {'cpu s':>6} {'logger s':>8} {'p50 us':>7} {'p99 us':>7}  "
            "what the server holds"
        )
        for run in runs:
            r, c = run.result, run.counted
            held = (
                f"{c['stored']:,} rows of {c['logged']:,} logged: lost {c['lost']}, "
                f"duplicated {c['duplicated']}"
                if c
                else ""
            )
            print(
                f"{run.kind + ' #' + str(run.round):16} {run.total:11.2f} {r['loop_s']:7.2f} "
                f"{r['setup_s']:8.2f} {r['end_s']:6.2f} {r['close_s']:7.2f} {r['cpu_s']:6.2f} "
                f"{r.get('logger_s', 0):8.2f} {r.get('logger_p50_us', 0):7.1f} "
                f"{r.get('logger_p99_us', 0):7.1f}  {held}"
            )
        median = {
            kind: [
                statistics.median(figure(r) for r in runs if r.kind == kind)
                for figure in (
                    lambda r: r.total,
                    lambda r: float(r.result["loop_s"]),
                    lambda r: float(r.result["cpu_s"]),
                    lambda r: float(r.result.get("logger_p50_us", 0)),
                )
            ]
            for kind in kinds
            if any(r.kind == kind for r in runs)
        }
        base, base_loop, base_cpu, _ = median.get("none", [float("nan")] * 4)
        print(
            f"\n{'median of rounds':16} {'fit+close s':>11} {'slowdown':>9} {'x none':>7} "
            f"{'loop s':>7} {'loop':>7} {'ms/step':>8} {'cpu s':>6} {'cpu':>7} {'p50 us':>7}"
        )
        for kind, (total, loop, cpu, p50) in median.items():
            print(
                f"{kind:16} {total:11.2f} {pct(total / base - 1):>9} {total / base:7.2f} "
                f"{loop:7.2f} {pct(loop / base_loop - 1):>7} "
                f"{1000 * loop / bench.args.steps:8.3f} {cpu:6.2f} {pct(cpu / base_cpu - 1):>7} "
                f"{p50:7.1f}"
            )
        print(
            "(slowdown: of the median fit+close against no logger's; loop: the same for the "
            "loop alone; cpu: the fit's process only, not the server's nor wandb-core's; "
            "p50 us: the training thread's time in log_metrics() + save() per call)"
        )
        if "ours" in median and "none" in median:
            ours = median["ours"][0] / base - 1
            print(
                f"\nours: slowdown {pct(ours)} (target <= {TARGET:.0%}: "
                f"{'met' if ours <= TARGET else 'MISSED'})"
            )
            for peer in ("mlflow", "wandb"):
                if peer in median:
                    theirs = median[peer][0] / base - 1
                    print(
                        f"ours below {peer} ({pct(theirs)}): {'met' if ours < theirs else 'MISSED'}"
                    )
    for run in bench.runs:
        if run.scenario == "outage":
            r, c = run.result, run.counted
            raised = 1 if r["error"] else 0
            ok = raised == 0 and c["lost"] == 0 and c["duplicated"] == 0
            print(
                f"\noutage ({r['steps']:,} steps, server down {bench.args.outage_seconds:g} s): "
                f"raised {raised}, lost {c['lost']}, duplicated {c['duplicated']} "
                f"({c['stored']:,} rows for {c['logged']:,} logged); SDK warnings "
                f"{r['warnings']}; run status {c['status']}; loop {r['loop_s']:.1f} s, the "
                f"fit's end {r['end_s']:.1f} s, close {r['close_s']:.1f} s; log_metrics() "
                f"p50 / p99 {r['logger_p50_us']:.0f} / {r['logger_p99_us']:.0f} us "
                f"-> {'met' if ok else 'MISSED'}"
            )
            print(f"  {run.note}")
            for said in r.get("first_warnings", []):
                print(f"  SDK warning: {said[:160]}")
        if run.scenario == "resume":
            c = run.counted
            print(f"\nkill, sync, resume: {run.note}")
            print(
                f"  resumed fit: {run.result['steps']:,} steps to step "
                f"{run.result['last_step']:,}, raised {1 if run.result['error'] else 0}; "
                f"run status {c['status']}; {c['overlap_steps']} steps logged by both fits "
                f"({c['overlap_values_differing']} values differing between them)"
            )
            for metric, s in c["series"].items():
                print(
                    f"  {metric:12} {s['points']:,} points (expected {s['expected']:,}): "
                    f"each step once {'yes' if s['each_once'] else 'NO'}, the right steps "
                    f"{'yes' if s['same_steps'] else 'NO'}, the right values "
                    f"{'yes' if s['right_values'] else 'NO'}"
                    + (f"; missing steps {s['missing']}" if s["missing"] else "")
                )
            print(f"  one curve: {'met' if c['one_curve'] else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--skip-peers", action="store_true", help="no MLflow, no W&B")
    parser.add_argument("--skip-faults", action="store_true", help="no outage, no kill/resume")
    parser.add_argument("--skip-main", action="store_true", help="only the fault scenarios")
    parser.add_argument("--mlflow-async", action="store_true", help="also MLflow, asynchronous")
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument(
        "--outage-tail", type=float, default=5.0, help="seconds the fit runs after (5)"
    )
    parser.add_argument("--kill-at", type=int, default=2_500)
    parser.add_argument("--checkpoint-every", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    began = time.monotonic()

    kinds = ["none", "csv", "ours"]
    pythons = {kind: Path(sys.executable) for kind in kinds}
    if not args.skip_peers:
        venv = BENCH / ".venv-mlflow"
        pythons["mlflow"] = ensure_env(venv, peer_pins(MLFLOW, "sqlalchemy", "alembic"))
        pythons["wandb"] = ensure_env(BENCH / ".venv-wandb", peer_pins(WANDB))
        kinds = ["none", "csv", "mlflow", "wandb", "ours"]
        if args.mlflow_async:
            pythons["mlflow-async"] = pythons["mlflow"]
            kinds.insert(3, "mlflow-async")
    tmp = Path(tempfile.mkdtemp(prefix="bench-integrations-"))
    bench = Bench(args, tmp, pythons)
    try:
        if not args.skip_main:
            bench.main_rounds(kinds)
        if not args.skip_faults:
            bench.outage()
            bench.kill_and_resume()
        report(bench, kinds)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\none full run took {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
