"""The options of a metrics read and of a plot, each written once.

Each kind is a frozen dataclass (:class:`ReadOptions`, :class:`PlotOptions`) that holds the
defaults and one doc per option, with a ``TypedDict`` of the same names and types
(:class:`ReadKeywords`, :class:`PlotKeywords`) for signatures. A method that takes them ends
with ``**options: Unpack[ReadKeywords]``, so type checkers and IDEs check and suggest each
option, and is decorated with :func:`keyword_options`, which shows every option in
``inspect.signature()`` and ``help()`` and refuses an unknown keyword as Python does. The
method builds its options with ``ReadOptions(**options)``.

Example:
    >>> @keyword_options(ReadOptions)
    ... def read(name: str, **options: "Unpack[ReadKeywords]") -> str:
    ...     '''Read ``name``.'''
    ...     return f"{name} from step {ReadOptions(**options).from_step}"
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
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, cast, get_type_hints

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from syvain_metrics.resources.annotation import Annotation

F = TypeVar("F", bound=Callable[..., Any])


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
    their ``iter_`` forms). Each is checked against the contract when the read starts;
    ``last_per_step`` is not a query parameter but done by the SDK on the rows read.

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
    last_per_step: bool = field(
        default=False,
        metadata=_doc(
            "keep only the row logged last at each step of each series (run, metric, "
            "event metadata), as when a job restarted from a checkpoint logs steps again; "
            "events without a step are all kept. Done by the SDK once every row matching "
            "the other filters is read, so a limit cuts the rows left afterwards"
        ),
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
            '"step" (events without a step are left out), "relative" (client time since '
            'each run\'s start, in ms, s, min, h or days as the span needs), "wall" (client '
            'time, a UTC date axis) or "time" (relative for runs shorter than 2 days, else '
            "wall)"
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
    last_per_step: bool = field(
        default=False,
        metadata=_doc(
            "draw only the value logged last at each step of each series (steps logged "
            "again after a restart from a checkpoint replace the earlier ones)"
        ),
    )


# The keyword forms of the dataclasses above, for ``**options: Unpack[...]`` signatures:
# the same names and types (tests/tables/test_options.py keeps them in step), while the
# defaults and the docs stay in the dataclasses only.


class ReadKeywords(TypedDict, total=False):
    """The :class:`ReadOptions` as keyword arguments, each optional."""

    from_step: int | None
    to_step: int | None
    from_time: int | dt.datetime | None
    to_time: int | dt.datetime | None
    sort_by: str | Sequence[str] | None
    sort_direction: str | None
    limit: int | None
    include_experiment_meta_as_of: bool | None
    last_per_step: bool


class PlotKeywords(TypedDict, total=False):
    """The :class:`PlotOptions` as keyword arguments, each optional."""

    x: str
    hue: str | None
    title: str | None
    logy: bool
    smooth: float | None
    annotations: Iterable[Annotation] | None
    ax: Axes | None
    last_per_step: bool


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


def _option_types(options: type[Any]) -> dict[str, Any]:
    """The options' types, evaluated where they can be (matplotlib's ``Axes`` is imported
    for type checkers only: the plot options keep their annotations as text)."""
    try:
        return get_type_hints(options)
    except NameError:
        return {item.name: item.type for item in dataclasses.fields(options)}


def keyword_options(options: type[Any], before: str | None = None) -> Callable[[F], F]:
    """Show each field of the dataclass ``options`` as a keyword-only parameter of the
    decorated function, in place of its ``**options`` (before its parameter ``before``, or
    last), in ``inspect.signature()`` and in the docstring that ``help()`` shows. A call with
    a keyword that is neither a parameter nor an option fails as on a plain signature. The
    static signature stays the function's own: type its ``**options`` as ``Unpack`` of the
    matching ``TypedDict``.

    Example:
        >>> @keyword_options(PlotOptions)
        ... def draw(**options: "Unpack[PlotKeywords]") -> bool:
        ...     '''Draw.'''
        ...     return PlotOptions(**options).logy
        >>> draw(logy=True)
        True
        >>> draw(logx=True)
        Traceback (most recent call last):
        TypeError: draw() got an unexpected keyword argument 'logx'
    """
    names = frozenset(item.name for item in dataclasses.fields(options))
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        kept = [
            item
            for item in signature.parameters.values()
            if item.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        spread = next(
            (item.name for item in signature.parameters.values() if item not in kept), None
        )
        if spread is None:
            raise TypeError(f"{function.__qualname__}() must take its options as **options")
        at = next((i for i, item in enumerate(kept) if item.name == before), len(kept))
        if before is not None and at == len(kept):
            raise TypeError(f"{function.__qualname__}() has no parameter {before!r}")
        fields = [
            inspect.Parameter(
                item.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=item.default,
                annotation=item.type,
            )
            for item in dataclasses.fields(options)
        ]
        accepted = names.union(item.name for item in kept if item.kind in named)

        @functools.wraps(function)
        def with_options(*args: Any, **kwargs: Any) -> Any:
            # ``**options`` would take any keyword: refuse the unknown ones in Python's words.
            for name in kwargs:
                if name not in accepted:
                    raise TypeError(
                        f"{function.__qualname__}() got an unexpected keyword argument {name!r}"
                    )
            return function(*args, **kwargs)

        with_options.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*kept[:at], *fields, *kept[at:]]
        )
        with_options.__doc__ = _described(function.__doc__, options)
        # What typing.get_type_hints() reads: the options' own types, not the Unpack of the
        # static signature (typing_extensions is not there at runtime).
        with_options.__annotations__ = {
            **{key: value for key, value in function.__annotations__.items() if key != spread},
            **_option_types(options),
        }
        return cast(F, with_options)

    return decorate
