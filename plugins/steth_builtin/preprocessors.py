"""Built-in preprocessors: registration only (importing this module imports nothing heavy)."""

from steth_hub import hookimpl


@hookimpl
def register_preprocessors(register):
    """Register the built-in preprocessors."""
