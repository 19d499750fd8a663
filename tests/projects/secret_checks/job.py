"""A job whose own checks quote the secret they refuse: the configuration's ``__post_init__`` (``-p api_key``
without its prefix) and the Service's constructor (``-p token=...`` it cannot log in with)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from batchcli import Configuration, Param, Secret, Service, Source, inject


@dataclass(kw_only=True)
class Checked(Configuration):
    api_key: Secret | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.api_key is not None and not self.api_key.startswith("sk-"):
            raise ValueError(f"api_key {self.api_key} must start with sk-")


@inject
class Numbers(Source[int]):
    def __iter__(self) -> Iterator[int]:
        yield from (1, 2)


@inject
class Login(Service[int]):
    def __init__(self, token: Param[Secret | None] = None) -> None:
        if token is not None and token.startswith("bad"):
            raise PermissionError(f"auth failed for token {token}")
        self.token = token

    async def process(self, item: int) -> None:
        pass
