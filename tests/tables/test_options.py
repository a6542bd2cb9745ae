"""Read and plot options: written once, passed as keywords, shown by ``help()``."""

from __future__ import annotations

import dataclasses
import inspect
import pydoc
import typing
from typing import TYPE_CHECKING, Any

import pytest

import syvain_metrics as sm
from syvain_metrics.tables.options import (
    PlotKeywords,
    PlotOptions,
    ReadKeywords,
    ReadOptions,
    keyword_options,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

READ = [item.name for item in dataclasses.fields(ReadOptions)]
PLOT = [item.name for item in dataclasses.fields(PlotOptions)]


@pytest.mark.parametrize(
    ("method", "before", "after", "options"),
    [
        (sm.Experiment.metrics, ["self", "name", "metadata", "step"], ["progress"], READ),
        (sm.Experiment.iter_metrics, ["self", "name", "metadata", "step"], ["page_size"], READ),
        (sm.compare, ["series", "names", "metadata"], ["progress", "session"], READ),
        (sm.iter_compare, ["series", "names", "metadata"], ["page_size", "session"], READ),
        (sm.MetricRows.plot, ["self"], [], PLOT),
        (sm.ExperimentList.plot, ["self", "name", "metadata"], [], PLOT),
    ],
)
def test_each_option_shows_in_the_signature_and_the_help(
    method: object, before: list[str], after: list[str], options: list[str]
) -> None:
    signature = inspect.signature(method)  # type: ignore[arg-type]
    assert list(signature.parameters) == before + options + after
    for name in options:
        assert signature.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters[options[0]].default == (None if options is READ else "step")
    text = pydoc.render_doc(method, renderer=pydoc.plaintext)
    for name in options:
        assert f"{name}: " in text  # in the signature and in the list of options


def test_options_reach_the_function_as_keywords() -> None:
    seen: list[ReadOptions] = []

    @keyword_options(ReadOptions, before="progress")
    def read(name: str, *, progress: bool = False, **options: Unpack[ReadKeywords]) -> str:
        """Read."""
        seen.append(ReadOptions(**options))
        return f"{name} {progress}"

    assert list(inspect.signature(read).parameters) == ["name", *READ, "progress"]
    assert read("loss", to_step=5, progress=True) == "loss True"
    assert seen == [ReadOptions(to_step=5)]
    assert read("loss") == "loss False"
    assert seen[-1] == ReadOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[-1].limit = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"read\(\) got an unexpected keyword argument 'to_stpe'"):
        read("loss", to_stpe=5)  # type: ignore[call-arg]


def test_a_decorated_function_must_spread_its_options_and_name_a_real_parameter() -> None:
    def plain(name: str) -> str:
        """No ``**options``."""
        return name

    def spread(name: str, **options: Unpack[ReadKeywords]) -> str:
        """Options, but no ``progress``."""
        return name

    with pytest.raises(TypeError, match=r"plain\(\) must take its options as \*\*options"):
        keyword_options(ReadOptions)(plain)
    with pytest.raises(TypeError, match=r"spread\(\) has no parameter 'progress'"):
        keyword_options(ReadOptions, before="progress")(spread)


@pytest.mark.parametrize(
    ("options", "keywords"), [(ReadOptions, ReadKeywords), (PlotOptions, PlotKeywords)]
)
def test_the_keywords_type_matches_the_options_field_for_field(
    options: type[Any], keywords: type[Any]
) -> None:
    # The TypedDict repeats the dataclass's names and types for static signatures: it must
    # not drift. Every option has a default, so every keyword is optional (total=False).
    from matplotlib.axes import Axes

    from syvain_metrics.resources.annotation import Annotation

    names = {"Axes": Axes, "Annotation": Annotation}
    fields = dataclasses.fields(options)
    assert [item.name for item in fields] == list(keywords.__annotations__)
    assert typing.get_type_hints(options, localns=names) == typing.get_type_hints(
        keywords, localns=names
    )
    assert keywords.__total__ is False
    assert keywords.__required_keys__ == frozenset()
    assert all(item.default is not dataclasses.MISSING for item in fields)


def test_unknown_keywords_and_extra_positionals_fail_as_python_calls_do() -> None:
    with pytest.raises(TypeError, match=r"compare\(\) got an unexpected keyword argument 'frm'"):
        sm.compare([], frm=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'options'"):
        sm.compare([], options=ReadOptions())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"MetricRows.plot\(\) got an unexpected keyword .* 'logx'"):
        sm.MetricRows().plot(logx=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 1 positional argument but 2 were given"):
        sm.MetricRows().plot("step")  # type: ignore[call-arg, arg-type]


def test_plot_options_values_round_trip() -> None:
    options = PlotOptions(x="time", logy=True, title="loss")
    assert PlotOptions(**options.values()) == options
    assert set(options.values()) == set(PLOT)


@pytest.mark.parametrize(
    "method", [sm.Experiment.metrics, sm.Experiment.iter_metrics, sm.compare, sm.iter_compare]
)
def test_runtime_type_hints_name_each_read_option(method: object) -> None:
    # typing.get_type_hints() (used by runtime validators) sees the options' own types.
    hints = typing.get_type_hints(method)
    assert {name: hints[name] for name in READ} == typing.get_type_hints(ReadOptions)
    assert "options" not in hints
