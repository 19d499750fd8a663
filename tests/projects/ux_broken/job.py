"""A job whose module fails to import."""

from __future__ import annotations

raise RuntimeError("the job cannot start: BROKEN_ON_PURPOSE")
