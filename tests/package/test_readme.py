"""The README's tour runs as written: its requests go through ``responses`` into the local
server's WSGI application (no socket), and what it reads back is what it wrote."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from requests import PreparedRequest

pytest.importorskip("werkzeug", reason="the local server needs the 'local' extra")

from werkzeug.test import Client

import syvain_metrics as sm
from syvain_metrics.server.app import MetricsApp
from syvain_metrics.server.store import Store

README = Path(__file__).resolve().parents[2] / "README.md"
HOST = "http://127.0.0.1:8765"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- readme-example: start -->", 1)[1].split(
        "<!-- readme-example: end -->"
    )[0]
    return block.strip().removeprefix("```python").removesuffix("```")


def test_readme_example_runs_against_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store()
    [api_key] = store.use_api_keys(["ak_readme_example"])
    app = Client(MetricsApp(store))
    seen: list[str] = []

    def forward(request: PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(request.url)
        seen.append(f"{request.method} {parts.path}")
        reply = app.open(
            parts.path,
            method=request.method,
            query_string=parts.query,
            data=request.body,
            headers=dict(request.headers),
        )
        return reply.status_code, dict(reply.headers), reply.get_data()

    monkeypatch.setenv("SYVAIN_METRICS_API_KEY", api_key)
    monkeypatch.setenv("SYVAIN_METRICS_HOST", HOST)
    namespace: dict[str, Any] = {}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in ("GET", "POST", "PATCH", "DELETE"):
            mock.add_callback(method, re.compile(re.escape(HOST) + "/.*"), callback=forward)
        try:
            exec(compile(readme_example(), str(README), "exec"), namespace)
            check_what_the_example_wrote(namespace, seen)
        finally:
            sm.set_default_session(None)


def check_what_the_example_wrote(namespace: dict[str, Any], seen: list[str]) -> None:
    exp, rows, both = namespace["exp"], namespace["rows"], namespace["both"]
    assert exp.refresh().status == "done"
    assert exp.folder is not None
    assert exp.folder.path_name == "baselines/mamba-v2"
    assert [m.step for m in rows] == list(range(50))
    assert rows[0].value == 1.0
    assert rows[0].metadata == {"split": "train"}
    assert rows.values == [1 / (step + 1) for step in range(50)]
    assert len(both) == 200
    assert sorted({m.experiment_slug for m in both}) == ["mamba-run-000", "mamba-run-001"]
    assert [n.text for n in exp.annotations()] == ["Checkpoint saved"]
    assert exp.catalog_values("loss", keys="split").values("split") == ["train", "valid"]
    # log() buffered all 110 points of the run and sent them in one request.
    assert seen.count(f"POST /api/v1/experiments/{exp.id}/ingest") == 1
    assert len(exp.metrics("loss")) == 110
