"""Every operator command of ``saga``, as a process: its happy path, its error path,
its ``--json`` form, and the exit codes of API.md (0 ok, 1 failed, 2 bad usage).

One coordinator and one worker serve the whole module (``module_cluster``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import DEADLINE, Cluster, assert_one_line_error

pytestmark = pytest.mark.integration

APP = "tests.e2e.apps.trip"


@pytest.fixture(scope="module")
def cli(module_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, migrated, serving, with one completed and one compensated trip."""
    assert "up to date" in module_cluster.saga_ok("db", "upgrade")
    module_cluster.coordinator()
    module_cluster.worker("cars", "hotels", "flights")
    module_cluster.saga_ok(
        "start", "E2ETrip", "--id", "cli-ok", "--wait", "--input", json.dumps({"name": "ann"})
    )
    failed = module_cluster.saga(
        "start",
        "E2ETrip",
        "--id",
        "cli-bad",
        "--wait",
        "--input",
        json.dumps({"name": "bob", "fail_at": "flight"}),
    )
    assert failed.returncode == 1, failed.stderr
    yield module_cluster


def approval(cli: Cluster, workflow_id: str) -> None:
    """Start a workflow that runs until it is signalled, cancelled or terminated."""
    assert (
        cli.saga_ok(
            "start",
            "E2EApproval",
            "--id",
            workflow_id,
            "--input",
            json.dumps(f"{workflow_id} request"),
        ).strip()
        == workflow_id
    )


# --- db upgrade ---------------------------------------------------------------------------
def test_db_upgrade_is_idempotent_and_speaks_json(cli: Cluster) -> None:
    assert cli.saga_json("db", "upgrade")["schema"] == "up to date"


def test_db_upgrade_of_an_unreachable_database_is_one_line(cli: Cluster) -> None:
    done = cli.saga(
        "db", "upgrade", "--db", "postgresql+asyncpg://postgres@127.0.0.1:1/x", connect=False
    )
    assert "cannot connect to postgresql+asyncpg://postgres@127.0.0.1:1/x" in (
        assert_one_line_error(done)
    )


# --- start --------------------------------------------------------------------------------
def test_start_prints_the_id_and_wait_prints_the_result(cli: Cluster) -> None:
    started = cli.saga_ok("start", "E2ETrip", "--input", json.dumps({"name": "cy"}))
    workflow_id = started.strip()
    assert workflow_id.startswith("E2ETrip-")
    waited = cli.saga_ok("result", workflow_id, "--timeout", str(DEADLINE))
    assert set(json.loads(waited)) == {"car", "hotel", "flight"}

    as_json = cli.saga_json(
        "start", "E2ETrip", "--id", "cli-start-json", "--input", json.dumps({"name": "cy"})
    )
    assert as_json["id"] == "cli-start-json" and as_json["run_id"]
    human = cli.saga_ok(
        "start",
        "E2ETrip",
        "--id",
        "cli-start-wait",
        "--wait",
        "--input",
        json.dumps({"name": "cy"}),
    )
    assert json.loads(human)["car"].startswith("car:cli-start-wait/")


def test_start_errors(cli: Cluster) -> None:
    unknown = assert_one_line_error(cli.saga("start", "NoSuchWorkflow"))
    assert (
        unknown
        == "saga: unknown workflow type 'NoSuchWorkflow' (known: E2EApproval, E2EHold, E2ETrip)"
    )
    bad_json = assert_one_line_error(cli.saga("start", "E2ETrip", "--input", "{nope"), code=2)
    assert bad_json.startswith("saga: error: --input is not valid JSON")
    approval(cli, "cli-dup")
    dup = assert_one_line_error(
        cli.saga("start", "E2EApproval", "--id", "cli-dup", "--input", '"again"')
    )
    assert "'cli-dup' is already running" in dup
    cli.saga_ok("terminate", "cli-dup", "--reason", "test over")


def test_start_wait_of_a_failing_workflow_exits_1_and_json_has_the_error(cli: Cluster) -> None:
    done = cli.saga(
        "start",
        "E2ETrip",
        "--id",
        "cli-fail-json",
        "--wait",
        "--json",
        "--input",
        json.dumps({"name": "dee", "fail_at": "car"}),
    )
    line = assert_one_line_error(done)
    assert line.startswith("saga: workflow 'cli-fail-json' ended FAILED:")
    body = json.loads(done.stdout)
    assert body["status"] == "FAILED" and body["result"] is None
    assert body["error"]["type"] == "ActivityError"
    assert body["error"]["cause"]["type"] == "BookingRefused"


