"""Rows stored column by column from validated pages: what validation found (types, columns
of one value) is handed over, and every row reads back as the service sent it."""

from __future__ import annotations

from array import array
from typing import Any

import pytest
from marshmallow import ValidationError

from syvain_metrics.contract.schemas.rows import ROW, MetricRowTable
from syvain_metrics.tables.columns import RowColumns


def rows(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        {**ROW, "event_id": f"e{i}", "step": float(i), "metric_value": i / 2, **fields}
        for i in range(count)
    ]


def stored(*pages: list[dict[str, Any]]) -> RowColumns:
    table = RowColumns()
    for page in pages:
        table.extend(MetricRowTable().deserialize(page))
    return table


def test_a_validated_page_hands_over_its_types_and_one_value_columns() -> None:
    page = MetricRowTable().deserialize(rows(3, event_metadata_json='{"split":"train"}'))
    assert page.types["metric_value"] == {float}
    assert {"org_id", "metric_name", "event_metadata_json"} <= page.uniform
    assert "event_id" not in page.uniform
    part = page[1:]
    assert (part.types, part.uniform) == (page.types, page.uniform)
    table = stored(rows(3))
    assert type(table.columns["metric_value"]) is array
    assert type(table.columns["client_timestamp_ms"]) is array
    assert list(table.rows()) == rows(3)


def test_pages_of_different_shapes_read_back_as_sent() -> None:
    first = rows(2)
    second = [
        {**row, "event_id": f"x{i}", "metric_value": 3, "step": None}
        for i, row in enumerate(rows(2, experiment_description="d", event_metadata_json="{}"))
    ]
    second[1]["metric_name"] = "acc"
    table = stored(first, second)
    assert list(table.rows()) == first + second
    assert table.column("metric_value") == [0.0, 0.5, 3, 3]
    assert type(table.column("metric_value")[2]) is int
    assert table.column("experiment_description") == [None, None, "d", "d"]
    assert table.column("step") == [0.0, 1.0, None, None]
    assert table.column("metric_name") == ["loss", "loss", "loss", "acc"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"org_id": None}, "field org_id has the wrong type"),
        ({"metric_name": 1}, "field metric_name has the wrong type"),
        ({"experiment_description": 5}, "field experiment_description has the wrong type"),
        ({"experiment_metadata_json": ["x"]}, "field experiment_metadata_json has the wrong"),
    ],
)
def test_one_value_columns_are_still_checked(change: dict[str, Any], message: str) -> None:
    page = [{**row, **change} for row in rows(3)]
    with pytest.raises(ValidationError, match=message):
        MetricRowTable().deserialize(page)


def test_a_row_without_a_required_field_is_caught_whatever_else_it_carries() -> None:
    page = rows(3)
    del page[2]["metric_name"]
    page[2]["experiment_description"] = "in its place"
    with pytest.raises(ValidationError, match="Row 2: field metric_name is missing"):
        MetricRowTable().deserialize(page)
