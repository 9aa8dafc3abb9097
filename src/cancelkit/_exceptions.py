"""Reasons and exceptions: the vocabulary every layer of cancelkit speaks.

Every exception of cancelkit lives here. The hierarchy, and the one rule behind it
(DESIGN.md, contract 1)::

    BaseException
     └── Cancelled                  "you are being cancelled" (sync code, token.check())
    Exception
     ├── RunCancelled               "the work you waited for was cancelled"
     │    └── BudgetExceeded        a call did not fit its budget (kind ``budget``)
     ├── ModelError                 a model call failed (``provider``, ``status``, ``request_id``)
     │    ├── ModelUnavailable      the connection failed or was lost (also a ConnectionError)
     │    ├── ModelRateLimited      429, or overloaded (529): try again after ``retry_after``
     │    ├── ModelRejected         any other 4xx: the request is wrong; a retry will not help
     │    └── ModelServerError      5xx, an error event, a malformed stream or a reply
     │                              ended before its end: the provider failed
     └── OSError
          └── ConnectionError
               └── StoreUnavailable  the database cannot be reached; nothing written

The adapters of :mod:`cancelkit.llm` map the SDKs' exceptions to the ``ModelError``
kinds (``cancelkit/llm/_errors.py``), keeping the SDK's as ``__cause__``.
    Warning
     └── RuntimeWarning
          └── AbandonedThreadWarning   a worker thread ignored its token past its grace

In async code "you are being cancelled" is the backend's own exception
(``asyncio.CancelledError``, ``trio.Cancelled``); cancelkit never invents another one
there. ``Cancelled`` derives from ``BaseException`` so that tool code written as
``except Exception:`` cannot swallow a Stop. ``RunCancelled`` is an ordinary
``Exception``: the caller is fine, only what it waited for was stopped.

Every cancellation carries a :class:`CancelReason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

import anyio

__all__ = (
    "AbandonedThreadWarning",
    "BackendUnavailable",
    "BudgetExceeded",
    "CancelKind",
    "CancelReason",
    "Cancelled",
    "ModelError",
    "ModelRateLimited",
    "ModelRejected",
    "ModelServerError",
    "ModelUnavailable",
    "RunCancelled",
    "StoreUnavailable",
    "other_errors",
)

CancelKind = Literal["user", "disconnect", "timeout", "budget", "shutdown", "error", "parent"]
"""Why something was cancelled. The set is closed: every layer can switch on it."""

_KINDS: Final[frozenset[str]] = frozenset(get_args(CancelKind))


@dataclass(frozen=True, slots=True)
class CancelReason:
    """Why a piece of work was stopped: a ``kind`` from a closed set and free text.

    Args:
        kind: one of ``user``, ``disconnect``, ``timeout``, ``budget``, ``shutdown``,
            ``error``, ``parent``.
        message: a human-readable detail, for logs and API responses.

    Raises:
        ValueError: if ``kind`` is not one of the known kinds.
        TypeError: if ``message`` is not a string.
    """

    kind: CancelKind
    message: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown cancel kind {self.kind!r}; expected one of {sorted(_KINDS)}")
        if not isinstance(self.message, str):
            raise TypeError(f"message must be a str, not {type(self.message).__name__}")

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


class Cancelled(BaseException):
    """Raised by :meth:`CancelToken.check` in sync code: "you are being cancelled".

    It is a ``BaseException`` so ``except Exception`` in tool code does not swallow it.
    Catch it only to clean up, then re-raise.

    Attributes:
        reason: why the token was cancelled.
    """

    reason: CancelReason

    def __init__(self, reason: CancelReason) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"stop: this work is being cancelled ({self.reason})"


class RunCancelled(Exception):  # noqa: N818 - names the outcome, like asyncio.CancelledError
    """The work you waited for (a run, a thread call, a child) was cancelled.

    An ordinary ``Exception``: the caller itself is not being cancelled.

    Attributes:
        reason: why the work was cancelled.
    """

    reason: CancelReason

    def __init__(self, reason: CancelReason) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"the work awaited was cancelled ({self.reason})"


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a Stop reaching the code that caught it, not a failure: the
    backend's cancellation, :class:`Cancelled`, :class:`RunCancelled`, or a group of
    nothing but those (trio's nurseries)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(inner) for inner in exc.exceptions)
    return isinstance(exc, anyio.get_cancelled_exc_class() | Cancelled | RunCancelled)


class BudgetExceeded(RunCancelled):
    """A call could not be made within the budget; ``.reason.kind`` is ``budget``."""


class StoreUnavailable(ConnectionError):  # noqa: N818 - a state, like ConnectionRefused
    """The database cannot be reached or opened; nothing was written."""


class BackendUnavailable(ConnectionError):  # noqa: N818 - a state, like StoreUnavailable
    """The backend shared by several processes (Redis, PostgreSQL) cannot be reached.

    A Stop that raises it was not delivered: retry it, or tell the user. Runs of
    this process can still be stopped here (:meth:`Runs.cancel`).
    """


class ModelError(Exception):
    """A model call failed; the SDK's own exception is the ``__cause__``.

    Attributes:
        provider: ``"anthropic"``, ``"openai"``.
        status: the HTTP status, when the provider answered one.
        request_id: the provider's id of the request, when it sent one (quote it to
            the provider's support).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.request_id = request_id


