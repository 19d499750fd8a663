from dataclasses import dataclass

from batchcli import inject

from .abstract_custom_config import AbstractCustomConfig


# file: config_prod.py
@inject
@dataclass()
class CustomProdConfig(AbstractCustomConfig):
    env: str = "PROD"
    max_retries: int = 1
    backoff_s: float = 0.0
    concurrency: int = 3
