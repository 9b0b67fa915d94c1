"""Built-in explainers: registration only (importing this module imports nothing heavy)."""

from steth_hub import hookimpl


@hookimpl
def register_explainers(register):
    """Register the built-in explainers."""
