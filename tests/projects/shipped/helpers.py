"""A sibling module, imported through the project's package name."""


def square(n: int) -> int:
    return n * n
