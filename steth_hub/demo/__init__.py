"""The Gradio demo: record or upload a breath sound and get a screening result one can understand.

:func:`build_app` builds the page (a ``gr.Blocks``) and :func:`launch` serves it; ``steth demo``
and the Hugging Face Space in ``spaces/app.py`` both call them, so the local page and the public
one are the same app.

What a visitor gets for one recording: P(asthma), the decision at the model's own threshold,
the number of clips analysed, quality warnings, the three-window log-mel spectrogram (25, 100
and 175 ms windows, stacked, axes in seconds and hertz), on request ("Show where the model
looked") the explanation map when an explainer for the chosen model is installed, and the
statement that this is screening support, not a diagnosis. Optional patient facts (sex, age,
recording site) are shown back and kept in the JSON result; the audio classifiers never see them. A
model that reads them (a vision-language classifier such as ``steth/vlm-asthma``, which writes them
into its prompt) gets them registered for the recording before it is screened, and the page says so:
the facts that went into the prompt, the ones left out, and the answer the model writes.

Screening runs on the light runtime: a model with an ONNX export is screened by ONNX Runtime
(:mod:`steth_hub.runtime`) and the spectrogram is drawn with numpy (:mod:`steth_hub.display`),
so a request that does not ask for the map never imports torch. Asking for it loads the torch
form of the model and the explainer then (the first time), and the map explains the clips and
P(asthma) the screening computed (:func:`steth_hub.explanation.explain_result`): one decoding,
one preprocessing and one forward pass per request, whatever is shown.

The page is meant to face the public, so:

* an upload above ``max_bytes`` is refused before it is decoded (Gradio's own upload limit is
  set to the same size, and the handler checks again), and one longer than ``max_seconds`` is
  refused from its header, before its samples are read;
* a corrupt, empty, silent or too-short recording, an unavailable model or an unexpected
  failure gives a message in the result box, never a stack trace;
* requests are queued (``concurrency`` at a time, ``queue_size`` waiting);
* the only files the app reads are the ones Gradio received as uploads and the example
  recordings shipped in ``steth_hub/examples`` (Gradio copies them into its cache when the page
  is built); ``allowed_paths`` is empty, so no other file on the server can be fetched or passed
  to the screening endpoint, and uploads are deleted after ``keep_uploads_s``;
* Gradio's analytics are off (``GRADIO_ANALYTICS_ENABLED=False`` before gradio is imported).

The pieces it shows come from the rest of steth-hub and are looked up when used:
:func:`steth_hub.screening.load_model` (models), :func:`steth_hub.screening.screen` (the result),
:func:`steth_hub.display.log_mel` (the spectrogram), :func:`steth_hub.explanation.explain_result`
(the map) and the plugin registry (installed classifiers and explainers). Importing this
package imports none of gradio, torch or matplotlib.

One module per job (everything is importable from ``steth_hub.demo`` too):

* :mod:`~steth_hub.demo.app`: the page (:func:`build_app`) and serving it (:func:`launch`);
* :mod:`~steth_hub.demo.catalog`: the catalogue of models (:class:`ModelCatalog`);
* :mod:`~steth_hub.demo.screener`: one request of the recording tab (:class:`Screener`) and its texts;
* :mod:`~steth_hub.demo.pictures`: the spectrogram and PNGs as arrays;
* :mod:`~steth_hub.demo.examples`: the shipped example recordings (:func:`example_rows`);
* :mod:`~steth_hub.demo.patient_tab`: the patient tab (:class:`PatientScreener`) and its report;
* :mod:`~steth_hub.demo.settings`: limits, ``STETH_DEMO_*`` variables, the page's texts.
"""


from __future__ import annotations

import os

# Gradio reads this when it is imported: no analytics and no version check from the page or server.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from steth_hub.demo.app import build_app, launch, startup_lines  # noqa: E402
from steth_hub.demo.catalog import ModelCatalog, ModelEntry, installed_plugins  # noqa: E402
from steth_hub.demo.examples import example_rows  # noqa: E402
from steth_hub.demo.patient_tab import DEFAULT_MAX_PATIENT_FILES, PATIENT_MODE_NOTE, PatientScreener  # noqa: E402
from steth_hub.demo.pictures import png_to_array, spectrogram_image  # noqa: E402
from steth_hub.demo.screener import Analysis, PatientFacts, Screener, _summary, facts_note  # noqa: E402,F401
from steth_hub.demo.settings import (DEFAULT_CONCURRENCY, DEFAULT_KEEP_UPLOADS_S, DEFAULT_MAX_BYTES,  # noqa: E402
                                     DEFAULT_MAX_SECONDS, DEFAULT_QUEUE_SIZE, DISCLAIMER, ENV_PREFIX,
                                     EXAMPLES_DIR, EXPLAIN_LABEL, PATIENT_NOTE, PATIENT_NOTE_PROMPT, TITLE,
                                     DemoSettings, settings_from_env)
from steth_hub.hub import DEFAULT_MODEL  # noqa: E402  (the embedded model, offered first)

__all__ = [
    "DEFAULT_CONCURRENCY", "DEFAULT_KEEP_UPLOADS_S", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PATIENT_FILES",
    "DEFAULT_MAX_SECONDS", "DEFAULT_MODEL", "DEFAULT_QUEUE_SIZE", "DISCLAIMER", "ENV_PREFIX", "EXAMPLES_DIR",
    "EXPLAIN_LABEL", "PATIENT_MODE_NOTE", "PATIENT_NOTE", "PATIENT_NOTE_PROMPT", "TITLE", "Analysis", "DemoSettings",
    "ModelCatalog", "ModelEntry", "PatientFacts", "PatientScreener", "Screener", "build_app", "example_rows", "facts_note",
    "installed_plugins",
    "launch", "png_to_array", "settings_from_env", "spectrogram_image", "startup_lines",
]
