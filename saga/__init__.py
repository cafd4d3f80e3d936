"""saga: durable sagas in plain async Python.

Temporal's programming model (workflows as code, activities, retries, timers) with
first-class compensations, on the PostgreSQL (or SQLite) and RabbitMQ you already run.
"""

from __future__ import annotations

from saga import activity, workflow
from saga.client import Client, StepInfo, WorkflowDescription, WorkflowHandle
from saga.compensation import Saga
from saga.coordinator import Coordinator
from saga.errors import (
    ActivityError,
    ApplicationError,
    CancelledError,
    CompensationError,
    ConfigurationError,
    FailureError,
    InvalidArgumentsError,
    NondeterminismError,
    PayloadError,
    SagaError,
    StoreError,
    TerminatedError,
    TimeoutError,
    TimeoutKind,
    TransportError,
    UnknownWorkflowTypeError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from saga.history import HistoryEvent, WorkflowStatus
from saga.retry import RetryPolicy
from saga.worker import Worker

__version__ = "0.1.0"

__all__ = [
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
