"""Reads a settings file that is not there."""

from pathlib import Path


def load_endpoint() -> str:
    return (Path(__file__).parent / "settings.toml").read_text().strip()


ENDPOINT = load_endpoint()
