"""The deterministic runtime that runs and replays workflow code (private)."""
