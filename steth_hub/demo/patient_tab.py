"""The patient tab: several recordings of one patient in, one patient result and the report out."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Mapping

from steth_hub.demo.catalog import ModelCatalog
from steth_hub.demo.pictures import png_to_array
from steth_hub.demo.catalog import reads_facts
from steth_hub.demo.screener import (_PROMPT_LOCK, PatientFacts, _esc, answer_line, facts_label, facts_note,
                                     prompt_line, register_prompt_facts)
from steth_hub.demo.settings import DISCLAIMER, DemoSettings, _mib
from steth_hub.errors import AudioError, StethError

log = logging.getLogger(__name__)


#: most recordings one patient request may carry
DEFAULT_MAX_PATIENT_FILES = 12
PATIENT_MODE_NOTE = ("Upload all the recordings of **one** patient (e.g. several chest sites, or one site through the "
                     "stethoscope's bell, diaphragm and extended filters). They are screened one by one and "
                     "combined by the model's own rule (the mean of the recordings' P(asthma), as its evaluation "
                     "scored patients). Recordings are named R1, R2... in upload order; file names are never shown.")


class PatientScreener:
    """Screens several uploaded recordings of one patient and writes the report (PDF and FHIR JSON)."""

    def __init__(self, catalog: ModelCatalog, settings: DemoSettings, max_files: int = DEFAULT_MAX_PATIENT_FILES):
        import tempfile

        self.catalog = catalog
        self.settings = settings
        self.max_files = int(max_files)
        self.out_dir = Path(tempfile.mkdtemp(prefix="steth-demo-reports-"))

    def check(self, path: str) -> None:
        """The page's limits, before a recording is read: size, then length from the header."""
        from steth_hub.audio import decode

        size = Path(path).stat().st_size if Path(path).is_file() else 0
        if size > self.settings.max_bytes:
            raise AudioError(f"the file is {_mib(size)}, above this page's {_mib(self.settings.max_bytes)} limit",
                             code="too-large", fix="upload a shorter recording (or a compressed one)")
        try:
            decode(path, max_seconds=self.settings.max_seconds, max_bytes=self.settings.max_bytes)
        except AudioError as exc:
            if exc.code == "too-long":
                exc.fix = f"upload at most {self.settings.max_seconds:g} s (cut the recording)"
            raise

    def __call__(self, files: Any, sites: Any = "", patient_id: Any = "", sex: Any = "", age: Any = None,
                 model_name: str | None = None) -> tuple:
        paths = [str(getattr(f, "name", f)) for f in (files or []) if f]
        if not paths:
            return _patient_message("No recordings yet", "Upload the patient's recordings, then press "
                                    "Screen patient.", code="no-audio")
        if len(paths) > self.max_files:
            return _patient_message("Too many recordings", f"{len(paths)} files were uploaded; this page screens at "
                                    f"most {self.max_files} per patient.", fix="upload one patient's recordings",
                                    code="too-many")
        try:
            return self.analyse(paths, sites, patient_id, sex, age, model_name)
        except StethError as exc:
            return _patient_message("Could not screen the patient", exc.message, fix=exc.fix, code=exc.code)
        except Exception as exc:  # a public page shows a message, the log keeps the trace
            log.exception("demo: patient screening failed")
            return _patient_message("Could not screen the patient", f"steth-hub failed unexpectedly "
                                    f"({type(exc).__name__}); the details are in the server's log.",
                                    fix="try other recordings", code="internal")

    def analyse(self, paths: list[str], sites: Any, patient_id: Any, sex: Any, age: Any,
                model_name: str | None) -> tuple:
        from steth_hub.patient import PatientFacts as Facts
        from steth_hub.patient import RecordingInput, screen_patient
        from steth_hub.report import build_report, to_fhir, write_report

        site_lines = [" ".join(line.split())[:40] for line in str(sites or "").splitlines()]
        facts = PatientFacts.from_inputs(sex, age, None)
        pid = " ".join(str(patient_id or "").split())[:40] or "patient"
        model = self.catalog.get(model_name)
        inputs = [RecordingInput(path, site_lines[i] if i < len(site_lines) and site_lines[i] else None)
                  for i, path in enumerate(paths)]
        in_prompt = reads_facts(model)
        with _PROMPT_LOCK if in_prompt else contextlib.nullcontext():
            # a VLM: each recording's prompt gets the patient's sex and age and that recording's site
            prompts = self._register(model, inputs, facts) if in_prompt else {}
            result = screen_patient(inputs, model, patient=Facts(pid, facts.sex, facts.age), check=self.check)
            deciding = prompts.get(result.deciding or "")
            with model.patient_facts(deciding["facts"]) if deciding else contextlib.nullcontext():
                report = build_report(result, model)  # the explainer's own images get the deciding recording's
        self._prune()
        folder = Path(self._fresh_folder())
        pdf = write_report(report, folder / "steth-report.pdf")
        fhir = write_report(report, folder / "steth-report.fhir.json")
        record = report.to_dict()
        record["fhir_validated"] = bool(to_fhir(report))  # write_report validated it; kept for the API
        if isinstance(record.get("patient"), dict):
            record["patient"]["model_input"] = in_prompt
        if in_prompt:
            record["vlm"] = prompts
        spectrogram = png_to_array(report.spectrogram_png) if report.spectrogram_png else None
        explanation = png_to_array(report.explanation_png) if report.explanation_png else None
        return (_patient_summary(report.data, prompts if in_prompt else None), spectrogram, explanation, str(pdf),
                str(fhir), record)

    def _register(self, model, inputs: list, facts: PatientFacts) -> dict:
        """For a model that reads the facts: register each recording's (the patient's sex and age, the site typed
        for it, else its KAUH/ICBHI name's site field, as the recordings table shows it) and get the model's own
        words. ``{"R1": {"facts", "omitted", "prompt", "in_prompt", "answer"}, ...}``; a recording outside the
        page's limits or unreadable is skipped here and rejected by the screening with its reason."""
        from steth_builtin.vlm_screen import explain_text

        from steth_hub.patient import name_facts

        out = {}
        for i, item in enumerate(inputs, start=1):
            try:
                self.check(item.path)  # the limits first: nothing above them is decoded
                entry = register_prompt_facts(model, item.path, sex=facts.sex, age=facts.age,
                                              site=item.site or name_facts(item.path).get("site"))
            except StethError as exc:
                log.debug("demo: R%d not registered (%s); screening rejects it", i, exc.code)
                continue
            try:
                entry["answer"] = explain_text(model, item.path)
            except Exception as exc:  # an extra: the result stands without the model's words
                log.warning("demo: the model's text for R%d failed: %s", i, exc)
                entry["answer"] = None
            out[f"R{i}"] = entry
        return out

    def _fresh_folder(self) -> str:
        import tempfile

        self.out_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(dir=self.out_dir)

    def _prune(self) -> None:
        """Delete reports older than the page keeps uploads."""
        import shutil
        import time

        cutoff = time.time() - self.settings.keep_uploads_s
        for folder in self.out_dir.glob("*") if self.out_dir.is_dir() else []:
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue


