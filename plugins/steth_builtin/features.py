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
    register(FeatureExtractorSpec(
        name="efficientat-mel",
        summary="EfficientAT's front end: 32 kHz, pre-emphasis, 1024/800/320 STFT, 128 Kaldi mel bands 0-15 kHz, "
                "(log + 4.5) / 5 -> [N, 1, 128, T] (numpy only)",
        factory="steth_builtin.efficientat_frontend:EfficientATMel", requires=("numpy", "soxr")))
    register(FeatureExtractorSpec(
        name="ast-fbank-numpy",
        summary="The same AST filter banks in numpy alone (no torch): the light ONNX runtime's front end "
                "for exported ast models -> numpy [N, max_length, num_mel_bins]",
        factory="steth_hub.features:NumpyASTFrontEnd", requires=("numpy", "soxr"), extra="screen"))
