"""The shared base of every environment, abstract as in Batchframe's README."""

from abc import ABCMeta
from dataclasses import dataclass

from batchcli import Configuration


@dataclass()
class AbstractCustomConfig(Configuration, metaclass=ABCMeta):
    env: str = "PLACEHOLDER"
    fail_every: int = 5
