"""Bad input gets a clear error naming what is wrong, and nothing is half-written.

On SQLite and PostgreSQL: every refused start leaves no workflow row and no history.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from saga import (
    ActivityError,
    ApplicationError,
    Client,
    InvalidArgumentsError,
    PayloadError,
    UnknownWorkflowTypeError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowStatus,
    activity,
    workflow,
)
from saga.testing import WorkflowEnvironment
from saga.transports.memory import MemoryTransport
from tests.integration.engine_helpers import WAIT, eventually, of_type, types_of

QUEUE = "bad-input-tests"


@activity.defn(queue=QUEUE)
async def add(a: int, b: int) -> int:
    return a + b


@activity.defn(queue=QUEUE)
async def says_a_number() -> int:
    return "not a number"  # type: ignore[return-value]


@workflow.defn
class Repeat:
    def __init__(self) -> None:
        self.extra = 0

    @workflow.signal
    def bump(self, by: int) -> None:
        self.extra += by

    @workflow.run
    async def run(self, word: str, times: int) -> str:
        await workflow.wait_condition(lambda: self.extra > 0)
        return word * (times + self.extra)


@workflow.defn
class CallsByName:
    @workflow.run
    async def run(self, name: str, args: list[Any], with_queue: bool) -> Any:
        if with_queue:
            return await workflow.execute_activity(name, *args, queue=QUEUE)
        return await workflow.execute_activity(name, *args)


@workflow.defn
class CallsTyped:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(says_a_number)


@workflow.defn
class HugeResult:
    @workflow.run
    async def run(self) -> int:
        return 2**80


def environment(database_url: str) -> WorkflowEnvironment:
    return WorkflowEnvironment(
        workflows=[Repeat, CallsByName, CallsTyped, HugeResult],
        activities=[add, says_a_number],
        database_url=database_url,
    )


async def assert_nothing_written(env: WorkflowEnvironment, workflow_id: str) -> None:
    assert await env.store.get_workflow(workflow_id) is None
    assert [d.id async for d in env.client.list_workflows()] == []
    with pytest.raises(WorkflowNotFoundError):
        await env.client.get_workflow_handle(workflow_id).history()


# --- refused starts ---------------------------------------------------------------------------
async def test_an_unknown_workflow_type_is_refused_by_name(database_url: str) -> None:
    async with environment(database_url) as env:
        with pytest.raises(UnknownWorkflowTypeError) as refused:
            await env.client.start_workflow("Nope", "x", id="nope-1")
        assert refused.value.name == "Nope"
        assert "'Nope'" in str(refused.value)
        assert "Repeat" in str(refused.value)  # the known types are listed
        await assert_nothing_written(env, "nope-1")


async def test_an_unknown_type_is_refused_by_a_client_without_definitions(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        bare = Client(env.store, MemoryTransport(env.broker))
        with pytest.raises(UnknownWorkflowTypeError, match="'Nope'"):
            await bare.start_workflow("Nope", id="nope-2")
        await assert_nothing_written(env, "nope-2")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("ab", "three"), "'times'"),  # wrong type
        ((["a", "b"], 3), "'word'"),  # wrong type, first parameter
        (("ab",), "times"),  # too few
        ((), "word, times"),  # none at all
        (("ab", 3, 4), "takes 2 argument"),  # too many
    ],
    ids=["wrong-type", "wrong-type-first", "missing-one", "missing-all", "too-many"],
)
async def test_arguments_that_do_not_fit_are_refused_naming_the_parameter(
    database_url: str, args: tuple[Any, ...], named: str
) -> None:
    async with environment(database_url) as env:
        for target in (Repeat.run, Repeat, "Repeat"):
            with pytest.raises(InvalidArgumentsError) as refused:
                await env.client.start_workflow(target, *args, id="bad-args")
            assert named in str(refused.value)
            assert "Repeat.run" in refused.value.target
        await assert_nothing_written(env, "bad-args")


async def test_unserialisable_arguments_are_refused(database_url: str) -> None:
    async with environment(database_url) as env:
        with pytest.raises(InvalidArgumentsError, match="'times'"):
            await env.client.start_workflow(Repeat.run, "ab", 2**70, id="huge-arg")
        bare = Client(env.store, MemoryTransport(env.broker))
        with pytest.raises(InvalidArgumentsError):
            await bare.start_workflow("Repeat", "ab", object(), id="huge-arg")
        await assert_nothing_written(env, "huge-arg")


async def test_a_start_by_name_that_skipped_the_check_fails_with_the_reason(
    database_url: str,
) -> None:
    # A client without definitions (the CLI's) cannot check arguments; the coordinator
    # then fails the workflow, naming the parameter, rather than leaving it stuck.
    async with environment(database_url) as env:
        bare = Client(env.store, MemoryTransport(env.broker))
        handle = await bare.start_workflow("Repeat", "ab", "three", id="late-check")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        assert failed.value.status == "FAILED"
        assert "'times'" in str(failed.value.cause)
        info = await handle.describe()
        assert info.status is WorkflowStatus.FAILED and info.stuck_reason is None
        assert await types_of(handle) == ["WorkflowStarted", "WorkflowFailed"]


# --- bad steps inside a workflow --------------------------------------------------------------
async def test_an_unknown_activity_fails_the_workflow_naming_it(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(CallsByName.run, "nope", [], True, id="no-act")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        cause = failed.value.cause
        assert isinstance(cause, ActivityError)
        assert cause.activity == "nope" and cause.attempt == 1  # not retried: it cannot work
        assert "'nope'" in str(cause) and "not registered" in str(cause)
        assert isinstance(cause.cause, ApplicationError)
        assert cause.cause.type == "ActivityNotRegistered"
        assert (await handle.describe()).steps[0].status == "FAILED"


async def test_an_activity_by_name_without_a_queue_fails_naming_it(database_url: str) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(CallsByName.run, "add", [1, 2], False, id="noq")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        assert "'add'" in str(failed.value) and "queue" in str(failed.value)
        assert await types_of(handle) == ["WorkflowStarted", "WorkflowFailed"]


async def test_activity_arguments_that_do_not_fit_fail_the_step_for_good(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(
            CallsByName.run, "add", [1, "two"], True, id="bad-act-args"
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        cause = failed.value.cause
        assert isinstance(cause, ActivityError) and cause.attempt == 1
        assert "'b'" in str(cause)
        assert isinstance(cause.cause, ApplicationError)
        assert cause.cause.type == "InvalidArguments"


async def test_an_activity_result_that_does_not_fit_its_type_fails_the_step(
    database_url: str,
) -> None:
    # Caught on the worker, where the step can fail, not in the workflow, where the
    # only thing left would be to mark it stuck.
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(CallsTyped.run, id="bad-result")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        cause = failed.value.cause
        assert isinstance(cause, ActivityError) and cause.attempt == 1
        assert isinstance(cause.cause, ApplicationError) and cause.cause.type == "PayloadError"
        info = await handle.describe()
        assert info.stuck_reason is None and info.status is WorkflowStatus.FAILED


async def test_a_workflow_result_that_cannot_be_stored_fails_the_workflow(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(HugeResult.run, id="huge-result")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result(timeout=WAIT)
        assert failed.value.status == "FAILED"
        assert isinstance(failed.value.cause, ApplicationError)
        assert failed.value.cause.type == "PayloadError"
        assert "64-bit" in str(failed.value.cause)


# --- bad signals and ids ----------------------------------------------------------------------
async def test_a_signal_that_cannot_be_serialised_is_refused_and_not_recorded(
    database_url: str,
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Repeat.run, "ab", 1, id="sig")
        with pytest.raises(PayloadError):
            await handle.signal("bump", object())
        await handle.signal("bump", 1)
        assert await handle.result(timeout=WAIT) == "abab"
        assert (await types_of(handle)).count("WorkflowSignaled") == 1


async def test_a_signal_that_does_not_fit_its_handler_is_dropped_not_stuck(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with environment(database_url) as env:
        handle = await env.client.start_workflow(Repeat.run, "ab", 1, id="sig-drop")
        with caplog.at_level(logging.WARNING, logger="saga.workflow"):
            await handle.signal("bump", "lots")
            await eventually(
                lambda: _has_signal(handle, "bump", ["lots"]), what="the bad signal recorded"
            )
            await handle.signal("bump", 2)
            assert await handle.result(timeout=WAIT) == "ababab"
        assert "dropping signal 'bump'" in caplog.text
        assert (await handle.describe()).stuck_reason is None


async def _has_signal(handle: Any, name: str, args: list[Any]) -> bool:
    events = of_type(await handle.history(), "WorkflowSignaled")
    return any((e.attributes.name, e.attributes.args) == (name, args) for e in events)


async def test_operations_on_an_unknown_id_say_it_is_not_found(database_url: str) -> None:
    async with environment(database_url) as env:
        missing = env.client.get_workflow_handle("missing")
        for operation in (missing.describe, missing.history, missing.result, missing.cancel):
            with pytest.raises(WorkflowNotFoundError, match="'missing'"):
                await operation()
        with pytest.raises(WorkflowNotFoundError, match="'missing'"):
            await missing.signal("bump", 1)
        with pytest.raises(WorkflowNotFoundError, match="'missing'"):
            await missing.terminate("why")
        await assert_nothing_written(env, "missing")
