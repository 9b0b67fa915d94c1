"""The steth-hub Hugging Face Space: the same page as ``steth demo``.

Settings come from the Space's variables (``STETH_DEMO_MODELS``, ``STETH_DEMO_MAX_SECONDS``,
``STETH_DEMO_MAX_MB``, ``STETH_DEMO_CONCURRENCY``, ``STETH_DEMO_QUEUE_SIZE``); see README.md.
"""

import os

# before gradio is imported (steth_hub.demo sets it too): no analytics, no version check
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from steth_hub.demo import build_app, launch, settings_from_env  # noqa: E402

demo = build_app(**settings_from_env())

if __name__ == "__main__":
    # host None: Gradio listens where the Space tells it (GRADIO_SERVER_NAME), else 127.0.0.1
    launch(demo, host=None)
