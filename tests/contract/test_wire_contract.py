"""Every operation of the wire contract, request by request.

Each test registers the example response of ``tests/wire_examples.json`` with ``responses``,
drives the SDK's public API, and checks the exact request the SDK sent against the example:
method, raw (percent-encoded) path, query pairs in order, JSON body (key presence included),
headers and the timeout handed to ``requests``. Then it checks what the SDK returned.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

import syvain_metrics as sm
from tests.conftest import API, API_KEY, HOST, envelope, experiment_wire, key_wire, row_wire

TIMEOUT = 7.0
INGEST_TIMEOUT = 42.0

EXP_ID = "0f8e2c1a-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
OTHER_EXP_ID = "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d"
ROOT_FOLDER_ID = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
MAMBA_FOLDER_ID = "7b0f6a52-2d43-4a57-9d0e-3c1f2b6c9a10"

Exchange = dict[str, Any]


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def wire(sleeps: list[float], clock: Any) -> Iterator[sm.Session]:
    """A default session whose two timeouts differ from the defaults and from each other."""
    created = sm.Session(
        API_KEY,
        host=HOST,
        timeout=TIMEOUT,
        ingest_timeout=INGEST_TIMEOUT,
        retry=sm.RetryPolicy(sleep=sleeps.append, jitter=0),
        clock=clock,
    )
    sm.set_default_session(created)
    yield created
    sm.set_default_session(None)


def exchange(wire_examples: dict[str, list[Exchange]], operation: str, index: int = 0) -> Exchange:
    return copy.deepcopy(wire_examples[operation][index])


def register(mocked: responses.RequestsMock, ex: Exchange) -> None:
    """Answer the example's request (by method and path) with the example's response."""
    request, response = ex["request"], ex["response"]
    mocked.add(
        request["method"],
        f"{HOST}{request['path']}",
        json=response["body"],
        status=response["status"],
    )


def data_of(ex: Exchange) -> Any:
    return ex["response"]["body"]["data"]


def sent_path(call: Any) -> str:
    return urlsplit(call.request.url).path


def sent_query(call: Any) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(call.request.url).query, keep_blank_values=True)


def sent_json(call: Any) -> Any:
    body = call.request.body
    if body is None or body == b"" or body == "":
        return None
    return json.loads(body)


def assert_request(
    call: Any,
    ex: Exchange,
    *,
    token: str = API_KEY,
    timeout: float = TIMEOUT,
) -> None:
    """The request the SDK sent is the example's request, header rules included."""
    expected = ex["request"]
    request = call.request
    assert request.method == expected["method"]
    assert sent_path(call) == expected["path"]
    assert sent_query(call) == [tuple(pair) for pair in expected["query"]]
    assert sent_json(call) == expected["json"]

    headers = request.headers
    assert headers["Authorization"] == f"Bearer {token}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert "syvain-metrics" in headers["User-Agent"]
    if "Idempotency-Key" in expected["headers"]:
        assert headers.get("Idempotency-Key"), "POST/PATCH must carry an Idempotency-Key"
    else:
        assert "Idempotency-Key" not in headers
    assert request.req_kwargs["timeout"].total == timeout  # one deadline per exchange


def experiment_from(ex: Exchange, session: sm.Session) -> sm.Experiment:
    """The experiment of an example's ``{experiment}`` payload, bound to ``session``."""
    return sm.Experiment(data_of(ex)["experiment"], session=session)


def folder_from(data: dict[str, Any], session: sm.Session) -> sm.Folder:
    return sm.Folder(data, session=session)


# -- 1 auth status -------------------------------------------------------------------------


def test_auth_status(wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any) -> None:
    ex = exchange(wire_examples, "auth_status")
    register(mocked, ex)

    status = sm.whoami()

    assert len(mocked.calls) == 1
    assert_request(mocked.calls[0], ex)
    assert status.kind == "api_key"
    assert status.organization_id == data_of(ex)["organization"]["id"]
    assert status.organization_name == "Acme ML"


# -- 2..5 folders --------------------------------------------------------------------------


def test_list_folders(wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any) -> None:
    ex = exchange(wire_examples, "list_folders")
    register(mocked, ex)

    folders = sm.Folder.list(path="baselines/mamba")

    assert_request(mocked.calls[0], ex)
    assert [f.id for f in folders] == [MAMBA_FOLDER_ID]
    assert folders[0].path_name == "baselines/mamba"
    assert folders[0].name == "mamba"
    assert folders[0].parent_id_path == [ROOT_FOLDER_ID]
    assert folders[0].parent_id == ROOT_FOLDER_ID


