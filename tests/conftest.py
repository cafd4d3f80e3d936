"""Shared fixtures: each lives in tests/fixtures/ and is loaded here."""

pytest_plugins = ["tests.fixtures.database", "tests.fixtures.broker"]
