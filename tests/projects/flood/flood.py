"""A failure flood: every item fails at once; with ``mix`` every third fails with another error; with ``named``
each message names the item by a word of its own (no digits: every message has a shape of its own); with
``body`` each message carries a 50 KB response body, as an HTTP client's error may."""

from __future__ import annotations

import logging

from batchcli import Param, Service, Source, inject


@inject
class Records(Source[int]):
    def __init__(self, count: Param[int] = 5000) -> None:
        self.count = count

    def __iter__(self):
        return iter(range(self.count))

    def __len__(self) -> int:
        return self.count


@inject
class Reject(Service[int]):
    def __init__(
        self, mix: Param[bool] = False, named: Param[bool] = False, body: Param[bool] = False,
        blank_first: Param[bool] = False, escapes: Param[bool] = False,
    ) -> None:  # fmt: skip
        self.mix = mix
        self.named = named
        self.body = body
        self.blank_first = blank_first  # the message starts with empty lines
        self.escapes = escapes  # a warning per item holds a terminal's escape sequence (a response body)

    async def process(self, item: int) -> None:
        if self.escapes:
            logging.getLogger("flood").warning("record %d: \x1b[2Jcleared\rover", item)
        if self.blank_first:
            raise RuntimeError(f"\n\nline two {item}\nline three")
        if self.body:
            raise RuntimeError("the server said: <html>" + "x" * 50_000 + "</html>\nand more")
        if self.named:
            raise LookupError(f"no user {_word(item)!r}")
        if self.mix and item % 3 == 0:
            raise KeyError(f"region {item % 7}")
        raise ValueError(f"record {item} is malformed")


def _word(number: int) -> str:
    """``number`` spelled in letters (a, b, ..., ba, bb, ...): a name without digits."""
    letters = ""
    while True:
        number, digit = divmod(number, 26)
        letters = chr(ord("a") + digit) + letters
        if not number:
            return letters