# --- list ---------------------------------------------------------------------------------
def test_list_shows_a_table_and_json_with_the_objects_field_names(cli: Cluster) -> None:
    table = cli.saga_ok("list")
    assert "ID" in table and "STATUS" in table
    ok_row = next(line for line in table.splitlines() if line.split()[:1] == ["cli-ok"])
    assert "E2ETrip" in ok_row and "COMPLETED" in ok_row

    rows = cli.saga_json("list", "--status", "COMPENSATED", "--type", "E2ETrip")
    assert [r["id"] for r in rows] == ["cli-bad"]
    assert {
        "id",
        "run_id",
        "type",
        "status",
        "start_time",
        "close_time",
        "input",
        "result",
        "error",
        "history_length",
        "stuck_reason",
        "steps",
    } <= set(rows[0])
    assert cli.saga_json("list", "--type", "NoSuchType") == []
    assert len(cli.saga_json("list", "--limit", "1")) == 1


def test_list_errors(cli: Cluster) -> None:
    assert "invalid choice: 'DONE'" in assert_one_line_error(
        cli.saga("list", "--status", "DONE"), code=2
    )
    assert "must be more than 0" in assert_one_line_error(cli.saga("list", "--limit", "0"), code=2)


# --- describe, history, result ------------------------------------------------------------
def test_describe_human_and_json(cli: Cluster) -> None:
    human = cli.saga_ok("describe", "cli-bad")
    for text in (
        "reserve_car",
        "book_hotel",
        "book_flight",
        "↩ cancel_car",
        "↩ cancel_hotel",
        "status: COMPENSATED",
        "BookingRefused",
    ):
        assert text in human
    body = cli.saga_json("describe", "cli-bad")
    assert body["id"] == "cli-bad" and body["type"] == "E2ETrip"
    assert body["status"] == "COMPENSATED"
    assert [s["activity"] for s in body["steps"]][:3] == [
        "reserve_car",
        "book_hotel",
        "book_flight",
    ]
    assert {s["activity"] for s in body["compensations"]} == {"cancel_car", "cancel_hotel"}
    assert body["error"]["cause"]["message"] == "no flight available for bob"


def test_history_human_and_json(cli: Cluster) -> None:
    human = cli.saga_ok("history", "cli-ok")
    assert "WorkflowStarted" in human and "WorkflowCompleted" in human
    exported = cli.saga_json("history", "cli-ok")
    assert exported["workflow_id"] == "cli-ok"
    events = exported["events"]
    assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "WorkflowStarted"
    assert events[-1]["type"] == "WorkflowCompleted"
    assert set(events[0]) == {"event_id", "type", "timestamp", "attributes"}


def test_result_of_completed_and_failed_workflows(cli: Cluster) -> None:
    assert set(json.loads(cli.saga_ok("result", "cli-ok"))) == {"car", "hotel", "flight"}
    body = cli.saga_json("result", "cli-ok")
    assert body["status"] == "COMPLETED" and body["error"] is None
    failed = cli.saga("result", "cli-bad")
    assert "'cli-bad' ended COMPENSATED" in assert_one_line_error(failed)
    assert failed.stdout == ""


def test_result_timeout_while_running(cli: Cluster) -> None:
    approval(cli, "cli-still-running")
    line = assert_one_line_error(cli.saga("result", "cli-still-running", "--timeout", "0.5"))
    assert line == "saga: workflow 'cli-still-running' is still running after 0.5s"
    cli.saga_ok("terminate", "cli-still-running", "--reason", "test over")


@pytest.mark.parametrize(
    "command",
    [
        ["describe"],
        ["history"],
        ["result"],
        ["cancel"],
        ["terminate", "--reason", "r"],
        ["signal", "--input", '"x"'],
    ],
)
def test_unknown_id_is_exit_1_with_a_clear_message(cli: Cluster, command: list[str]) -> None:
    argv = [
        command[0],
        "no-such-workflow",
        *(["approve"] if command[0] == "signal" else []),
        *command[1:],
    ]
    assert assert_one_line_error(cli.saga(*argv)) == "saga: workflow 'no-such-workflow' not found"


