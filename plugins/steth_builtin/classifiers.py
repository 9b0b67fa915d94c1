"""Built-in classifiers: registration only (importing this module imports nothing heavy).

* ``ast`` - transformers' Audio Spectrogram Transformer (the paper's main model; also the
  embedded ``steth/ast-asthma``), from a checkpoint or a size preset.
* ``densenet201`` - timm DenseNet201 on the 3-channel multi-window log-mel (the paper's baseline).
* ``mfcc-logreg`` - MFCC statistics + logistic regression, the simple baseline to beat.
* ``efficientat`` - AudioSet-pretrained EfficientAT MobileNetV3 (mn04...) with a linear asthma head,
  frozen (linear probe) or fine-tuned; the default screening model is one.
* ``vlm`` - vision-language models (transformers VLMs, Moondream by opt-in, the embedded steth-llava)
  reading the three-window spectrogram image and the paper's prompt JSON; P(asthma) from the
  answers' log-likelihoods (docs/vlm.md).
"""

from steth_hub import hookimpl
from steth_hub.specs import ClassifierSpec


@hookimpl
def register_classifiers(register):
    """Register the built-in classifiers."""
    register(ClassifierSpec(
        name="ast",
        summary="Audio Spectrogram Transformer (transformers), tiny to base, or from a checkpoint",
        factory="steth_builtin.ast_model:ASTClassifier",
        requires=("torch", "transformers"),
        extra="train",
        # plain transformers ASTForAudioClassification checkpoints without steth.json load as this plugin
        options={"features": "ast-frontend", "adopts": ["audio-spectrogram-transformer"]},
    ))
    register(ClassifierSpec(
        name="densenet201",
        summary="timm DenseNet201 on the 3-channel multi-window log-mel (the paper's baseline)",
        factory="steth_builtin.densenet_model:DenseNetClassifier",
        requires=("torch", "timm", "huggingface_hub", "safetensors"),
        extra="train",
        options={"features": "multiwindow-logmel"},
    ))
    register(ClassifierSpec(
        name="mfcc-logreg",
        summary="MFCC statistics + logistic regression (the simple baseline)",
        factory="steth_builtin.mfcc_logreg:MFCCLogReg",
        requires=("sklearn",),
        extra="train",
    ))
    register(ClassifierSpec(
        name="efficientat",
        summary="AudioSet-pretrained EfficientAT MobileNetV3 (mn04, mn05, mn10...) + linear head, frozen or fine-tuned",
        factory="steth_builtin.efficientat_model:EfficientATClassifier",
        requires=("torch", "torchvision", "safetensors", "sklearn"),
        extra="train",
        options={"features": "efficientat-mel"},
    ))
    register(ClassifierSpec(
        name="vlm",
        summary="Vision-language model: spectrogram image + patient-facts prompt -> P(asthma) by answer "
                "log-likelihood (transformers VLMs, LoRA; Moondream by opt-in; steth-llava)",
        factory="steth_builtin.vlm_model:VLMClassifier",
        requires=("torch", "transformers", "safetensors", "PIL"),
        extra="train",
        options={"features": "multiwindow-logmel"},
    ))