class ModelUnavailable(ModelError, ConnectionError):  # noqa: N818 - a state, like StoreUnavailable
    """The model server could not be reached, or the connection was lost mid-reply."""


class ModelRateLimited(ModelError):  # noqa: N818 - a state, like StoreUnavailable
    """The provider is rate limiting or overloaded (429, 529).

    Attributes:
        retry_after: seconds the provider asked to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, request_id=request_id)
        self.retry_after = retry_after


class ModelRejected(ModelError):  # noqa: N818 - what the provider did, like RunCancelled
    """The provider refused the request (4xx): fix the request, do not retry it."""


class ModelServerError(ModelError):
    """The provider failed: 5xx, an error event in the middle of a stream, a stream
    that is not well-formed Server-Sent Events of JSON, an event of the wrong shape
    (its message says what was wrong and quotes a sample; the reader's error is the
    ``__cause__``), or a reply whose body ended before the reply did (no stop reason:
    cut short by the provider or a proxy; nobody cancelled it)."""


class AbandonedThreadWarning(RuntimeWarning):
    """A function in a worker thread did not return within its grace period.

    The thread keeps running (Python cannot kill a thread); cancelkit stops waiting
    for it, frees its pool slot and reports it by name instead of leaking it silently.
    """


_OTHERS_ATTR: Final = "__cancelkit_other_errors__"


def attach_other_errors(error: BaseException, others: list[BaseException]) -> None:
    """Keep the failures that lost the race on the one that is raised.

    The objects stay reachable through :func:`other_errors`; a note per failure makes
    them visible in the traceback as well.
    """
    if not others:
        return
    kept: tuple[BaseException, ...] = getattr(error, _OTHERS_ATTR, ())
    setattr(error, _OTHERS_ATTR, kept + tuple(others))
    for other in others:
        error.add_note(f"cancelkit: another child failed too: {other!r}")


def as_failure(exc: BaseException) -> BaseException:
    """What a child's ending means to the one that waited for it: a sync
    ``Cancelled`` becomes ``RunCancelled`` with its reason; anything else is itself."""
    if isinstance(exc, Cancelled):
        error = RunCancelled(exc.reason)
        error.__cause__ = exc
        return error
    return exc


def gather_timeout(timeout: float | None) -> TimeoutError:
    """The error of a ``gather`` that ran past its ``timeout``."""
    return TimeoutError(f"gather() timed out after {timeout}s")


def other_errors(error: BaseException) -> tuple[BaseException, ...]:
    """The other failures that ``gather`` or ``amap`` kept on the error they raised.

    ``gather`` raises the first failure as itself; any child that failed after it
    (while being cancelled, or at the same moment) is kept here, in completion order.

    Args:
        error: an exception raised by ``gather`` or ``amap``.

    Returns:
        The other failures; an empty tuple when there were none.
    """
    others: tuple[BaseException, ...] = getattr(error, _OTHERS_ATTR, ())
    return others