# --- signal, cancel, terminate -------------------------------------------------------------
def test_signal_delivers_the_argument(cli: Cluster) -> None:
    approval(cli, "cli-signal")
    said = cli.saga_ok("signal", "cli-signal", "approve", "--input", '"ops"')
    assert "signal of cli-signal recorded" in said
    outcome = cli.saga_json("result", "cli-signal", "--timeout", str(DEADLINE))
    assert outcome["result"] == "cli-signal request approved by ops"


def test_cancel_ends_the_workflow_cancelled(cli: Cluster) -> None:
    approval(cli, "cli-cancel")
    body = cli.saga_json("cancel", "cli-cancel", "--reason", "changed our mind")
    assert body == {"id": "cli-cancel", "run_id": body["run_id"], "requested": "cancel"}
    done = cli.saga("result", "cli-cancel", "--timeout", str(DEADLINE))
    assert "ended CANCELLED" in assert_one_line_error(done)


def test_terminate_ends_the_workflow_terminated(cli: Cluster) -> None:
    approval(cli, "cli-terminate")
    assert "termination of cli-terminate recorded" in cli.saga_ok(
        "terminate", "cli-terminate", "--reason", "operator said so"
    )
    done = cli.saga("result", "cli-terminate", "--timeout", str(DEADLINE))
    line = assert_one_line_error(done)
    assert "ended TERMINATED" in line and "operator said so" in line


@pytest.mark.parametrize(
    "command", [["cancel"], ["terminate", "--reason", "r"], ["signal", "approve"]]
)
def test_steering_a_closed_workflow_is_exit_1(cli: Cluster, command: list[str]) -> None:
    line = assert_one_line_error(cli.saga(command[0], "cli-ok", *command[1:]))
    assert line == f"saga: cannot {command[0]} workflow 'cli-ok': it already ended COMPLETED"


# --- replay ---------------------------------------------------------------------------------
def test_replay_of_an_exported_history(cli: Cluster) -> None:
    exported = cli.saga_ok("history", "cli-bad", "--json")
    path = cli.folder / "cli-bad.json"
    path.write_text(exported)
    said = cli.saga_ok("replay", "--app", APP, str(path))
    assert said.strip().endswith("of cli-bad: deterministic")
    assert cli.saga_json("replay", "--app", APP, str(path))["deterministic"] is True


def test_replay_of_a_history_the_code_no_longer_matches_is_exit_1(cli: Cluster) -> None:
    data = json.loads(cli.saga_ok("history", "cli-ok", "--json"))
    scheduled = next(e for e in data["events"] if e["type"] == "ActivityScheduled")
    scheduled["attributes"]["activity"] = "reserve_boat"  # what older code did
    path = cli.folder / "changed.json"
    path.write_text(json.dumps(data))
    line = assert_one_line_error(cli.saga("replay", "--app", APP, str(path)))
    assert "nondeterminism" in line and "reserve_boat" in line


@pytest.mark.parametrize(
    "content", [None, "{not json", '{"events": 3}'], ids=["missing", "not-json", "not-a-history"]
)
def test_replay_of_an_unreadable_file_is_exit_1(
    cli: Cluster, tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "history.json"
    if content is not None:
        path.write_text(content)
    line = assert_one_line_error(cli.saga("replay", "--app", APP, str(path)))
    assert line.startswith(f"saga: cannot read history {path}")


# --- bad usage: exit 2, one line ------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["start"],
        ["start", "E2ETrip", "--bogus"],
        ["start", "E2ETrip", "--wait", "--timeout", "soon"],
        ["list", "--bogus"],
        ["describe"],
        ["describe", "cli-ok", "--bogus"],
        ["history", "cli-ok", "--bogus"],
        ["result", "cli-ok", "--timeout", "-1"],
        ["signal", "cli-ok"],
        ["cancel"],
        ["terminate", "cli-ok"],
        ["replay", "history.json"],
        ["db"],
        ["db", "downgrade"],
        ["frobnicate"],
    ],
    ids=lambda argv: "-".join(a.strip("-") for a in argv),
)
def test_bad_usage_exits_2(cli: Cluster, argv: list[str]) -> None:
    line = assert_one_line_error(cli.saga(*argv), code=2)
    assert line.startswith("saga: error: ")
