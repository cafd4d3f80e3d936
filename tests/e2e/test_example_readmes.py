"""The "Distributed" sections of the examples' READMEs, run as they are written.

Each ``saga`` line of the section's ``bash`` blocks runs as a process, with the README's
database and broker URLs swapped for this test's: ``saga coordinator`` and ``saga
worker`` lines start daemons (waited for until ready), ``export`` lines set the
environment of the later commands, and every other ``saga`` line must exit 0, or 1
with the final status its comment announces (``# exits 1: COMPENSATED``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.e2e.cluster import ROOT, Cluster, assert_one_line_error
from tests.fixtures.broker import QueueNames

pytestmark = pytest.mark.integration

README_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/saga"
README_BROKER = "amqp://guest:guest@127.0.0.1:5672/"
EXAMPLE_QUEUES = {"trip_booking": ["cars", "hotels", "flights"], "money_transfer": ["bank"]}


def distributed_commands(readme: Path) -> list[tuple[str, str]]:
    """(command line, comment) of each line in the bash blocks of "## Distributed"."""
    section = readme.read_text().split("## Distributed", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            command, _, comment = line.partition("   # ")
            if command.strip():
                lines.append((command.strip(), comment.strip()))
    return lines


@pytest.mark.parametrize("example", sorted(EXAMPLE_QUEUES))
def test_the_distributed_section_works_as_written(
    cluster: Cluster, make_queue_name: QueueNames, example: str
) -> None:
    make_queue_name.used.extend(EXAMPLE_QUEUES[example])  # deleted after the test

    def ours(text: str) -> str:
        return text.replace(README_DB, cluster.db).replace(README_BROKER, cluster.broker)

    env: dict[str, str] = {}
    ran = 0
    for line, comment in distributed_commands(ROOT / "examples" / example / "README.md"):
        argv = [ours(arg) for arg in shlex.split(line)]
        if argv[0] == "createdb":
            continue  # the test made a database of its own
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            env[name] = value
            continue
        assert argv[0] == "saga", line
        ran += 1
        if argv[1] in ("coordinator", "worker"):
            cluster.spawn(argv[1], *argv[1:], connect=False).wait_ready()
            continue
        done = cluster.saga(*argv[1:], connect=False, env=env)
        expected = re.match(r"exits (\d+): (\w+)", comment)
        if expected is None:
            assert done.returncode == 0, f"{line}\n{done.stderr}\n{cluster.explain()}"
        else:
            reason = assert_one_line_error(done, code=int(expected.group(1)))
            assert f"ended {expected.group(2)}" in reason, line
    assert ran >= 5
