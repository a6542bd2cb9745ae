"""The options of a metrics read and of a plot, each written once.

A method that takes them declares one ``options`` parameter and is decorated with
:func:`keyword_options`: callers still pass each option as a keyword argument
(``exp.metrics("loss", from_step=10)``), the method receives them built into one frozen
object, and ``help()`` shows every option in the signature and the docstring.

Example:
    >>> @keyword_options(ReadOptions)
    ... def read(name: str, *, options: ReadOptions) -> str:
    ...     '''Read ``name``.'''
    ...     return f"{name} from step {options.from_step}"
    >>> read("loss", from_step=10)
    'loss from step 10'
    >>> import inspect
    >>> list(inspect.signature(read).parameters)[:3]
    ['name', 'from_step', 'to_step']
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import inspect
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from syvain_metrics.resources.annotation import Annotation

R = TypeVar("R")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


class _Options:
    """What both kinds of options share."""

    def values(self) -> dict[str, Any]:
        """The options by name (as keyword arguments, or as a query schema loads them)."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReadOptions(_Options):
    """The bounds, order and size of a metrics read (``exp.metrics()``, ``sm.compare()`` and
    their ``iter_`` forms). Each is checked against the contract when the read starts.

    Example:
        >>> ReadOptions(to_step=100).values()["to_step"]
        100
    """

    from_step: int | None = field(default=None, metadata=_doc("the first step (inclusive)"))
    to_step: int | None = field(default=None, metadata=_doc("the last step (inclusive)"))
    from_time: int | dt.datetime | None = field(
        default=None,
        metadata=_doc("the earliest client time (epoch ms or an aware datetime, inclusive)"),
    )
    to_time: int | dt.datetime | None = field(
        default=None, metadata=_doc("the latest client time (inclusive)")
    )
    sort_by: str | Sequence[str] | None = field(
        default=None,
        metadata=_doc(
            "sort keys among step, client_timestamp, server_timestamp (and series for "
            "a compare); by default step, then client time"
        ),
    )
    sort_direction: str | None = field(default=None, metadata=_doc('"asc" (default) or "desc"'))
    limit: int | None = field(
        default=None, metadata=_doc("at most this many rows; without it, every row")
    )
    include_experiment_meta_as_of: bool | None = field(
        default=None,
        metadata=_doc("each row also carries its experiment's description and metadata"),
    )


@dataclass(frozen=True)
class PlotOptions(_Options):
    """How metric rows are drawn (``rows.plot()``, ``runs.plot()``).

    Example:
        >>> PlotOptions(logy=True).x
        'step'
    """

    x: str = field(
        default="step",
        metadata=_doc(
            '"step" (events without a step are left out) or "time" (client time, a UTC date axis)'
        ),
    )
    hue: str | None = field(
        default=None,
        metadata=_doc(
            "colour by this key: an event metadata key, an experiment metadata key (rows "
            "read with include_experiment_meta_as_of=True, as runs.compare() does; dotted "
            'keys reach nested objects), "experiment" or "name"; one legend entry per value'
        ),
    )
    title: str | None = field(default=None, metadata=_doc("the axes' title"))
    logy: bool = field(default=False, metadata=_doc("a logarithmic y axis"))
    smooth: float | None = field(
        default=None,
        metadata=_doc(
            "an exponential moving average weight in [0, 1) (TensorBoard's smoothing: 0.6 "
            "is gentle, 0.95 strong); raw values stay as faint lines"
        ),
    )
    annotations: Iterable[Annotation] | None = field(
        default=None,
        metadata=_doc(
            "annotations to mark as dashed vertical lines: at their time on a time axis, "
            'at metadata["step"] on a step axis'
        ),
    )
    ax: Axes | None = field(default=None, metadata=_doc("draw on these axes, not a new figure"))


def _described(doc: str | None, options: type[Any]) -> str:
    """``doc`` followed by one line per option (what ``help()`` shows)."""
    lines = [
        textwrap.fill(
            f"{item.name}: {item.metadata['doc']}.",
            width=88,
            initial_indent="    ",
            subsequent_indent="        ",
        )
        for item in dataclasses.fields(options)
    ]
    title = f"{options.__name__} (keyword arguments):"
    return f"{inspect.cleandoc(doc or '')}\n\n{title}\n" + "\n".join(lines) + "\n"


def keyword_options(
    options: type[Any], parameter: str = "options"
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Let callers pass each field of the dataclass ``options`` as a keyword argument of the
    decorated function, which receives them built into one ``options`` object (its
    ``parameter``). The signature and the docstring that ``help()`` shows list the fields
    in place of ``parameter``.

    Example:
        >>> @keyword_options(PlotOptions)
        ... def draw(*, options: PlotOptions) -> bool:
        ...     '''Draw.'''
        ...     return options.logy
        >>> draw(logy=True)
        True
    """
    names = frozenset(item.name for item in dataclasses.fields(options))

    def decorate(function: Callable[..., R]) -> Callable[..., R]:
        signature = inspect.signature(function)
        fields = [
            inspect.Parameter(
                item.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=item.default,
                annotation=item.type,
            )
            for item in dataclasses.fields(options)
        ]
        shown: list[inspect.Parameter] = []
        for item in signature.parameters.values():
            shown.extend(fields if item.name == parameter else [item])

        @functools.wraps(function)
        def with_options(*args: Any, **kwargs: Any) -> R:
            if parameter in kwargs:  # not a keyword of the public signature
                raise TypeError(
                    f"{function.__name__}() got an unexpected keyword argument {parameter!r}"
                )
            given = {name: kwargs.pop(name) for name in names.intersection(kwargs)}
            return function(*args, **kwargs, **{parameter: options(**given)})

        with_options.__signature__ = signature.replace(parameters=shown)  # type: ignore[attr-defined]
        with_options.__doc__ = _described(function.__doc__, options)
        return with_options

    return decorate
