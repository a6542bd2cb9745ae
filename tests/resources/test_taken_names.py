"""A taken slug or folder name: the service's 409 keeps its class, status, code and field,
and its message says what to write instead (``exist_ok=True``, or another name); nothing is
created. Against the real local server."""

from __future__ import annotations

import pickle

import pytest

import syvain_metrics as sm


def test_a_taken_slug_says_to_pass_exist_ok_or_choose_another(
    metrics_session: sm.Session,
) -> None:
    first = sm.Experiment.create("probe", metadata={"lr": 0.1})
    with pytest.raises(sm.MetricsApiConflictError) as taken:
        sm.Experiment.create("probe", defer=False)
    error = taken.value
    assert (error.status_code, error.error_code, error.field) == (409, "slug_exists", "slug")
    assert str(error).startswith("HTTP 409: Slug 'probe' already exists")
    assert "sm.Experiment.create('probe', exist_ok=True)" in str(error)
    assert "choose another slug" in str(error)
    assert [e.id for e in sm.Experiment.list()] == [first.id]  # nothing else created
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.error_code) == (str(error), "slug_exists")
    assert sm.Experiment.create("probe", exist_ok=True).id == first.id  # the hint works


def test_a_taken_folder_name_says_to_pass_exist_ok_or_choose_another(
    metrics_session: sm.Session,
) -> None:
    parent = sm.Folder.create("sweeps")
    child = sm.Folder.create("lr", parent)
    with pytest.raises(sm.MetricsApiConflictError) as taken:
        sm.Folder.create("lr", parent)
    error = taken.value
    assert (error.status_code, error.error_code, error.field) == (409, "folder_exists", "name")
    assert "sm.Folder.create('lr', exist_ok=True) with the same parent" in str(error)
    assert "choose another name" in str(error)
    assert [f.id for f in sm.Folder.get(parent.id).subfolders] == [child.id]
    assert sm.Folder.create("lr", parent, exist_ok=True).id == child.id


def test_a_hint_makes_a_new_error_and_leaves_the_original_as_it_was() -> None:
    error = sm.MetricsApiConflictError(
        "HTTP 409: key reused", status_code=409, error_code="idempotency_key_reused"
    )
    hinted = error.with_hint("Use a new key.")
    assert str(hinted) == "HTTP 409: key reused. Use a new key."
    assert (type(hinted), hinted.error_code) == (sm.MetricsApiConflictError, error.error_code)
    assert str(error) == "HTTP 409: key reused"
