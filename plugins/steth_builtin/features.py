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
        summary="The AST front end (transformers' ASTFeatureExtractor) -> [N, T, 128]",
        factory="steth_hub.features:ASTFrontEnd", requires=("torch", "transformers"), extra="train"))
