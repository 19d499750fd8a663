"""The file given to exec: it pulls the job's classes in with a package-relative import."""

from .parts import Double, Numbers

__all__ = ["Double", "Numbers"]
