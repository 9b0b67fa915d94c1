"""Built-in generators: registration only (importing this module imports nothing heavy).

* ``breath-diffusion`` - a small log-mel diffusion model (diffusers UNet2DModel) conditioned on
  diagnosis, sex and age band, waveform by Griffin-Lim; trained here on the shared recordings on
  a CPU and shipped in the package (``steth/breath-diffusion``, the default of ``steth generate``).
* ``stable-audio`` - diffusers ``StableAudioPipeline`` (DiT + Oobleck autoencoder + T5), for
  ``stabilityai/stable-audio-open-1.0`` or a fine-tuned folder a user has; never downloaded.
"""

from steth_hub import hookimpl
from steth_hub.specs import GeneratorSpec


@hookimpl
def register_generators(register):
    """Register the built-in generators."""
    register(GeneratorSpec(
        name="breath-diffusion",
        summary="Log-mel diffusion (UNet2DModel) conditioned on diagnosis/sex/age, Griffin-Lim; shipped",
        factory="steth_builtin.generators_diffusion:BreathDiffusion",
        requires=("torch", "diffusers", "safetensors"),
        extra="generate",
    ))
    register(GeneratorSpec(
        name="stable-audio",
        summary="Stable Audio Open (diffusers StableAudioPipeline) or a fine-tuned folder, from local files",
        factory="steth_builtin.generators_stable_audio:StableAudio",
        requires=("torch", "diffusers", "transformers", "torchsde"),
        extra="generate",
    ))
