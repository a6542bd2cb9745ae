"""The exception tree of the SDK.

Every failure the SDK raises on purpose derives from :class:`MetricsApiError`::

    MetricsApiError
    ├── MetricsApiRequestError        HTTP error status (a 3xx included), or no answer
    │   ├── MetricsApiNotFoundError     404
    │   ├── MetricsApiPermissionError   401 or 403: the key is refused or may not do this
    │   ├── MetricsApiConflictError     409
    │   ├── MetricsApiRateLimitError    429
    │   ├── MetricsApiTimeoutError      no whole answer within the timeout
    │   ├── MetricsApiConnectionError   the service could not be reached
    │   ├── MetricsApiTransportError    the HTTP client below the SDK failed unexpectedly
    │   └── PartialIngestError          a multi-request ingest stopped part way
    ├── FlushError                    log() events not all stored when flush() had to say so
    ├── ExperimentNotCreatedError     needs a run whose creation still waits in the spool
    ├── OfflineError                  needs the service, and the session is offline
    ├── RunFinishedError              new logging into a finished run (also a ValueError)
    ├── MetricsApiResponseError       an answer that breaks the contract (or is too large)
    ├── PagingError                   a paged read cannot go on without losing rows
    ├── MetricsApiAuthError           credentials could not be resolved
    └── MetricsValidationError        bad input, caught before any request (also a ValueError)

Every error pickles with its fields, so it crosses process boundaries
(``ProcessPoolExecutor``, ``multiprocessing``) intact.

Example:
    >>> import syvain_metrics as sm
    >>> try:
    ...     sm.Experiment.get("missing")
    ... except sm.MetricsApiRequestError as error:
    ...     print(error.status_code, error.error_code)  # doctest: +SKIP
    404 not_found
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class MetricsApiError(RuntimeError):
    """Base class of every error the SDK raises on purpose.

    Example:
        >>> issubclass(MetricsValidationError, MetricsApiError)
        True
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the message, then restore every attribute: subclasses with
        # keyword-only arguments unpickle without a bespoke constructor call.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[MetricsApiError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = Exception.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class MetricsApiRequestError(MetricsApiError):
    """The service answered with an HTTP error, or could not be reached.

    Attributes:
        status_code: the HTTP status, or ``None`` for a network failure.
        error_code: the machine-readable ``code=`` part of the error details, if any.
        retryable: whether the same call may succeed if tried again.
        retry_after: seconds the service asked the client to wait (``Retry-After``), if any.
        field: the request field the answer is about (the ``field=`` part of the error
            details, such as ``"data[3].value"``), if the service named one.

    Example:
        >>> err = MetricsApiRequestError("HTTP 422: bad value", status_code=422,
        ...                              error_code="validation_error", field="data[3].value")
        >>> err.status_code, err.retryable, err.field
        (422, False, 'data[3].value')
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.field = field

    def with_hint(self, hint: str) -> MetricsApiRequestError:
        """The same error (class, status, code, field) with ``hint``, what to write instead,
        added to its message.

        Example:
            >>> err = MetricsApiConflictError("HTTP 409: taken", status_code=409)
            >>> hinted = err.with_hint("Choose another slug.")
            >>> str(hinted), type(hinted).__name__, hinted.status_code
            ('HTTP 409: taken. Choose another slug.', 'MetricsApiConflictError', 409)
        """
        message = str(self.args[0]) if self.args else ""
        hinted: MetricsApiRequestError = _rebuild(
            type(self), (f"{message.rstrip('.')}. {hint}",), dict(self.__dict__)
        )
        return hinted


class MetricsApiNotFoundError(MetricsApiRequestError):
    """HTTP 404: the object does not exist, or not in this organization.

    Example:
        >>> issubclass(MetricsApiNotFoundError, MetricsApiRequestError)
        True
    """


class MetricsApiPermissionError(MetricsApiRequestError):
    """HTTP 401 or 403: the key is not valid, or may not do this.

    Example:
        >>> MetricsApiPermissionError("HTTP 403: forbidden", status_code=403).status_code
        403
    """


class MetricsApiConflictError(MetricsApiRequestError):
    """HTTP 409: the call conflicts with what exists (a taken slug, a reused key).

    Example:
        >>> issubclass(MetricsApiConflictError, MetricsApiRequestError)
        True
    """


class MetricsApiRateLimitError(MetricsApiRequestError):
    """HTTP 429: too many calls; ``retry_after`` says how long the service asked to wait.

    Example:
        >>> MetricsApiRateLimitError("HTTP 429", status_code=429, retry_after=2.0).retry_after
        2.0
    """


class MetricsApiTimeoutError(MetricsApiRequestError):
    """No whole answer within the session's ``timeout`` (connect, headers and body together).

    Example:
        >>> MetricsApiTimeoutError("timed out", retryable=True).status_code is None
        True
    """


class MetricsApiConnectionError(MetricsApiRequestError):
    """The service could not be reached (refused, reset, name not resolved, TLS failure).

    Example:
        >>> MetricsApiConnectionError("could not reach", retryable=True).retryable
        True
    """


class MetricsApiTransportError(MetricsApiRequestError):
    """The HTTP libraries under the SDK (``requests``, ``urllib3``) failed in a way they
    should not: an incompatible version, a bug. Not retried, since trying again cannot help;
    the message names the exception, never a key or token.

    Example:
        >>> error = MetricsApiTransportError("TypeError: ...")
        >>> error.retryable, error.status_code
        (False, None)
    """


_BY_STATUS: dict[int, type[MetricsApiRequestError]] = {
    401: MetricsApiPermissionError,
    403: MetricsApiPermissionError,
    404: MetricsApiNotFoundError,
    409: MetricsApiConflictError,
    429: MetricsApiRateLimitError,
}


def request_error_class(status: int) -> type[MetricsApiRequestError]:
    """The :class:`MetricsApiRequestError` subclass for an HTTP status.

    Example:
        >>> request_error_class(404).__name__, request_error_class(500).__name__
        ('MetricsApiNotFoundError', 'MetricsApiRequestError')
    """
    return _BY_STATUS.get(status, MetricsApiRequestError)


class PartialIngestError(MetricsApiRequestError):
    """An ingest of several requests stopped part way.

    ``stored`` metrics (the first ones, in order) were accepted; ``pending`` holds
    every metric that was not, already carrying its ``client_event_id``, so
    ``experiment.ingest(error.pending)`` resumes without loss or duplication.

    Example:
        >>> try:
        ...     exp.ingest(points)  # doctest: +SKIP
        ... except PartialIngestError as error:
        ...     exp.ingest(error.pending)
    """

    def __init__(
        self,
        message: str,
        *,
        stored: int,
        pending: Sequence[Mapping[str, Any]],
        cause: MetricsApiError,
    ) -> None:
        status = cause.status_code if isinstance(cause, MetricsApiRequestError) else None
        code = cause.error_code if isinstance(cause, MetricsApiRequestError) else None
        retryable = cause.retryable if isinstance(cause, MetricsApiRequestError) else False
        field = cause.field if isinstance(cause, MetricsApiRequestError) else None
        super().__init__(
            message, status_code=status, error_code=code, retryable=retryable, field=field
        )
        self.stored = stored
        self.pending: list[dict[str, Any]] = [dict(m) for m in pending]


@dataclass(frozen=True)
class RejectedEvent:
    """A ``log()`` event the service refused for good (a non-retryable 4xx), with its answer.

    Example:
        >>> RejectedEvent({"name": "loss", "value": 1.0}, "HTTP 400: bad", 400).status_code
        400
    """

    event: dict[str, Any]
    message: str
    status_code: int | None = None


class FlushError(MetricsApiError):
    """``flush()``, the end of ``run()`` or ``session.close()`` could not confirm every
    ``log()`` event: some were rejected by the service, or the wait ran out.

    Attributes:
        stored: events this wait saw acknowledged by the service.
        pending: events not yet acknowledged; they stay queued (and spooled on disk, when the
            session has a spool) and the session keeps sending them.
        rejected: the events the service refused, each with its answer; they are not retried.
        timed_out: whether the wait ended before every event had an answer.
        spool_dir: where the pending events are kept on disk, or ``None``.
        unspooled: how many of the pending events are held in memory only, because the
            spool could not be written (a full disk): a kill of the process would lose them.
        non_finite: the non-finite values (NaN, inf, -inf) ``log()`` skipped instead of
            sending, by metric name (summed over the runs the wait was about).

    Example:
        >>> error = FlushError(stored=10, pending=2, rejected=[], timed_out=True)
        >>> error.pending, error.timed_out
        (2, True)
        >>> print(error)
        log() delivery incomplete: 10 stored, 2 still pending and retrying (the wait ended first).
        >>> print(FlushError(stored=9, pending=1, rejected=[], timed_out=True,
        ...                  non_finite={"loss": 1}))  # doctest: +NORMALIZE_WHITESPACE
        log() delivery incomplete: 9 stored, 1 still pending and retrying, 1 non-finite value
        not sent (loss: 1) (the wait ended first).
    """

    def __init__(
        self,
        *,
        stored: int,
        pending: int,
        rejected: Sequence[RejectedEvent],
        timed_out: bool,
        spool_dir: str | None = None,
        unspooled: int = 0,
        non_finite: Mapping[str, int] | None = None,
    ) -> None:
        self.stored = stored
        self.pending = pending
        self.rejected = list(rejected)
        self.timed_out = timed_out
        self.spool_dir = spool_dir
        self.unspooled = unspooled
        self.non_finite: dict[str, int] = dict(non_finite or {})
        super().__init__(self._describe())

    @property
    def spooled_safely(self) -> bool:
        """Whether what this reports is only events waiting, every one of them in the spool
        on disk: nothing rejected, nothing held in memory only. Such events are sent by the
        sender while the process lives, or by ``syvain-metrics sync`` after: nothing is lost.

        Example:
            >>> FlushError(stored=1, pending=2, rejected=[], timed_out=True,
            ...            spool_dir="/tmp/spool/1-ab").spooled_safely
            True
            >>> FlushError(stored=1, pending=2, rejected=[], timed_out=True).spooled_safely
            False
        """
        return not self.rejected and not self.unspooled and self.spool_dir is not None

    def _describe(self) -> str:
        parts = [f"{self.stored} stored"]
        if self.pending:
            where = (
                f", kept in {self.spool_dir} for `syvain-metrics sync` if this process ends"
                if self.spool_dir
                else ""
            )
            parts.append(f"{self.pending} still pending and retrying{where}")
            if self.unspooled:
                parts.append(
                    f"{self.unspooled} of them held in memory only (the spool cannot be "
                    "written): lost if this process ends before they are sent"
                )
        if self.rejected:
            first = self.rejected[0]
            name = first.event.get("name")
            parts.append(
                f"{len(self.rejected)} rejected by the service (first: {name!r} at step "
                f"{first.event.get('step')}: {first.message})"
            )
        if self.non_finite:
            total = sum(self.non_finite.values())
            counts = ", ".join(f"{name}: {count:,}" for name, count in self.non_finite.items())
            plural = "value" if total == 1 else "values"
            parts.append(f"{total:,} non-finite {plural} not sent ({counts})")
        ending = " (the wait ended first)" if self.timed_out else ""
        return f"log() delivery incomplete: {', '.join(parts)}{ending}."


class ExperimentNotCreatedError(MetricsApiError):
    """The call needs an experiment the service has not created yet: the service could not
    be reached when it was created, and its creation waits in the spool (the session's
    sender creates it when the service answers, or ``syvain-metrics sync`` does after the
    process ended). ``log()`` and status changes work meanwhile; reads and ``exp.url`` do
    not.

    Example:
        >>> issubclass(ExperimentNotCreatedError, MetricsApiError)
        True
    """


class OfflineError(MetricsApiError):
    """The call needs the service, and the session is offline (``Session(offline=True)`` or
    ``SYVAIN_METRICS_OFFLINE=1``): it sends nothing; ``syvain-metrics sync`` does later.

    Example:
        >>> issubclass(OfflineError, MetricsApiError)
        True
    """


class RunFinishedError(MetricsApiError, ValueError):
    """A run that has finished (status ``done`` or ``error``) was given new logging:
    ``run()`` or ``start()`` without ``resume_from``, or ``log()`` on an experiment that came
    finished from the service. Raised before anything is written, so a notebook cell run
    again never stores its values twice. The message names the choices: a new run, resuming
    it, or logging it again from the start and reading with ``last_per_step=True``. A
    ``ValueError`` too, like writing to a closed file.

    Attributes:
        slug: the run's slug.
        status: its status as the experiment object knows it (``done`` or ``error``).

    Example:
        >>> error = RunFinishedError("Run 'sgd-0.1' has already finished (done).",
        ...                          slug="sgd-0.1", status="done")
        >>> error.slug, isinstance(error, ValueError)
        ('sgd-0.1', True)
    """

    def __init__(self, message: str, *, slug: str, status: str) -> None:
        super().__init__(message)
        self.slug = slug
        self.status = status


class MetricsApiResponseError(MetricsApiError):
    """A successful HTTP answer whose body breaks the contract.

    Raised for a body that is not JSON, not an envelope, or whose ``data`` does
    not have the documented shape. The message names the operation.

    Example:
        >>> str(MetricsApiResponseError("Response for get_experiment did not match"))
        'Response for get_experiment did not match'
    """


class PagingError(MetricsApiError):
    """A read cannot go on without losing or repeating rows: more rows at one sort position
    than the largest page, an answer out of the order asked for, or a bound the service does
    not keep. Raised instead of returning a silent prefix.

    Example:
        >>> issubclass(PagingError, MetricsApiError)
        True
    """


class MetricsApiAuthError(MetricsApiError):
    """Credentials could not be resolved (missing or broken ``auth.json``, empty key, bad host).

    Example:
        >>> import syvain_metrics as sm
        >>> sm.connect("   ")  # doctest: +SKIP
        Traceback (most recent call last):
        MetricsApiAuthError: Metrics API key must not be empty.
    """


class MetricsValidationError(MetricsApiError, ValueError):
    """Input that breaks a limit of the contract, caught before any request is sent.

    ``errors`` maps each bad field (``"data[3].value"``) to what is wrong with it.

    Example:
        >>> err = MetricsValidationError({"name": ["Length must be between 1 and 200."]})
        >>> err.errors
        {'name': ['Length must be between 1 and 200.']}
        >>> str(err)
        'Invalid input: name: Length must be between 1 and 200.'
    """

    def __init__(self, errors: Mapping[str, Sequence[str]] | str) -> None:
        if isinstance(errors, str):
            self.errors: dict[str, list[str]] = {"_": [errors]}
            super().__init__(f"Invalid input: {errors}")
            return
        self.errors = {field: list(msgs) for field, msgs in errors.items()}
        parts = [f"{field}: {' '.join(msgs)}" for field, msgs in self.errors.items()]
        super().__init__("Invalid input: " + "; ".join(parts))


__all__ = [
    "ExperimentNotCreatedError",
    "FlushError",
    "MetricsApiAuthError",
    "MetricsApiConflictError",
    "MetricsApiConnectionError",
    "MetricsApiError",
    "MetricsApiNotFoundError",
    "MetricsApiPermissionError",
    "MetricsApiRateLimitError",
    "MetricsApiRequestError",
    "MetricsApiResponseError",
    "MetricsApiTimeoutError",
    "MetricsApiTransportError",
    "MetricsValidationError",
    "OfflineError",
    "PagingError",
    "PartialIngestError",
    "RejectedEvent",
    "RunFinishedError",
]
