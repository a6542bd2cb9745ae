"""Read and plot options: written once, passed as keywords, shown by ``help()``."""

from __future__ import annotations

import dataclasses
import inspect
import pydoc

import pytest

import syvain_metrics as sm
from syvain_metrics.tables.options import PlotOptions, ReadOptions, keyword_options

READ = [item.name for item in dataclasses.fields(ReadOptions)]
PLOT = [item.name for item in dataclasses.fields(PlotOptions)]


@pytest.mark.parametrize(
    ("method", "before", "after", "options"),
    [
        (sm.Experiment.metrics, ["self", "name", "metadata", "step"], ["progress"], READ),
        (sm.Experiment.iter_metrics, ["self", "name", "metadata", "step"], ["page_size"], READ),
        (sm.compare, ["series"], ["progress", "session"], READ),
        (sm.iter_compare, ["series"], ["page_size", "session"], READ),
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


def test_options_reach_the_function_built_once() -> None:
    seen: list[ReadOptions] = []

    @keyword_options(ReadOptions)
    def read(name: str, *, options: ReadOptions, progress: bool = False) -> str:
        """Read."""
        seen.append(options)
        return f"{name} {progress}"

    assert read("loss", to_step=5, progress=True) == "loss True"
    assert seen == [ReadOptions(to_step=5)]
    assert read("loss") == "loss False"
    assert seen[-1] == ReadOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[-1].limit = 3  # type: ignore[misc]


def test_unknown_keywords_and_extra_positionals_fail_as_python_calls_do() -> None:
    with pytest.raises(TypeError, match=r"compare\(\) got an unexpected keyword argument 'frm'"):
        sm.compare([], frm=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'options'"):
        sm.compare([], options=ReadOptions())
    with pytest.raises(TypeError, match="positional"):
        sm.MetricRows().plot("step")


def test_plot_options_values_round_trip() -> None:
    options = PlotOptions(x="time", logy=True, title="loss")
    assert PlotOptions(**options.values()) == options
    assert set(options.values()) == set(PLOT)
