"""``saga explore``: the failure explorer from the command line.

``--checks MODULE`` names a module that may define ``reset()``, ``state()``,
``invariant(services_state, outcome)`` and ``COMPENSATIONS`` (a dict from each forward
activity to the activity that undoes it): the arguments of the same names of
:func:`saga.testing.explore`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import sys
from typing import Any

from saga._explore.points import KIND_GROUPS
from saga.errors import SagaError, UnknownWorkflowTypeError
from saga.workflow import definition_of


def add_parser(sub: Any, *, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``saga explore`` on the ``saga`` command's subparsers."""
    p = sub.add_parser(
        "explore",
        parents=parents,
        help="run a saga once per failure point (embedded)",
        description="Run a workflow once per failure point, embedded (SQLite files in a "
        "temporary folder, the in-process broker, time skipping: --db and --broker are not "
        "used), and check its invariants after each run. Exit 1 if any broke.",
    )
    p.add_argument("type", help="workflow type, e.g. TripBooking")
    p.add_argument("--app", required=True, help="module(s) defining it and its activities")
    p.add_argument("--input", help="JSON argument (a list for several arguments)")
    p.add_argument(
        "--checks",
        metavar="MODULE",
        help="module with reset(), state(), invariant() and COMPENSATIONS",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="POINT",
        help="run just this failure point, as the report names it (repeatable)",
    )
    p.add_argument(
        "--kind", action="append", choices=KIND_GROUPS, help="only points of this kind (repeatable)"
    )
    p.add_argument(
        "--retry-cap",
        type=int,
        default=3,
        metavar="N",
        help="attempts failed at most at a 'fail' point (default 3)",
    )
    p.add_argument(
        "--run-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="real time a run may take before it counts as stuck (default 10)",
    )
    p.set_defaults(func=cmd_explore)


def _reproduce(args: argparse.Namespace) -> Any:
    words = ["saga", "explore", "--app", args.app, args.type]
    if args.input is not None:
        words += ["--input", args.input]
    if args.checks:
        words += ["--checks", args.checks]
    if args.retry_cap != 3:
        words += ["--retry-cap", str(args.retry_cap)]

    def line(point: str) -> str:
        return shlex.join([*words, "--only", point])

    return line


def _checks(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise SagaError(f"cannot import --checks module {name!r}: {exc}") from exc
    return {
        "reset": getattr(module, "reset", None),
        "state": getattr(module, "state", None),
        "invariant": getattr(module, "invariant", None),
        "compensations": getattr(module, "COMPENSATIONS", None),
    }


async def cmd_explore(args: argparse.Namespace) -> int:
    """Explore; print the table (or JSON); exit 1 naming the broken points."""
    from rich.console import Console

    from saga.cli import UsageError, load_app
    from saga.explore import explore

    workflows, activities = load_app(args.app)
    by_name = {definition_of(w).name: w for w in workflows}
    if args.type not in by_name:
        raise UnknownWorkflowTypeError(args.type, list(by_name))
    try:
        value = json.loads(args.input) if args.input is not None else None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from exc
    inputs = [] if args.input is None else value if isinstance(value, list) else [value]
    if not (args.verbose or args.log_level):
        # The engine logs every injected failure as it would a real one: noise here.
        logging.getLogger("saga").setLevel(logging.ERROR)
    try:
        report = await explore(
            by_name[args.type],
            *inputs,
            activities=activities,
            workflows=workflows,
            retry_cap=args.retry_cap,
            kinds=args.kind,
            only=args.only,
            run_timeout=args.run_timeout,
            reproduce=_reproduce(args),
            **_checks(args.checks),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        report.print(Console(file=sys.stdout))
    if not report.ok:
        raise SagaError(f"explore: {report.summary()}")
    return 0