def test_create_folder(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "create_folder")
    register(mocked, ex)

    folder = sm.Folder.create("mamba", parent=ROOT_FOLDER_ID)

    assert_request(mocked.calls[0], ex)
    assert isinstance(folder, sm.Folder)
    assert folder.id == MAMBA_FOLDER_ID
    assert folder.path_name == "baselines/mamba"


def test_create_folder_with_a_folder_object_as_parent(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "create_folder")
    register(mocked, ex)
    parent = folder_from(data_of(exchange(wire_examples, "get_folder"))["folder"], wire)

    parent.create_subfolder("mamba")

    assert_request(mocked.calls[0], ex)


def test_create_root_folder_sends_no_parent(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("POST", f"{API}/folders", json=envelope({"folder": _folder("f-1", "runs")}))

    sm.Folder.create("runs")

    body = sent_json(mocked.calls[0])
    assert body["name"] == "runs"
    # Contract 5.3: ``parent_id`` null or absent both mean the root; nothing else may be sent.
    assert body.get("parent_id") is None
    assert set(body) <= {"name", "parent_id"}


def test_get_folder(wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any) -> None:
    ex = exchange(wire_examples, "get_folder")
    register(mocked, ex)

    folder = sm.Folder.get(ROOT_FOLDER_ID)

    assert_request(mocked.calls[0], ex)
    assert folder.id == ROOT_FOLDER_ID
    assert folder.name == "baselines"
    assert folder.parent_id_path == []
    assert folder.parent_id is None
    assert [f.id for f in folder.subfolders] == [MAMBA_FOLDER_ID]
    assert folder.experiments == []


def test_rename_folder_sends_only_the_name(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "rename_folder")
    register(mocked, ex)
    folder = folder_from(data_of(exchange(wire_examples, "create_folder"))["folder"], wire)

    returned = folder.rename("mamba-v2")

    assert_request(mocked.calls[0], ex)
    assert "parent_id" not in sent_json(mocked.calls[0])
    assert returned is folder
    assert folder.name == "mamba-v2"
    assert folder.path_name == "baselines/mamba-v2"


def test_move_folder_to_root_sends_parent_id_null(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "move_folder")
    register(mocked, ex)
    folder = folder_from(data_of(exchange(wire_examples, "create_folder"))["folder"], wire)

    folder.move(None)

    assert_request(mocked.calls[0], ex)
    body = sent_json(mocked.calls[0])
    assert "parent_id" in body
    assert body["parent_id"] is None
    assert "name" not in body
    assert folder.parent_id_path == []
    assert folder.parent_id is None
    assert folder.path_name == "mamba"


def test_move_folder_under_a_folder_object(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    moved = _folder(MAMBA_FOLDER_ID, "mamba", parents=["p-2"])
    mocked.add("PATCH", f"{API}/folders/{MAMBA_FOLDER_ID}", json=envelope({"folder": moved}))
    folder = folder_from(data_of(exchange(wire_examples, "create_folder"))["folder"], wire)
    target = folder_from(_folder("p-2", "other"), wire)

    folder.move(target)

    assert sent_json(mocked.calls[0]) == {"parent_id": "p-2"}
    assert folder.parent_id == "p-2"


# -- 6..10 experiments ---------------------------------------------------------------------


def test_list_experiments(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "list_experiments")
    register(mocked, ex)

    found = sm.Experiment.list(status="running", search="mamba", limit=20)

    assert_request(mocked.calls[0], ex)
    assert [e.id for e in found] == [EXP_ID]
    assert found[0].slug == "mamba-run-001"
    assert found[0].status == "running"
    assert found[0].metadata == {"model": "mamba", "seed": 7}
    assert found[0].folder is not None
    assert found[0].folder.id == MAMBA_FOLDER_ID


def test_list_experiments_time_bounds_accept_aware_datetimes(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("GET", f"{API}/experiments", json=envelope({"experiments": []}))
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    sm.Experiment.list(from_ms=start, to_ms=1_767_225_600_500, slug="run-1")

    # Without limit= the SDK reads every match, pages of the contract's largest limit.
    assert sent_query(mocked.calls[0]) == [
        ("slug", "run-1"),
        ("from", "1767225600000"),
        ("to", "1767225600500"),
        ("limit", "1000"),
    ]


def test_create_experiment(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "create_experiment")
    register(mocked, ex)

    exp = sm.Experiment.create(
        "mamba-run-001",
        description="Baseline mamba training run",
        metadata={"model": "mamba", "seed": 7},
        folder=MAMBA_FOLDER_ID,
    )

    assert_request(mocked.calls[0], ex)
    assert exp.id == EXP_ID
    assert exp.status == "created"
    assert exp.description == "Baseline mamba training run"
    assert exp.created_at_ms == 1_795_716_952_000
    assert exp.started_at_ms is None


def test_create_experiment_with_a_folder_object(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "create_experiment")
    register(mocked, ex)
    folder = folder_from(data_of(exchange(wire_examples, "create_folder"))["folder"], wire)

    folder.create_experiment(
        "mamba-run-001",
        description="Baseline mamba training run",
        metadata={"model": "mamba", "seed": 7},
    )

    assert_request(mocked.calls[0], ex)


def test_create_experiment_without_folder_leaves_folder_id_out(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("POST", f"{API}/experiments", json=envelope({"experiment": experiment_wire()}))

    sm.Experiment.create("run-1")

    # Always sends slug, description ("" by default) and metadata ({} by default).
    assert sent_json(mocked.calls[0]) == {"slug": "run-1", "description": "", "metadata": {}}


def test_create_experiment_at_root_sends_folder_id_null(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("POST", f"{API}/experiments", json=envelope({"experiment": experiment_wire()}))

    sm.Experiment.create("run-1", folder=None)

    body = sent_json(mocked.calls[0])
    assert "folder_id" in body
    assert body["folder_id"] is None
    assert body == {"slug": "run-1", "description": "", "metadata": {}, "folder_id": None}


def test_get_experiment(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "get_experiment")
    register(mocked, ex)

    exp = sm.Experiment.get(EXP_ID)

    assert_request(mocked.calls[0], ex)
    expected = data_of(ex)["experiment"]
    assert exp.id == EXP_ID
    assert exp.slug == expected["slug"]
    assert exp.status == "running"
    assert exp.org_id == expected["org_id"]
    assert exp.url == expected["url"]
    assert exp.started_at_ms == 1_795_716_953_000
    assert exp.done_at_ms is None
    assert exp.folder is not None
    assert exp.folder.path_name == "baselines/mamba"


def test_update_status_running_at_a_time(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "update_experiment_status", 0)
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "create_experiment"), wire)

    returned = exp.set_status("running", timestamp_ms=1_795_716_953_000)

    assert_request(mocked.calls[0], ex)
    assert returned is exp
    assert exp.status == "running"
    assert exp.started_at_ms == 1_795_716_953_000


def test_update_status_error(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "update_experiment_status", 1)
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    exp.fail({"name": "ValueError", "detail": "loss is NaN"})

    assert_request(mocked.calls[0], ex)
    assert "timestamp_ms" not in sent_json(mocked.calls[0])
    assert exp.status == "error"
    assert exp.error_name == "ValueError"
    assert exp.error_detail == "loss is NaN"
    assert exp.done_at_ms == 1_795_717_047_000


@pytest.mark.parametrize(
    ("act", "status"),
    [
        (lambda exp: exp.start(), "running"),
        (lambda exp: exp.finish(), "done"),
        (lambda exp: exp.set_status("done"), "done"),
    ],
)
def test_status_shortcuts_send_only_the_status(
    wire: sm.Session, mocked: responses.RequestsMock, act: Any, status: str
) -> None:
    mocked.add("POST", f"{API}/experiments/exp-1", json=envelope({"experiment": experiment_wire()}))
    exp = sm.Experiment(experiment_wire(), session=wire)

    act(exp)

    assert sent_json(mocked.calls[0]) == {"status": status}


def test_move_experiment(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "move_experiment")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    exp.move(ROOT_FOLDER_ID)

    assert_request(mocked.calls[0], ex)
    assert exp.folder is not None
    assert exp.folder.id == ROOT_FOLDER_ID
    assert exp.updated_at_ms == 1_795_717_048_000


def test_move_experiment_to_root_sends_folder_id_null(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        "PATCH", f"{API}/experiments/exp-1", json=envelope({"experiment": experiment_wire()})
    )
    exp = sm.Experiment(experiment_wire(folder=_folder("f-1", "runs")), session=wire)

    exp.move(None)

    assert sent_json(mocked.calls[0]) == {"folder_id": None}
    assert exp.folder is None


# -- 11, 12 reading metrics ----------------------------------------------------------------


def test_list_metrics(wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any) -> None:
    ex = exchange(wire_examples, "list_metrics")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    rows = exp.metrics(
        "loss",
        metadata={"split": "train"},
        from_step=1,
        to_step=2,
        sort_by="step",
        sort_direction="asc",
        limit=1000,
        include_experiment_meta_as_of=True,
    )

    assert len(mocked.calls) == 1
    assert_request(mocked.calls[0], ex)
    assert len(rows) == 2
    assert rows.values == [0.5, 0.333333]
    assert rows.steps == [1, 2]
    assert all(type(step) is int for step in rows.steps)
    first = rows[0]
    assert first.name == "loss"
    assert first.value == 0.5
    assert first.step == 1
    assert type(first.step) is int
    assert first.metadata == {"split": "train"}
    assert first.event_id == "e3b0c442-98fc-4c14-9afb-000000000001"
    assert first.experiment_metadata == {"model": "mamba", "seed": 7}


def test_compare_metrics(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "compare_metrics")
    register(mocked, ex)

    rows = sm.compare(
        [
            sm.Series(EXP_ID, "loss", metadata={"split": "train"}),
            sm.Series(OTHER_EXP_ID, "loss", metadata={"split": "train"}),
        ],
        to_step=1,
        limit=500,
    )

    assert len(mocked.calls) == 1
    assert_request(mocked.calls[0], ex)
    assert [r.experiment_id for r in rows] == [EXP_ID, EXP_ID, OTHER_EXP_ID, OTHER_EXP_ID]
    assert rows.steps == [0, 1, 10, 11]
    assert rows.values == [1.0, 0.5, 0.97, 0.51]
    assert [r.experiment_slug for r in rows] == [
        "mamba-run-001",
        "mamba-run-001",
        "mamba-run-002",
        "mamba-run-002",
    ]


def test_compare_with_experiment_series(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "compare_metrics")
    register(mocked, ex)
    a = sm.Experiment(experiment_wire(EXP_ID, "mamba-run-001"), session=wire)
    b = sm.Experiment(experiment_wire(OTHER_EXP_ID, "mamba-run-002"), session=wire)

    sm.compare(
        [
            a.series("loss", metadata={"split": "train"}),
            b.series("loss", metadata={"split": "train"}),
        ],
        to_step=1,
        limit=500,
    )

    assert_request(mocked.calls[0], ex)


def mint_then(
    mocked: responses.RequestsMock, wire_examples: Any, operation: str, index: int = 0
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Register the ingestion-key mint of the examples, then ``operation``'s exchange;
    return both and the minted token."""
    mint = exchange(wire_examples, "ingest_metrics", 0)
    ex = exchange(wire_examples, operation, index)
    register(mocked, mint)
    register(mocked, ex)
    return mint, ex, data_of(mint)["token"]


# -- 13 ingest (mint, then ingest with the token) -------------------------------------------


def test_ingest_mints_a_key_then_ingests_with_its_token(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    mint, ingest, token = mint_then(mocked, wire_examples, "ingest_metrics", 1)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    result = exp.ingest(ingest["request"]["json"]["data"], sync=True)

    assert len(mocked.calls) == 2
    assert_request(mocked.calls[0], mint)  # API key, no Idempotency-Key, ordinary timeout
    assert_request(mocked.calls[1], ingest, token=token, timeout=INGEST_TIMEOUT)
    assert result.count == 2
    assert result.requests == 1
    assert result.mode == "sync"


def test_ingest_reuses_the_cached_token(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    _mint, ingest, token = mint_then(mocked, wire_examples, "ingest_metrics", 1)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    exp.ingest(ingest["request"]["json"]["data"], sync=True)
    exp.ingest(ingest["request"]["json"]["data"], sync=True)

    assert [sent_path(c).rsplit("/", 1)[-1] for c in mocked.calls] == [
        "ingestion-keys",
        "ingest",
        "ingest",
    ]
    assert mocked.calls[2].request.headers["Authorization"] == f"Bearer {token}"


def test_ingest_metric_without_metadata_or_timestamp_leaves_them_out(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    _mock_ingest(mocked, "exp-1")
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.ingest(
        [
            {"client_event_id": "a", "name": "loss", "value": 1, "step": None},
            {"client_event_id": "b", "name": "loss", "value": 0.5},
            {"client_event_id": "c", "name": "lr", "value": 0.1, "step": 3, "timestamp_ms": 5},
        ],
        sync=True,
    )

    sent = sent_json(mocked.calls[1])["data"]
    assert sent[0] == {"client_event_id": "a", "name": "loss", "value": 1, "step": None}
    # ``step`` is always sent, null when not given; metadata/timestamp only when given.
    assert sent[1] == {"client_event_id": "b", "name": "loss", "value": 0.5, "step": None}
    assert sent[2] == {
        "client_event_id": "c",
        "name": "lr",
        "value": 0.1,
        "step": 3,
        "timestamp_ms": 5,
    }
    assert "metadata" not in sent[0]
    assert "timestamp_ms" not in sent[0]


def test_ingest_metric_with_null_timestamp_never_sends_null(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    _mock_ingest(mocked, "exp-1")
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.ingest(
        [{"client_event_id": "a", "name": "loss", "value": 1, "step": 0, "timestamp_ms": None}]
    )

    assert "timestamp_ms" not in sent_json(mocked.calls[1])["data"][0]


@pytest.mark.parametrize(
    ("sync", "query"), [(True, [("sync", "true")]), (False, [("sync", "false")]), (None, [])]
)
def test_ingest_sync_query(
    wire: sm.Session, mocked: responses.RequestsMock, sync: bool | None, query: list[Any]
) -> None:
    _mock_ingest(mocked, "exp-1")
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.ingest([{"client_event_id": "a", "name": "loss", "value": 1, "step": 0}], sync=sync)

    assert sent_query(mocked.calls[1]) == query


def test_ingest_uses_the_default_ingest_timeout(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    _mock_ingest(mocked, "exp-1")
    exp = sm.Experiment(experiment_wire(), session=session)

    exp.ingest([{"client_event_id": "a", "name": "loss", "value": 1, "step": 0}])

    assert mocked.calls[0].request.req_kwargs["timeout"].total == 10.0  # minting: ordinary call
    assert mocked.calls[1].request.req_kwargs["timeout"].total == 60.0


# -- 14..16 ingestion keys -----------------------------------------------------------------


def test_list_ingestion_keys(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "list_ingestion_keys")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    keys = exp.ingestion_keys()

    assert_request(mocked.calls[0], ex)
    assert [k.id for k in keys] == ["5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"]
    assert keys[0].last_used_at_ms == 1_795_716_954_000
    assert keys[0].revoked_at_ms is None
    assert keys[0].token is None  # a listed key never carries its token


def test_create_ingestion_key(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "create_ingestion_key")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    key = exp.create_ingestion_key(name="ci key", ttl_ms=600_000)

    assert_request(mocked.calls[0], ex)
    assert key.id == "8e7d6c5b-4a39-4281-9f0e-d1c2b3a4f5e6"
    assert key.name == "ci key"
    assert key.expires_at_ms == 1_795_717_649_000
    assert key.token == data_of(ex)["token"]


def test_create_ingestion_key_accepts_a_timedelta_ttl(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "create_ingestion_key")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    exp.create_ingestion_key(name="ci key", ttl_ms=dt.timedelta(minutes=10))

    assert_request(mocked.calls[0], ex)


def test_create_ingestion_key_defaults_its_name(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    mocked.add(
        "POST",
        f"{API}/experiments/exp-1/ingestion-keys",
        json=envelope({"key": key_wire(), "token": "tok"}),
    )
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.create_ingestion_key()

    assert sent_json(mocked.calls[0]) == {"name": "SDK ingestion key"}


def test_revoke_ingestion_key(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    create, revoke = (
        exchange(wire_examples, "create_ingestion_key"),
        exchange(wire_examples, "revoke_ingestion_key"),
    )
    register(mocked, create)
    register(mocked, revoke)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)
    key = exp.create_ingestion_key(name="ci key", ttl_ms=600_000)

    returned = key.revoke()

    assert len(mocked.calls) == 2
    assert_request(mocked.calls[1], revoke)
    assert returned is key
    assert key.revoked_at_ms == 1_795_717_050_000
    assert key.is_active is False


# -- 17, 18 catalog ------------------------------------------------------------------------


def test_list_metric_catalog(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "list_metric_catalog")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    entries = exp.catalog()

    assert_request(mocked.calls[0], ex)
    assert [(e.metric_name, e.metadata_keys) for e in entries] == [("loss", ["split"]), ("lr", [])]


def test_list_metric_catalog_with_limit(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/experiments/exp-1/catalog", json=envelope({"metrics": []}))
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.catalog(limit=5)

    assert sent_query(mocked.calls[0]) == [("limit", "5")]


def test_inspect_metric_catalog_values(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "inspect_metric_catalog_values")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    values = exp.catalog_values("loss", keys="split", limit=10)

    assert_request(mocked.calls[0], ex)
    assert values.metric_name == "loss"
    assert values.scanned_event_count == 1200
    assert values.values("split") == ["train", "valid"]
    assert values.value_count("split") == 2


# -- 19, 20 annotations --------------------------------------------------------------------


def test_create_annotation_uses_the_ingestion_token(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    mint, ex, token = mint_then(mocked, wire_examples, "create_annotation")
    exp = experiment_from(exchange(wire_examples, "create_experiment"), wire)

    note = exp.annotate("Checkpoint saved", metadata={"path": "ckpt/step-999.pt"})

    assert len(mocked.calls) == 2
    assert_request(mocked.calls[0], mint)
    # Authenticated by the ingestion token, but with the ordinary timeout.
    assert_request(mocked.calls[1], ex, token=token, timeout=TIMEOUT)
    assert isinstance(note, sm.Annotation)
    assert note.id == "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
    assert note.text == "Checkpoint saved"
    assert note.metadata == {"path": "ckpt/step-999.pt"}
    # The experiment is updated from the answer's ``experiment``.
    assert exp.status == "running"
    assert exp.updated_at_ms == 1_795_717_042_000


def test_create_annotation_always_sends_metadata(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add(
        "POST",
        f"{API}/experiments/exp-1/ingestion-keys",
        json=envelope({"key": key_wire(), "token": "tok"}),
    )
    note = {
        "id": "a-1",
        "experiment_id": "exp-1",
        "annotation": "hi",
        "metadata": {},
        "created_at_ms": 1,
    }
    mocked.add(
        "POST",
        f"{API}/experiments/exp-1/annotations",
        json=envelope({"experiment": experiment_wire(), "annotation": note}),
    )
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.annotate("hi")

    assert sent_json(mocked.calls[1]) == {"annotation": "hi", "metadata": {}}


def test_list_annotations(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "list_annotations")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)

    notes = exp.annotations(from_ms=1_795_716_952_000, limit=100)

    assert_request(mocked.calls[0], ex)
    assert [n.text for n in notes] == ["Checkpoint saved"]
    assert notes[0].created_at_ms == 1_795_717_042_000


def test_list_annotations_from_an_aware_datetime(
    wire: sm.Session, mocked: responses.RequestsMock, wire_examples: Any
) -> None:
    ex = exchange(wire_examples, "list_annotations")
    register(mocked, ex)
    exp = experiment_from(exchange(wire_examples, "get_experiment"), wire)
    start = dt.datetime.fromtimestamp(1_795_716_952, tz=dt.timezone.utc)

    exp.annotations(from_ms=start, limit=100)

    assert_request(mocked.calls[0], ex)


# -- transport rules ------------------------------------------------------------------------


def test_every_example_operation_is_covered(wire_examples: Any) -> None:
    """Guard: if the examples gain an operation, this file must gain a test for it."""
    covered = {
        "auth_status",
        "list_folders",
        "create_folder",
        "get_folder",
        "rename_folder",
        "move_folder",
        "list_experiments",
        "create_experiment",
        "get_experiment",
        "update_experiment_status",
        "move_experiment",
        "list_metrics",
        "compare_metrics",
        "ingest_metrics",
        "list_ingestion_keys",
        "create_ingestion_key",
        "revoke_ingestion_key",
        "list_metric_catalog",
        "inspect_metric_catalog_values",
        "create_annotation",
        "list_annotations",
    }
    assert set(wire_examples) - {"_errors"} == covered
    assert len(wire_examples["update_experiment_status"]) == 2


def test_ids_are_percent_encoded_in_paths(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    odd = "x/y z"
    mocked.add(
        "GET",
        f"{API}/experiments/x%2Fy%20z",
        json=envelope({"experiment": experiment_wire(odd)}),
    )

    exp = sm.Experiment.get(odd)

    assert sent_path(mocked.calls[0]) == "/api/v1/experiments/x%2Fy%20z"
    assert exp.id == odd


def test_get_experiment_with_slash_in_id(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add(
        "GET", f"{API}/experiments/x%2Fy", json=envelope({"experiment": experiment_wire("x/y")})
    )

    sm.Experiment.get("x/y")

    assert mocked.calls[0].request.path_url == "/api/v1/experiments/x%2Fy"


def test_metric_names_are_percent_encoded_in_paths(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    values = {"metric_name": "a/b c", "scanned_event_count": 0, "keys": []}
    mocked.add(
        "GET",
        f"{API}/experiments/e%2F1/catalog/a%2Fb%20c",
        json=envelope({"metadata": values}),
    )
    exp = sm.Experiment(experiment_wire("e/1"), session=wire)

    exp.catalog_values("a/b c")

    assert sent_path(mocked.calls[0]) == "/api/v1/experiments/e%2F1/catalog/a%2Fb%20c"
    assert sent_query(mocked.calls[0]) == []


@pytest.mark.parametrize(
    ("act", "route"),
    [
        (lambda exp: exp.refresh(), "/api/v1/experiments/e%2F1"),
        (lambda exp: exp.catalog(), "/api/v1/experiments/e%2F1/catalog"),
        (lambda exp: exp.annotations(), "/api/v1/experiments/e%2F1/annotations"),
        (lambda exp: exp.ingestion_keys(), "/api/v1/experiments/e%2F1/ingestion-keys"),
        (lambda exp: exp.metrics("loss", limit=5), "/api/v1/experiments/e%2F1/metrics"),
    ],
)
def test_experiment_routes_encode_the_id(
    wire: sm.Session, mocked: responses.RequestsMock, act: Any, route: str
) -> None:
    answers = {
        "/api/v1/experiments/e%2F1": {"experiment": experiment_wire("e/1")},
        "/api/v1/experiments/e%2F1/catalog": {"metrics": []},
        "/api/v1/experiments/e%2F1/annotations": {"annotations": []},
        "/api/v1/experiments/e%2F1/ingestion-keys": {"keys": []},
        "/api/v1/experiments/e%2F1/metrics": {"rows": []},
    }
    mocked.add("GET", f"{HOST}{route}", json=envelope(answers[route]))
    exp = sm.Experiment(experiment_wire("e/1"), session=wire)

    act(exp)

    assert sent_path(mocked.calls[0]) == route


def test_revoke_encodes_both_ids(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    revoked = {**key_wire("e/1", "k/1"), "revoked_at_ms": 2}
    mocked.add(
        "DELETE",
        f"{API}/experiments/e%2F1/ingestion-keys/k%2F1",
        json=envelope({"key": revoked}),
    )
    key = sm.IngestionKey(key_wire("e/1", "k/1"), session=wire)

    key.revoke()

    assert sent_path(mocked.calls[0]) == "/api/v1/experiments/e%2F1/ingestion-keys/k%2F1"


def test_folder_ids_are_percent_encoded(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("PATCH", f"{API}/folders/f%2F1", json=envelope({"folder": _folder("f/1", "new")}))
    folder = sm.Folder(_folder("f/1", "old"), session=wire)

    folder.rename("new")

    assert sent_path(mocked.calls[0]) == "/api/v1/folders/f%2F1"


def test_query_booleans_are_lowercase(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/experiments/exp-1/metrics", json=envelope({"rows": []}))
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.metrics("loss", limit=5, include_experiment_meta_as_of=False)

    assert sent_query(mocked.calls[0]) == [
        ("metric_name", "loss"),
        ("limit", "5"),
        ("include_experiment_meta_as_of", "false"),
    ]


def test_query_lists_repeat_the_key(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    values = {"metric_name": "loss", "scanned_event_count": 0, "keys": []}
    mocked.add("GET", f"{API}/experiments/exp-1/catalog/loss", json=envelope({"metadata": values}))
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.catalog_values("loss", keys=["a", "b"], limit=3)

    assert sent_query(mocked.calls[0]) == [("key", "a"), ("key", "b"), ("limit", "3")]


def test_query_none_values_are_left_out(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/experiments", json=envelope({"experiments": []}))
    values = {"metric_name": "loss", "scanned_event_count": 0, "keys": []}
    mocked.add("GET", f"{API}/experiments/exp-1/catalog/loss", json=envelope({"metadata": values}))

    sm.Experiment.catalog_values(
        sm.Experiment(experiment_wire(), session=wire), "loss", keys=None, limit=None
    )
    sm.Experiment.list(status=None, slug=None, search="x", limit=5)

    assert sent_query(mocked.calls[-1]) == [("search", "x"), ("limit", "5")]
    assert "status" not in mocked.calls[-1].request.url
    assert urlsplit(mocked.calls[0].request.url).query == ""


def test_list_folders_without_path_sends_no_query(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("GET", f"{API}/folders", json=envelope({"folders": []}))

    assert sm.Folder.list() == []

    assert sent_query(mocked.calls[0]) == []
    assert urlsplit(mocked.calls[0].request.url).query == ""


def test_metadata_filter_with_non_string_value_goes_as_compact_json(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("GET", f"{API}/experiments/exp-1/metrics", json=envelope({"rows": []}))
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.metrics("loss", metadata={"layer": [1, 2]}, limit=10)

    assert sent_query(mocked.calls[0]) == [
        ("metric_name", "loss"),
        ("metadata_key", "layer"),
        ("metadata_value_json", "[1,2]"),
        ("limit", "10"),
    ]


def test_metadata_filter_by_key_only(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/experiments/exp-1/metrics", json=envelope({"rows": []}))
    exp = sm.Experiment(experiment_wire(), session=wire)

    exp.metrics("loss", metadata="split", limit=10)

    assert sent_query(mocked.calls[0]) == [
        ("metric_name", "loss"),
        ("metadata_key", "split"),
        ("limit", "10"),
    ]


def test_compare_series_are_compact_json_without_null_keys(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("GET", f"{API}/metrics", json=envelope({"rows": []}))

    sm.compare(
        [
            sm.Series("e1", "loss"),
            sm.Series("e2", "acc", metadata={"layer": [1, 2]}),
            sm.Series("e3", "loss", metadata="split"),
        ],
        limit=5,
    )

    series = [value for key, value in sent_query(mocked.calls[0]) if key == "series"]
    assert [json.loads(value) for value in series] == [
        {"experiment_id": "e1", "metric_name": "loss"},
        {
            "experiment_id": "e2",
            "metric_name": "acc",
            "metadata_key": "layer",
            "metadata_value_json": "[1,2]",
        },
        {"experiment_id": "e3", "metric_name": "loss", "metadata_key": "split"},
    ]
    for value in series:
        assert " " not in value  # compact: no spaces after ':' or ','
        assert "null" not in value  # null keys are left out, not sent as null
    assert sent_query(mocked.calls[0])[-1] == ("limit", "5")


def test_compare_other_query_parameters(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/metrics", json=envelope({"rows": []}))

    sm.compare(
        [sm.Series("e1", "loss")],
        from_step=2,
        to_step=9,
        from_time=10,
        to_time=20,
        sort_by=["series", "step"],
        sort_direction="desc",
        limit=50,
        include_experiment_meta_as_of=True,
    )

    assert sent_query(mocked.calls[0]) == [
        ("series", '{"experiment_id":"e1","metric_name":"loss"}'),
        ("from_step", "2"),
        ("to_step", "9"),
        ("from_time", "10"),
        ("to_time", "20"),
        ("sort_by", "series,step"),
        ("sort_direction", "desc"),
        ("limit", "50"),
        ("include_experiment_meta_as_of", "true"),
    ]


def test_idempotency_key_is_new_per_call_and_reused_on_retry(
    wire: sm.Session, mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    url = f"{API}/folders"
    answer = envelope({"folder": _folder("f-1", "runs")})
    mocked.add("POST", url, json={"data": None, "error": "Service unavailable"}, status=503)
    mocked.add("POST", url, json=answer)
    mocked.add("POST", url, json=answer)

    sm.Folder.create("runs")
    sm.Folder.create("runs")

    keys = [c.request.headers["Idempotency-Key"] for c in mocked.calls]
    assert len(keys) == 3
    assert keys[0] == keys[1], "a retry of one logical call reuses its key"
    assert keys[2] != keys[0], "a new logical call gets a new key"
    assert sleeps == [0.25]


def test_no_body_on_get_and_delete(wire: sm.Session, mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/experiments/exp-1", json=envelope({"experiment": experiment_wire()}))
    mocked.add(
        "DELETE",
        f"{API}/experiments/exp-1/ingestion-keys/key-1",
        json=envelope({"key": {**key_wire(), "revoked_at_ms": 5}}),
    )

    sm.Experiment.get("exp-1")
    sm.IngestionKey(key_wire(), session=wire).revoke()

    for call in mocked.calls:
        assert sent_json(call) is None
        assert "Idempotency-Key" not in call.request.headers
        assert call.request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_ordinary_calls_use_the_default_timeout(
    session: sm.Session, mocked: responses.RequestsMock
) -> None:
    mocked.add("GET", f"{API}/experiments/exp-1", json=envelope({"experiment": experiment_wire()}))

    sm.Experiment.get("exp-1")

    assert mocked.calls[0].request.req_kwargs["timeout"].total == 10.0


def test_rows_results_keep_int_steps_and_null_steps(
    wire: sm.Session, mocked: responses.RequestsMock
) -> None:
    rows = [row_wire("e1", None, 1.5, 10), row_wire("e2", 4, 2.5, 11, metadata='{"k":[1,2]}')]
    mocked.add("GET", f"{API}/experiments/exp-1/metrics", json=envelope({"rows": rows}))
    exp = sm.Experiment(experiment_wire(), session=wire)

    read = exp.metrics(limit=10)

    assert read.steps == [None, 4]
    assert type(read[1].step) is int
    assert read[1].metadata == {"k": [1, 2]}
    assert read[0].metadata == {}


# -- small builders -------------------------------------------------------------------------


def _folder(folder_id: str, name: str, parents: list[str] | None = None) -> dict[str, Any]:
    return {
        "folder_id": folder_id,
        "org_id": "org-1",
        "name": name,
        "parent_id_path": parents or [],
        "path_name": name,
    }


def _mock_ingest(mocked: responses.RequestsMock, experiment_id: str) -> None:
    mocked.add(
        "POST",
        f"{API}/experiments/{experiment_id}/ingestion-keys",
        json=envelope({"key": key_wire(experiment_id), "token": "tok-ingest"}),
    )
    mocked.add(
        "POST",
        f"{API}/experiments/{experiment_id}/ingest",
        json=envelope({"ok": True, "mode": "sync"}),
    )
