"""Built-in classifiers: registration only (importing this module imports nothing heavy)."""

from steth_hub import hookimpl


@hookimpl
def register_classifiers(register):
    """Register the built-in classifiers."""
