"""The raw limits under saga: one PostgreSQL commit, one RabbitMQ publish with confirm.

    .venv/bin/python -m benchmarks.baseline --db postgresql+asyncpg://… --broker amqp://…

Sequential round trips, one at a time, as a step of one saga sees them:

* **PostgreSQL commit**: ``BEGIN; INSERT one row; COMMIT`` on one asyncpg connection
  (``synchronous_commit`` as the server has it), into a scratch table dropped afterwards.
* **RabbitMQ publish with confirm**: a persistent message to a durable queue on a
  channel in confirm mode, waiting for the broker's ack (what saga's transport does
  for every task and result). The queue is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import aio_pika
import asyncpg
from sqlalchemy import make_url


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "mean_ms": statistics.fmean(ordered) * 1000,
        "per_s": len(ordered) / sum(ordered),
    }


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def postgres_commit(url: str, rounds: int) -> dict[str, float]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    table = f"baseline_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body jsonb)")
        body = json.dumps({"workflow_id": "w", "seq": 1, "payload": "x" * 200})
        timings = []
        for _ in range(rounds):
            began = time.perf_counter()
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} (body) VALUES ($1)", body)
            timings.append(time.perf_counter() - began)
        setting = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    return {**summary(timings), "synchronous_commit": setting}


async def rabbitmq_publish_confirm(url: str, rounds: int) -> dict[str, float]:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"baseline-{uuid.uuid4().hex[:8]}", durable=True)
        body = json.dumps({"workflow_id": "w", "seq": 1, "payload": "x" * 200}).encode()
        timings = []
        try:
            for _ in range(rounds):
                message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                began = time.perf_counter()
                await channel.default_exchange.publish(message, routing_key=queue.name)
                timings.append(time.perf_counter() - began)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    return summary(timings)


async def postgres_commits_parallel(
    url: str, connections: int = 16, seconds: float = 5.0
) -> dict[str, float]:
    """Single-row commits from ``connections`` connections at once, for ``seconds``.

    What many coordinators' commits look like to the server: concurrent commits share a
    WAL flush (PostgreSQL's group commit), so the rate is far above one connection's.
    """
    conns = [await asyncpg.connect(asyncpg_dsn(url)) for _ in range(connections)]
    table = f"baseline_{uuid.uuid4().hex[:8]}"
    body = json.dumps({"workflow_id": "w", "seq": 1, "payload": "x" * 200})
    try:
        await conns[0].execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body jsonb)")
        deadline = time.perf_counter() + seconds
        counts = [0] * connections

        async def commit(i: int, conn: asyncpg.Connection) -> None:
            while time.perf_counter() < deadline:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} (body) VALUES ($1)", body)
                counts[i] += 1

        began = time.perf_counter()
        await asyncio.gather(*(commit(i, c) for i, c in enumerate(conns)))
        elapsed = time.perf_counter() - began
        await conns[0].execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        for conn in conns:
            await conn.close()
    return {"connections": connections, "seconds": elapsed, "per_s": sum(counts) / elapsed}


async def rabbitmq_queue_rate(
    url: str, messages: int = 20000, window: int = 500
) -> dict[str, float]:
    """One durable queue's rate: persistent publishes with confirms, ``window`` in flight,
    then consuming them all with acks (prefetch ``window``)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=window)
        queue = await channel.declare_queue(f"baseline-{uuid.uuid4().hex[:8]}", durable=True)
        body = json.dumps({"workflow_id": "w", "seq": 1, "payload": "x" * 200}).encode()
        try:
            began = time.perf_counter()
            for first in range(0, messages, window):
                await asyncio.gather(
                    *(
                        channel.default_exchange.publish(
                            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key=queue.name,
                        )
                        for _ in range(min(window, messages - first))
                    )
                )
            published = time.perf_counter() - began
            done = asyncio.get_running_loop().create_future()
            received = 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal received
                await message.ack()
                received += 1
                if received == messages and not done.done():
                    done.set_result(None)

            began = time.perf_counter()
            tag = await queue.consume(on_message)
            await asyncio.wait_for(done, timeout=120)
            consumed = time.perf_counter() - began
            await queue.cancel(tag)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    return {
        "messages": messages,
        "publish_confirm_per_s": messages / published,
        "consume_ack_per_s": messages / consumed,
    }


async def measure(db: str, broker: str, rounds: int) -> dict[str, Any]:
    return {
        "postgres_commit": await postgres_commit(db, rounds),
        "rabbitmq_publish_confirm": await rabbitmq_publish_confirm(broker, rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="postgresql+asyncpg://… (a scratch database)")
    parser.add_argument("--broker", required=True, help="amqp://… (a scratch vhost)")
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.db, args.broker, args.rounds)), indent=2))


if __name__ == "__main__":
    main()
