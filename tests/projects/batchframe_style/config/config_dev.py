from dataclasses import dataclass

from batchcli import inject

from .abstract_custom_config import AbstractCustomConfig


# file: config_dev.py
@inject
@dataclass()
class CustomDevConfig(AbstractCustomConfig):
    env: str = "DEV"
    max_retries: int = 2
    backoff_s: float = 0.0
