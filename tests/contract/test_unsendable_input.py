"""What JSON or the contract cannot carry is refused before any request, naming the field:
lone surrogates, integers beyond a double, empty catalog keys, flags that are not bools,
non-iterables to ``ingest()``; credentials and hosts that no header or URL can carry are
refused when the session is made, without showing the key; timeouts must be finite."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import responses

import syvain_metrics as sm
from syvain_metrics.testing import LocalServer
from tests.conftest import experiment_wire, folder_wire
from tests.contract.test_validation import assert_names, metric

SURROGATE = "\ud800"
FSDECODED = os.fsdecode(b"ckpt-\xff.pt")  # a file name that is not UTF-8, as Python reads it
HUGE = 10**400

Call = Callable[[sm.Experiment], Any]


@pytest.fixture
def exp(session: sm.Session) -> sm.Experiment:
    return sm.Experiment(experiment_wire(), session=session)


CASES: list[Any] = [
    pytest.param(lambda e: sm.Folder.create(SURROGATE), "name", id="folder-name"),
    pytest.param(
        lambda e: sm.Folder(folder_wire(), session=e.session).rename("a" + SURROGATE),
        "name",
        id="folder-rename",
    ),
    pytest.param(lambda e: sm.Experiment.create("run" + SURROGATE), "slug", id="slug"),
    pytest.param(
        lambda e: sm.Experiment.create("run", description=SURROGATE), "description", id="desc"
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={"ckpt": FSDECODED}),
        "metadata",
        id="meta-fsdecoded",
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={FSDECODED: 1}), "metadata", id="meta-key"
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={"a": HUGE}), "metadata", id="meta-huge"
    ),
    pytest.param(
        lambda e: sm.Experiment.create("run", metadata={"a": [{"b": -HUGE}]}),
        "metadata",
        id="meta-nested-huge",
    ),
    pytest.param(lambda e: e.ingest([metric(name=SURROGATE)]), "metrics[0].name", id="ingest-name"),
    pytest.param(
        lambda e: e.ingest([metric(), metric(1, client_event_id=FSDECODED)]),
        "metrics[1].client_event_id",
        id="ingest-event-id",
    ),
    pytest.param(
        lambda e: e.ingest([metric(metadata={"a": HUGE})]), "metrics[0].metadata", id="ingest-huge"
    ),
    pytest.param(
        lambda e: e.ingest([metric(metadata={"f": FSDECODED})]),
        "metrics[0].metadata",
        id="ingest-meta-text",
    ),
    pytest.param(lambda e: e.ingest(5), "metrics", id="ingest-int"),
    pytest.param(lambda e: e.ingest(None), "metrics", id="ingest-none"),
    pytest.param(lambda e: e.annotate(SURROGATE), "annotation", id="annotation"),
    pytest.param(
        lambda e: e.annotate("note", metadata={"a": HUGE}), "metadata", id="annotation-meta"
    ),
    pytest.param(lambda e: e.catalog_values("loss", keys=[""]), "key", id="catalog-empty-key"),
    pytest.param(lambda e: e.catalog_values("loss", keys=""), "key", id="catalog-empty-str"),
    pytest.param(
        lambda e: e.catalog_values("loss", keys=[SURROGATE]), "key[0]", id="catalog-key-text"
    ),
    pytest.param(
        lambda e: e.metrics("loss", include_experiment_meta_as_of="yes"),
        "include_experiment_meta_as_of",
        id="flag-yes",
    ),
    pytest.param(
        lambda e: e.metrics("loss", include_experiment_meta_as_of=1),
        "include_experiment_meta_as_of",
        id="flag-one",
    ),
    pytest.param(lambda e: e.metrics(SURROGATE, limit=5), "metric_name", id="metric-name"),
    pytest.param(lambda e: sm.Experiment.list(search=SURROGATE), "search", id="list-search"),
]


@pytest.mark.parametrize(("call", "field"), CASES)
def test_what_json_cannot_carry_is_refused_by_field_before_sending(
    exp: sm.Experiment, mocked: responses.RequestsMock, call: Call, field: str
) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        call(exp)
    assert_names(caught.value, field)
    assert len(mocked.calls) == 0


def test_a_surrogate_in_a_path_segment_is_refused_before_sending(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    with pytest.raises(sm.MetricsValidationError, match="valid Unicode"):
        exp.catalog_values(SURROGATE)
    assert len(mocked.calls) == 0


def test_non_ascii_text_that_is_valid_goes_through(
    exp: sm.Experiment, mocked: responses.RequestsMock
) -> None:
    mocked.post(
        "http://127.0.0.1:8765/api/v1/experiments",
        json={"data": {"experiment": experiment_wire()}, "error": None},
    )
    sm.Experiment.create("run-é", metadata={"emoji": "😀", "big": 2**60, "name": "ñ"})
    assert len(mocked.calls) == 1


def test_a_bad_log_event_raises_at_once_and_later_events_still_flush(
    metrics_server: LocalServer,
) -> None:
    with metrics_server.session(spool_dir=None, flush_interval=0.05) as session:
        exp = sm.Experiment.create("logs-survive", session=session)
        with pytest.raises(sm.MetricsValidationError, match="name"):
            exp.log("loss" + SURROGATE, 1.0, step=0)
        with pytest.raises(sm.MetricsValidationError, match="metadata"):
            exp.log("loss", 1.0, step=0, metadata={"ckpt": FSDECODED})
        with pytest.raises(sm.MetricsValidationError, match="metadata"):
            exp.log("loss", 1.0, step=0, metadata={"n": HUGE})
        exp.log("loss", 2.0, step=1)
        assert exp.flush(timeout=30) == 1
        assert [p.value for p in exp.metrics("loss")] == [2.0]


# -- the session's own arguments ------------------------------------------------------------

HOST = "http://127.0.0.1:8765"


@pytest.mark.parametrize("setting", ["timeout", "ingest_timeout", "flush_timeout"])
@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0, -1, True, "5", 10**9])
def test_timeouts_must_be_finite_and_positive(setting: str, bad: Any) -> None:
    with pytest.raises(sm.MetricsValidationError) as caught:
        sm.Session("ak_x", host=HOST, spool_dir=None, **{setting: bad})
    assert_names(caught.value, setting)


SECRET = "ak_secret_part_0123"


@pytest.mark.parametrize(
    "key",
    [
        SECRET + "\r\nX-Injected: 1",
        SECRET + "\n",  # inside, after strip: a trailing newline alone is stripped
        "ak\tsecret_part_0123",
        "ak secret_part_0123",
        SECRET + "\x00",
        SECRET + "\x7f",
        SECRET + "€",
        SECRET + "😀",
    ],
)
def test_keys_no_header_can_carry_are_refused_at_construction_unseen(key: str) -> None:
    if key == SECRET + "\n":  # stripped like surrounding spaces: accepted
        sm.Session(key, host=HOST, spool_dir=None).close()
        return
    with pytest.raises(sm.MetricsApiAuthError) as caught:
        sm.Session(key, host=HOST, spool_dir=None)
    assert "secret_part" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_a_latin_1_key_is_accepted() -> None:
    sm.Session("ak_clé", host=HOST, spool_dir=None).close()


@pytest.mark.parametrize(
    "host",
    [
        "http://exa mple.com",
        "http://exam\r\nple.com",
        "http://exa\tmple.com",
        "http://exämple.com",
        "http://ex%20ample.com",
        "http://exa\x00mple.com",
        "http://[not-ipv6]",
        "http://example.com:99999",
        "ftp://example.com",
        5,
    ],
)
def test_malformed_hosts_are_auth_errors_at_construction(host: Any) -> None:
    with pytest.raises(sm.MetricsApiAuthError):
        sm.Session("ak_x", host=host, spool_dir=None)


@pytest.mark.parametrize(
    "host",
    ["http://127.0.0.1:8765", "https://metrics.syvain.com", "http://[::1]:8080", "http://a-b.c_d"],
)
def test_well_formed_hosts_are_accepted(host: str) -> None:
    sm.Session("ak_x", host=host, spool_dir=None).close()
