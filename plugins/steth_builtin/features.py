"""Built-in features: registration only (importing this module imports nothing heavy)."""

from steth_hub import hookimpl


@hookimpl
def register_feature_extractors(register):
    """Register the built-in features."""
