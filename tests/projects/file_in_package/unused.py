"""Not imported by main.py: pointing exec at main.py must not load it."""

raise RuntimeError("unused.py was imported")
