"""``steth generate``: synthetic breath sounds from a prompt or patient facts, optionally checked by a classifier."""

from __future__ import annotations

import click


@click.command()
@click.option("--prompt", default=None,
              help="Prompt sentence, e.g. 'Breath sample from F-8yo diagnosed with bronchial asthma'.")
@click.option("--diagnosis", default=None,
              help="Instead of --prompt: asthma, normal, copd, heart failure or other (with --sex, --age).")
@click.option("--sex", default=None, help="F or M (with --diagnosis).")
@click.option("--age", default=None, help="Age in years (with --diagnosis).")
@click.option("--seconds", default="5", show_default=True, help="Length of each clip in seconds.")
@click.option("--n", "n", default=4, show_default=True, type=int, help="How many clips.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed: the same seed gives the same clips.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write (WAV files + generation.json); must be new, empty or an earlier output.")
@click.option("--model", default=None,
              help="Generator: steth/breath-diffusion (default, shipped), breath-diffusion, stable-audio, "
                   "a model folder, or a Stable Audio repo id in the local Hugging Face cache.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
              help="Generator config: model and sampler settings (configs/generators/stable-audio-*.yaml: the paper's).")
@click.option("--steps", default=None, type=int, help="Sampler steps (default: the model's).")
@click.option("--guidance", default=None, type=float, help="Classifier-free guidance scale (default: the model's).")
@click.option("--check", is_flag=True, help="Score every clip with a classifier; keep those classified as prompted.")
@click.option("--classifier", default=None,
              help="Classifier for --check (default steth/efficientat-asthma, the embedded default model).")
@click.option("--keep-threshold", default=None, type=float,
              help="P(asthma) threshold for --check (default: the classifier's own decision threshold).")
@click.option("--overwrite", is_flag=True, help="Replace OUT even if it is a non-empty folder of other files.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(prompt, diagnosis, sex, age, seconds, n, seed, out, model, config, steps, guidance, check, classifier,
             keep_threshold, overwrite, quiet):
    """Generate N synthetic breath-sound clips and write them to OUT with a JSON sidecar.

    Synthetic clips are for research on data imbalance and for listening; they are not patients.
    """
    from steth_hub.generation.run import GenerateRequest, run_generate

    request = GenerateRequest(prompt=prompt, diagnosis=diagnosis, sex=sex, age=age, seconds=seconds, n=n,
                              seed=seed, out=out, model=model, steps=steps, guidance_scale=guidance, check=check,
                              classifier=classifier, keep_threshold=keep_threshold, overwrite=overwrite,
                              progress=not quiet, config=config)
    result = run_generate(request, echo=click.echo)
    click.echo(f"wrote {result['kept']} clip(s) to {out}" + (f", {result['rejected']} rejected to {out}/rejected"
                                                              if result['rejected'] else ""))
