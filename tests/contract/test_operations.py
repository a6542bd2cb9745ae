"""The operations table against the contract's wire examples: every example request is one of
the table's operations, and that operation's schemas read its body, its query and its answer."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from syvain_metrics.contract.operations import API_PREFIX, OPERATIONS, Operation
from tests.conftest import EXAMPLES


def _exchanges() -> list[tuple[str, dict[str, Any]]]:
    data = json.loads(EXAMPLES.read_text())
    return [
        (op["operation"], exchange)
        for op in data["operations"]
        for exchange in op["exchanges"]
        if exchange["request"]["path"].startswith(API_PREFIX)
    ]


def _operation(method: str, path: str) -> Operation:
    found = [
        op
        for op in OPERATIONS
        if op.method == method
        and re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(op.template)), path)
    ]
    assert len(found) == 1, (method, path, found)
    return found[0]


EXCHANGES = _exchanges()


def test_every_operation_has_a_wire_example() -> None:
    seen = {
        _operation(e["request"]["method"], e["request"]["path"][len(API_PREFIX) :]).operation
        for _, e in EXCHANGES
    }
    assert seen == {op.operation for op in OPERATIONS}


@pytest.mark.parametrize(("name", "exchange"), EXCHANGES, ids=[n for n, _ in EXCHANGES])
def test_the_operations_schemas_read_its_example(name: str, exchange: dict[str, Any]) -> None:
    request, response = exchange["request"], exchange["response"]
    op = _operation(request["method"], request["path"][len(API_PREFIX) :])
    assert ("Idempotency-Key" in request["headers"]) == op.sends_idempotency_key
    if request.get("json") is not None:
        assert op.body is not None, name
        op.body().load(request["json"])
    else:
        assert op.body is None or request["method"] == "POST", name
    query: MultiDict[str, str] = MultiDict([tuple(pair) for pair in request.get("query", [])])
    schema = op.query.wire_schema(json.loads)()
    loaded = schema.load({k: query.getlist(k) if k in schema.repeated else query[k] for k in query})
    assert set(query) <= op.query.wire_names
    assert set(loaded) <= set(schema.fields)
    if 200 <= response["status"] < 300:
        op.reply().load(response["body"]["data"])
