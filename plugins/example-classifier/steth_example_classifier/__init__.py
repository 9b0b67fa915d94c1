"""Registration of the example classifier plugin.

This module is what the entry point names. It must stay cheap to import: it registers a
spec whose factory string points at the model code, which is imported only when used.
"""

from steth_hub import ClassifierSpec, hookimpl


@hookimpl
def register_classifiers(register):
    """Register the example classifier."""
    register(ClassifierSpec(
        name="example-band-energy",
        summary="Template: log band energies + logistic regression (numpy only)",
        factory="steth_example_classifier.model:BandEnergyClassifier",
        requires=("numpy", "safetensors"),
    ))
