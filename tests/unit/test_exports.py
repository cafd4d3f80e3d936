"""The public surface of ``saga``: a curated, sorted ``__all__``, pinned here."""

from __future__ import annotations

import saga

EXPECTED = [
    "ActivityError",
    "ApplicationError",
    "CancelledError",
    "Client",
    "CompensationError",
    "ConfigurationError",
    "Coordinator",
    "FailureError",
    "HistoryEvent",
    "InvalidArgumentsError",
    "NondeterminismError",
    "PayloadError",
    "RetryPolicy",
    "Saga",
    "SagaError",
    "StepInfo",
    "StoreError",
    "TerminatedError",
    "TimeoutError",
    "TimeoutKind",
    "TransportError",
    "UnknownWorkflowTypeError",
    "Worker",
    "WorkflowAlreadyStartedError",
    "WorkflowDescription",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowStatus",
    "__version__",
    "activity",
    "workflow",
]


def test_all_is_exactly_the_pinned_list() -> None:
    assert saga.__all__ == EXPECTED


def test_all_is_sorted_without_duplicates() -> None:
    assert saga.__all__ == sorted(saga.__all__)
    assert len(set(saga.__all__)) == len(saga.__all__)


def test_every_exported_name_exists() -> None:
    missing = [name for name in saga.__all__ if not hasattr(saga, name)]
    assert missing == []


def test_errors_share_one_root() -> None:
    for name in saga.__all__:
        obj = getattr(saga, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, saga.SagaError), name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from saga import *", namespace)  # noqa: S102 - the point of the test
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(saga.__all__)
