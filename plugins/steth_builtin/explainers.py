"""Built-in explainers: registration only (importing this module imports nothing heavy).

* ``integrated-gradients`` - Integrated Gradients via captum, on the model's input cells; any
  classifier that declares its ``input_grid`` (the default of ``ast``).
* ``gradcam`` - Grad-CAM via pytorch-grad-cam at the classifier's ``gradcam_layer`` (DenseNet's
  ``features.norm5``, EfficientAT's last convolution); the default of ``densenet201`` and ``efficientat``.
* ``attention`` - AST: gradient-weighted attention relevance over the patches (Chefer et al. 2021);
  one pass, cheaper, less reliable on the planted-tone test.

All return maps on the classifier's own input grid; :mod:`steth_hub.explanation` places them on
the spectrogram. See ``docs/explainers.md``.
"""

from steth_hub import hookimpl
from steth_hub.specs import ExplainerSpec


@hookimpl
def register_explainers(register):
    """Register the built-in explainers."""
    register(ExplainerSpec(
        name="integrated-gradients",
        summary="Integrated Gradients (captum) on the input spectrogram cells; any classifier with an input grid",
        factory="steth_builtin.integrated_gradients:IntegratedGradientsExplainer",
        requires=("torch", "captum"),
        extra="explain",
        options={"needs": ["input_grid"]},
    ))
    register(ExplainerSpec(
        name="gradcam",
        summary="Grad-CAM (pytorch-grad-cam) at a CNN's last convolutional layer (the classifier's gradcam_layer)",
        factory="steth_builtin.gradcam:GradCAMExplainer",
        requires=("torch", "pytorch_grad_cam"),
        extra="explain",
        options={"needs": ["input_grid", "gradcam_layer"]},
    ))
    register(ExplainerSpec(
        name="attention",
        summary="AST: gradient-weighted attention relevance over the patches (Chefer et al. 2021)",
        factory="steth_builtin.attention:AttentionRelevance",
        requires=("torch", "transformers"),
        extra="explain",
        options={"classifiers": ["ast"]},
    ))
