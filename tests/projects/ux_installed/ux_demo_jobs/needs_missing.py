"""An installed job whose module imports a dependency that is not installed."""

import no_such_dependency_xyz  # noqa: F401
