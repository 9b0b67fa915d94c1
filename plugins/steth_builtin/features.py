"""Built-in feature extractors: registration only (importing this module imports nothing heavy).

Both are called as ``extractor(waveforms [N, S], sample_rate) -> torch.Tensor``; see
``steth_hub/features.py`` and ``docs/preprocessing.md``.
"""

from steth_hub import FeatureExtractorSpec, hookimpl


@hookimpl
def register_feature_extractors(register):
    """Register the built-in feature extractors."""
    register(FeatureExtractorSpec(
        name="multiwindow-logmel",
        summary="Log-mel with 25/100/175 ms windows, 128 bands 0-8 kHz -> [N, 3, 128, T] (CPU or CUDA)",
        factory="steth_hub.features:MultiWindowLogMel", requires=("torch", "transformers"), extra="train"))
    register(FeatureExtractorSpec(
        name="ast-fbank",
        summary="ASTFeatureExtractor Kaldi-style filter banks: num_mel_bins bands (128 by default), "
                "400-sample windows every 160 at its own rate (25/10 ms at 16 kHz)",
        factory="steth_hub.features:ASTFrontEnd", requires=("torch", "transformers"), extra="train"))