def _patient_message(title: str, message: str, *, fix: str | None = None, code: str = "error") -> tuple:
    text = f"### {_esc(title)}\n\n{_esc(message)}"
    if fix:
        text += f"\n\n**What to do:** {_esc(fix)}"
    return (text + f"\n\n{DISCLAIMER}", None, None, None, None,
            {"error": {"code": code, "message": message, "fix": fix}})


def _ci_text(entry: Mapping | None) -> str:
    from steth_hub.report import _ci

    return _ci(entry)


def _patient_summary(data: Mapping, prompts: Mapping | None = None) -> str:
    """The patient's result as Markdown: the decision, one row per recording, the rejected ones, the model.

    ``prompts`` (a model that reads the facts: the registered prompt of each screened recording) adds what
    went into each recording's prompt and the model's own words."""
    from steth_hub.explanation import decision_numbers

    res, facts = data["result"], data["patient"]
    about = PatientFacts(sex=facts.get("sex"), age=facts.get("age")).describe()
    lines = [f"### Patient {_esc(facts['patient_id'])}: "
             + (f"P(asthma) = {decision_numbers(res['probability'], res['threshold'])[0]}, "
                f"{'positive' if res['decision'] else 'negative'}" if res["probability"] is not None
                else "no result"), "",
             f"{_esc(res['statement'])}", "",
             f"- **{facts_label(prompts is not None)}:** {_esc(about)}",
             f"- **Rule:** {_esc(res['aggregation'])}"]
    if res["drivers"]:
        lines.append(f"- **Driven by:** {', '.join(res['drivers'])} (pictures below: {res['deciding_recording']})")
    lines += ["", "| rec. | site | filter | P(asthma) | screen | clips | drives | quality |", "|---|---|---|---|---|---|---|---|"]
    for r in data["recordings"]:
        lines.append(f"| {r['id']} | {_esc(r['site'] or '-')} | {_esc(r['filter'] or '-')} | {r['probability']:.3f} | "
                     f"{'positive' if r['decision'] else 'negative'} | {r['n_clips']} | "
                     f"{'yes' if r['drives_result'] else '-'} | {_esc('; '.join(r['warnings']) or 'ok')} |")
    for r in data["rejected"]:
        lines.append(f"| {r['id']} | {_esc(r['site'] or '-')} | {_esc(r['filter'] or '-')} | - | **rejected** | - | - | "
                     f"{_esc(r['message'] + ('; fix: ' + r['fix'] if r.get('fix') else ''))} |")
    screened = {r["id"] for r in data["recordings"]}
    if prompts:
        lines.append("")  # the list starts after the table
    for rid, entry in (prompts or {}).items():
        if rid not in screened:  # rejected recordings were registered but never counted
            continue
        line = f"- **{rid}, in the model's prompt:** {_esc(prompt_line(entry))}"
        if entry.get("answer"):
            line += f"; **the model writes:** {_esc(answer_line(entry['answer']))}"
        lines.append(line)
    perf = data["performance"]
    if perf.get("available"):
        pooled = perf["pooled"]
        within = "; ".join(f"within {_esc(w['source'])} AUROC {_ci_text(w['auroc'])}" for w in perf["within_source"])
        lines += ["", f"**Validated** ({_esc(perf['method'])}): patient-level AUROC {_ci_text(pooled['auroc'])}, "
                      f"sensitivity {_ci_text(pooled['sensitivity'])}, specificity {_ci_text(pooled['specificity'])}"
                      + (f"; {within}" if within else "") + "."]
    else:
        lines += ["", f"**{_esc(perf.get('note') or 'Accuracy unknown.')}**"]
    lines += ["", f"Model: {_esc(data['model']['name'])} ({_esc(data['model']['classifier'])}), threshold "
                  f"{data['model']['threshold']:.3f}. The report (PDF) and the HL7 FHIR R4 JSON are below.",
              "", DISCLAIMER]
    return "\n".join(lines)


