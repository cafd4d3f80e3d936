"""Settings: keyword arguments override environment variables, which override defaults."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///saga.db"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"


class Settings(BaseModel):
    """Where the database and the broker are."""

    model_config = ConfigDict(frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    api_token: str | None = None

    @classmethod
    def resolve(cls, *, database_url: str | None = None, broker_url: str | None = None) -> Settings:
        """Apply the precedence: argument, then ``SAGA_*`` variable, then default."""
        return cls(
            database_url=(
                database_url or os.environ.get("SAGA_DATABASE_URL") or DEFAULT_DATABASE_URL
            ),
            broker_url=broker_url or os.environ.get("SAGA_BROKER_URL") or DEFAULT_BROKER_URL,
            api_token=os.environ.get("SAGA_API_TOKEN") or None,
        )
