"""The page: :func:`build_app` puts the tabs together, :func:`launch` serves it on loopback."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from steth_hub.demo.catalog import ModelCatalog, installed_plugins
from steth_hub.demo.examples import example_rows
from steth_hub.demo.patient_tab import PatientScreener, _patient_tab
from steth_hub.demo.screener import Screener, facts_note
from steth_hub.demo.settings import (DEFAULT_CONCURRENCY, DEFAULT_KEEP_UPLOADS_S, DEFAULT_MAX_BYTES,
                                     DEFAULT_MAX_SECONDS, DEFAULT_QUEUE_SIZE, DISCLAIMER, EXPLAIN_LABEL,
                                     TITLE, DemoSettings)

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr


def build_app(models: Sequence[Any] | Mapping[str, Any] | None = None, *,
              max_seconds: float = DEFAULT_MAX_SECONDS, max_bytes: int = DEFAULT_MAX_BYTES,
              concurrency: int = DEFAULT_CONCURRENCY, queue_size: int = DEFAULT_QUEUE_SIZE,
              keep_uploads_s: int = DEFAULT_KEEP_UPLOADS_S, examples: bool = True) -> "gr.Blocks":
    """Build the demo page.

    Args:
        models: the models to offer: Hub names, model folders or loaded classifiers (a mapping
            gives them names). Default: the embedded ``steth/efficientat-asthma``.
        max_seconds: the longest recording accepted (checked from the header, before decoding).
        max_bytes: the largest upload accepted (checked before decoding).
        concurrency: requests screened at once; the rest wait in the queue.
        queue_size: requests allowed to wait; more are told the queue is full.
        keep_uploads_s: uploaded recordings are deleted after this many seconds.
        examples: list the example recordings shipped with steth-hub (one click screens one).

    Returns:
        A ``gr.Blocks`` with its queue configured; serve it with :func:`launch`. Its screening
        endpoint is ``/screen`` (``gradio_client``: ``api_name="/screen"``).
    """
    import gradio as gr

    settings = DemoSettings(max_seconds=float(max_seconds), max_bytes=int(max_bytes), concurrency=int(concurrency),
                            queue_size=int(queue_size), keep_uploads_s=int(keep_uploads_s))
    catalog = ModelCatalog(models)
    screener = Screener(catalog, settings)
    classifiers = installed_plugins("classifier")
    explainers = installed_plugins("explainer")

    with gr.Blocks(title="steth-hub demo", analytics_enabled=False,
                   delete_cache=(min(600, settings.keep_uploads_s), settings.keep_uploads_s)) as app:
        gr.Markdown(f"# {TITLE}\n\n{DISCLAIMER}", elem_id="steth-disclaimer")
        with gr.Tab("One recording", id="recording"):
            with gr.Row():
                with gr.Column(scale=1) as left:
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None,
                                     label="Breath sound (record or upload)", elem_id="steth-audio")
                    gr.Markdown(settings.describe(), elem_id="steth-limits")
                    with gr.Accordion("Patient facts (optional)", open=False):
                        # whether the facts are model inputs depends on the model chosen (a VLM reads them)
                        note = gr.Markdown(facts_note(catalog.uses_facts(catalog.default)), elem_id="steth-facts-note")
                        sex = gr.Dropdown(choices=[("not given", ""), ("female", "F"), ("male", "M")], value="",
                                          label="Sex")
                        age = gr.Number(value=None, minimum=0, maximum=130, label="Age (years)")
                        site = gr.Textbox(value="", max_lines=1, max_length=40, label="Recording site",
                                          placeholder="e.g. P R M (posterior right middle), Tc (trachea)")
                    model = gr.Dropdown(choices=catalog.choices(), value=catalog.default, label="Model",
                                        elem_id="steth-model")
                    explain_box = gr.Checkbox(value=False, label=EXPLAIN_LABEL, elem_id="steth-explain")
                    gr.Markdown(f"Installed classifier plugins: {', '.join(classifiers) or 'none'}. "
                                f"Installed explainers: {', '.join(explainers) or 'none'}.",
                                elem_id="steth-plugins")
                    button = gr.Button("Screen recording", variant="primary", elem_id="steth-run")
                with gr.Column(scale=2):
                    summary = gr.Markdown("Record or upload a breath sound, then press **Screen recording**.",
                                          label="summary", elem_id="steth-result")
                    warnings = gr.Markdown("", label="warnings", elem_id="steth-warnings")
                    spectrogram = gr.Image(label="spectrogram", show_label=False, type="numpy", interactive=False,
                                           elem_id="steth-spectrogram")
                    explanation = gr.Image(label="explanation", show_label=False, type="numpy", interactive=False,
                                           visible=False, elem_id="steth-explanation")
                    with gr.Accordion("Result as JSON", open=False):
                        result = gr.JSON(label="result", elem_id="steth-json")

            def screen_recording(recording, model_name=None, sex="", age=None, site="", explain=False):
                """Screen the uploaded recording (and explain it when asked); the map's box shows only
                when there is a map."""
                summary_, warnings_, spectrogram_, explanation_, result_ = screener(recording, model_name, sex, age,
                                                                                    site, explain)
                return (summary_, warnings_, spectrogram_,
                        gr.Image(value=explanation_, visible=explanation_ is not None), result_)

            model.change(lambda name: facts_note(catalog.uses_facts(name)), inputs=model, outputs=note,
                         api_visibility="private")
            inputs = [audio, model, sex, age, site, explain_box]
            outputs = [summary, warnings, spectrogram, explanation, result]
            button.click(screen_recording, inputs=inputs, outputs=outputs, api_name="screen")
            rows = example_rows() if examples else []
            if rows:
                with left:  # under the button, filled in once the outputs exist
                    shown = gr.Examples(examples=[list(row[1:]) for row in rows], inputs=[audio, sex, age, site],
                                        example_labels=[row[0] for row in rows], examples_per_page=len(rows),
                                        label="Example recordings: one click screens one (the label gives the "
                                              "known diagnosis)")
                shown.load_input_event.then(screen_recording, inputs=inputs, outputs=outputs, api_visibility="private")
        with gr.Tab("One patient, several recordings", id="patient"):
            _patient_tab(gr, PatientScreener(catalog, settings), catalog)
    app.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    app.steth_screener = screener  # launch() reads its settings and warms it up
    return app


def launch(app: "gr.Blocks | None" = None, *, host: str | None = "127.0.0.1", port: int | None = None,
           share: bool = False, prevent_thread_lock: bool = False, quiet: bool = False, warm_up: bool = True,
           **build_kwargs: Any):
    """Serve the demo (building it with ``build_kwargs`` when ``app`` is None).

    ``host`` None lets Gradio choose (``GRADIO_SERVER_NAME``, else 127.0.0.1), which is what a
    Hugging Face Space needs. Uploads above the app's ``max_bytes`` are refused by Gradio itself;
    no path is allowed beyond Gradio's own cache (uploads, outputs, the examples copied at build
    time); run history, the MCP server, PWA and server-side rendering are off. Returns what
    ``gr.Blocks.launch`` returns (with ``prevent_thread_lock=True``: it serves until ``app.close()``).
    With ``warm_up`` a background thread loads the default model and the libraries the pipeline
    needs (:meth:`Screener.warm_up`) while the server starts, so the first visitor does not wait.
    """
    if app is None:
        app = build_app(**build_kwargs)
    elif build_kwargs:
        raise TypeError(f"pass build options ({', '.join(build_kwargs)}) to build_app, not with an app")
    screener: Screener | None = getattr(app, "steth_screener", None)
    if screener is None:
        raise TypeError("launch() serves an app made by steth_hub.demo.build_app")
    settings = screener.settings
    if warm_up:
        threading.Thread(target=screener.warm_up, name="steth-demo-warm-up", daemon=True).start()
    # Gradio's own start-up lines tell a user to "set share=True in launch()": steth demo says it its own way
    launched = app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                          quiet=True, show_error=False, allowed_paths=[],
                          max_file_size=settings.max_bytes, ssr_mode=False, mcp_server=False, pwa=False,
                          footer_links=["api", "gradio"], run_history=False)
    if not quiet:
        for line in startup_lines(app.local_url, app.share_url):
            print(line, flush=True)
    if not prevent_thread_lock:
        app.block_thread()
    return launched


def startup_lines(local_url: str | None, share_url: str | None) -> list[str]:
    """What ``steth demo`` prints when the page is up: where it is, and how to share it."""
    lines = [f"* Running on local URL:  {local_url}"]
    if share_url:
        lines.append(f"* Public link (temporary, through Gradio's relay): {share_url}")
    else:
        lines.append("* To create a public link, run `steth demo --share` (traffic then goes through Gradio's relay).")
    lines.append("* Stop the page with Ctrl+C.")
    return lines