def _patient_tab(gr: Any, screener: PatientScreener, catalog: ModelCatalog) -> None:
    """The patient tab: several recordings in, one patient result, the report to download."""
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown(PATIENT_MODE_NOTE, elem_id="steth-patient-note")
            files = gr.File(file_count="multiple", file_types=["audio"], type="filepath",
                            label="Recordings of one patient", elem_id="steth-patient-files")
            sites = gr.Textbox(value="", lines=3, max_lines=12, label="Recording sites (optional)",
                               placeholder="one per line, in upload order, e.g. P L M; read from KAUH/ICBHI "
                                           "names when empty")
            patient_id = gr.Textbox(value="", max_lines=1, max_length=40, label="Patient ID (optional)")
            with gr.Accordion("Patient facts (optional)", open=False):
                note = gr.Markdown(facts_note(catalog.uses_facts(catalog.default)), elem_id="steth-patient-facts-note")
                sex = gr.Dropdown(choices=[("not given", ""), ("female", "F"), ("male", "M")], value="", label="Sex")
                age = gr.Number(value=None, minimum=0, maximum=130, label="Age (years)")
            model = gr.Dropdown(choices=catalog.choices(), value=catalog.default, label="Model",
                                elem_id="steth-patient-model")
            button = gr.Button("Screen patient", variant="primary", elem_id="steth-patient-run")
        with gr.Column(scale=2):
            summary = gr.Markdown("Upload one patient's recordings, then press **Screen patient**.",
                                  label="patient summary", elem_id="steth-patient-result")
            spectrogram = gr.Image(label="deciding recording spectrogram", show_label=False, type="numpy",
                                   interactive=False, elem_id="steth-patient-spectrogram")
            explanation = gr.Image(label="deciding recording explanation", show_label=False, type="numpy",
                                   interactive=False, visible=False, elem_id="steth-patient-explanation")
            report_pdf = gr.File(label="report (PDF)", interactive=False, elem_id="steth-patient-pdf")
            report_fhir = gr.File(label="report (HL7 FHIR R4 JSON)", interactive=False, elem_id="steth-patient-fhir")
            with gr.Accordion("Result as JSON", open=False):
                record = gr.JSON(label="patient result", elem_id="steth-patient-json")

    def screen_patient_files(files, sites="", patient_id="", sex="", age=None, model_name=None):
        """Screen one patient's recordings; returns the summary, pictures, report files and JSON
        (the map's box shows only when there is a map)."""
        summary_, spectrogram_, explanation_, pdf_, fhir_, record_ = screener(files, sites, patient_id, sex, age,
                                                                             model_name)
        return (summary_, spectrogram_, gr.Image(value=explanation_, visible=explanation_ is not None), pdf_, fhir_,
                record_)

    model.change(lambda name: facts_note(catalog.uses_facts(name)), inputs=model, outputs=note,
                 api_visibility="private")
    button.click(screen_patient_files, inputs=[files, sites, patient_id, sex, age, model],
                 outputs=[summary, spectrogram, explanation, report_pdf, report_fhir, record],
                 api_name="screen_patient")
