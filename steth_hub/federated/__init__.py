"""Federated training with Flower: clinics train the screening model together; recordings never leave a clinic.

* :mod:`steth_hub.federated.core`: the model side (any torch classifier plugin through its generic
  interface): local training, the exchanged state, patient-level scores. No Flower import.
* :mod:`steth_hub.federated.client_app` / :mod:`~steth_hub.federated.server_app`: the Flower app
  (Message API; ``pyproject.toml`` in this folder is its ``[tool.flwr.app]`` config).
* :mod:`steth_hub.federated.deploy`: clinic partitions, a SuperLink and one SuperNode per clinic on
  127.0.0.1 (``steth federated run``), one clinic alone (``steth federated clinic``).

See docs/federated.md. Importing this package imports neither torch nor flwr.
"""

APP_CONFIG = "pyproject.toml"
