"""A job with secrets in params and in a nested configuration field; its service logs all it was given."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from batchcli import Configuration, Param, Secret, Service, Source, inject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """How to log in to the database."""

    user: str = "app"
    password: Secret | None = None
    """The database password."""


@dataclass(kw_only=True)
class SecretConfig(Configuration):
    """The only configuration."""

    db: Credentials = field(default_factory=Credentials)


@inject
class Numbers(Source[int]):
    """Three numbers."""

    def __iter__(self) -> Iterator[int]:
        yield from (1, 2, 3)


@inject
class Call(Service[int]):
    """Calls an API with the token; number 2 is rejected (with ``refused``, the login in ``setup()`` is).

    Args:
        api_token: The API token.
        fallback_key: Used when the API asks for a second key.
        extra_tokens: More tokens, tried in turn.
    """

    def __init__(
        self,
        config: SecretConfig,
        api_token: Param[Secret],
        fallback_key: Param[Secret] = Secret("default-key-0451"),  # noqa: B008 - an immutable str
        extra_tokens: Param[list[Secret]] = [],  # noqa: B006 - never mutated
        refused: Param[bool] = False,
    ) -> None:
        self.config = config
        self.api_token = api_token
        self.extra_tokens = extra_tokens
        self.refused = refused

    def setup(self) -> None:
        log.info("token %r, extra %r, config %r", self.api_token, self.extra_tokens, self.config)
        log.debug("debug: token %r", self.api_token)
        log.warning("calling the API with token %s", self.api_token)  # %s is the value itself: the handlers mask it
        log.warning("connecting as %(user)s with %(password)s", {"user": "batch", "password": self.config.db.password})
        log.warning(f"session opened for {self.api_token}")  # an f-string: the value itself, in the message
        if self.refused:  # as a login that fails does: the run cannot start, and says why
            raise PermissionError(f"login refused for token {self.api_token}")
        digest = hashlib.sha256(f"{self.api_token}|{self.config.db.password}|{','.join(self.extra_tokens)}".encode())
        (self.config.run_dir / "proof.txt").write_text(digest.hexdigest())

    def process(self, item: int) -> None:
        if item == 2:
            # As an HTTP client's error does: the request's URL, with the token in its query.
            raise ValueError(f"item {item} rejected by the API: 401 for /items?api_key={self.api_token}")
