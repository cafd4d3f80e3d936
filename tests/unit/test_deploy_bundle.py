"""The deploy bundle runs only commands the CLI accepts, on modules that import."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from saga.cli import build_parser

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker-compose.yml"


def test_every_saga_service_runs_a_valid_command() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    saga_services = {n: s for n, s in services.items() if "build" in s}
    assert {"migrate", "coordinator", "cars", "hotels", "flights", "bank"} <= set(saga_services)
    parser = build_parser()
    for name, service in saga_services.items():
        args = parser.parse_args(service["command"])
        for module in filter(None, (getattr(args, "app", None) or "").split(",")):
            importlib.import_module(module)
        env = service["environment"]
        assert env["SAGA_DATABASE_URL"].startswith("postgresql+asyncpg://"), name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:"), name


def test_the_infrastructure_is_declared_with_health_checks() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["rabbitmq"]
    assert "16686:16686" in services["jaeger"]["ports"]
