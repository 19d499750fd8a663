"""How many items go in the next chunk of the process and Dask executors."""

from __future__ import annotations

import math

from batchcli.outcome import CHUNK_KEPT_MAX


class ChunkSizer:
    """How many items go in the next chunk: a fixed size, or about ``target_s`` of work each.

    It starts at one item per lane (small, so the first results come back fast) and follows the
    observed wall time per item, growing at most fourfold per observation so one fast chunk
    cannot produce a huge slow one. Near the end of a source of known length, chunks shrink so
    the remaining items spread over every slot. Whatever the time says, a chunk holds no more
    items than fit ``CHUNK_KEPT_MAX`` bytes of results at the size observed per item (a fixed
    size too: the worker would hand the rest back unstarted anyway).
    """

    def __init__(self, fixed: int | None, target_s: float = 0.1, largest: int = 10_000) -> None:
        self.fixed = fixed
        self.target_s = target_s
        self.largest = largest
        self._current: int | None = None
        self._per_item: float | None = None
        self._bytes_per_item = 0.0
        """Result bytes per attempted item, averaged as the time is."""

    def size(self, share: int, slots: int, remaining: int | None) -> int:
        """The size of the next chunk."""
        fits = int(CHUNK_KEPT_MAX / self._bytes_per_item) if self._bytes_per_item else None
        if self.fixed is not None:
            return self.fixed if fits is None else max(1, min(self.fixed, fits))
        if self._current is None or self._per_item is None:
            size = share
        else:
            wanted = int(self.target_s / self._per_item)
            size = max(share, min(wanted, self._current * 4, self.largest))
        if fits is not None:
            size = min(size, fits)
        self._current = size  # what was sent: growing back from a cap is fourfold per chunk too
        if remaining is not None:
            size = min(size, max(1, math.ceil(remaining / slots)))
        return max(1, size)

    def observe(self, attempted: int, elapsed_s: float, kept_bytes: int = 0) -> None:
        """Account for a chunk that ran ``attempted`` items in ``elapsed_s`` and brought ``kept_bytes`` of results."""
        if attempted <= 0:
            return
        per_item = max(elapsed_s / attempted, 1e-7)
        self._per_item = per_item if self._per_item is None else 0.5 * self._per_item + 0.5 * per_item
        size = kept_bytes / attempted
        self._bytes_per_item = size if self._bytes_per_item == 0.0 else 0.5 * self._bytes_per_item + 0.5 * size
