"""tensorforge: a small neural-network compiler."""

from . import ir  # noqa: F401
