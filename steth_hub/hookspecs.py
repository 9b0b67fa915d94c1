"""The hooks a steth-hub plugin implements: one per kind of plugin.

A plugin is a module named by an entry point in the ``steth_hub`` group. It implements
any of the hooks below with ``@steth_hub.hookimpl``. Each hook receives a ``register``
callback; call it once per thing the plugin provides, with a spec from
:mod:`steth_hub.specs`. Specs point to their code by import string, so registering is
cheap and imports nothing heavy. A plugin may implement a hook with fewer arguments
than the hook declares (pluggy's rule), so hooks can grow without breaking plugins.

Every hook here is documented in ``docs/plugins.md``; a test fails if one is not.
"""

from __future__ import annotations

import pluggy

PROJECT = "steth_hub"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_preprocessors(register):
    """Register preprocessing steps.

    Call ``register(PreprocessorSpec(...))`` once per step. The factory takes the step's
    parameters as keywords and returns ``step(clips) -> clips``; a step that refuses a
    recording raises ``steth_hub.errors.RecordingRejected`` with a ``code``.

    Example::

        @hookimpl
        def register_preprocessors(register):
            register(PreprocessorSpec(name="highpass", summary="Butterworth high-pass filter",
                                      factory="my_pkg.steps:HighPass", requires=("scipy",)))
    """


@hookspec
def register_feature_extractors(register):
    """Register feature extractors.

    Call ``register(FeatureExtractorSpec(...))``. The factory takes keyword settings and
    returns ``extractor(waveforms, sample_rate) -> torch.Tensor`` for a batch of clips.

    Example::

        @hookimpl
        def register_feature_extractors(register):
            register(FeatureExtractorSpec(name="mfcc", summary="40 MFCCs, 25 ms window",
                                          factory="my_pkg.features:MFCC", requires=("torch",)))
    """


@hookspec
def register_classifiers(register):
    """Register classifiers.

    Call ``register(ClassifierSpec(...))``. The factory is a subclass of
    ``steth_hub.classifier.Classifier``: it can be built from a config, trained,
    asked for ``predict_proba`` on clips, saved and loaded (safetensors only).

    Example::

        @hookimpl
        def register_classifiers(register):
            register(ClassifierSpec(name="tiny-cnn", summary="A 3-layer CNN on log-mel",
                                    factory="my_pkg.model:TinyCNN", requires=("torch",)))
    """


@hookspec
def register_generators(register):
    """Register generators of synthetic recordings.

    Call ``register(GeneratorSpec(...))``. The factory returns an object with
    ``generate(prompt, seconds, n)`` giving synthetic recordings for a text prompt
    such as ``"Breath sample from F-8yo diagnosed with bronchial asthma"``.

    Example::

        @hookimpl
        def register_generators(register):
            register(GeneratorSpec(name="stable-audio", summary="Stable Audio Open, fine-tuned",
                                   factory="my_pkg.gen:StableAudio", requires=("diffusers",)))
    """


@hookspec
def register_explainers(register):
    """Register explainers: maps of where a classifier looked.

    Call ``register(ExplainerSpec(...))``. The factory returns an object with
    ``explain(classifier, waveforms, target=1) -> steth_hub.explanation.ClipMaps``: one
    time x frequency map per clip (float32 ``[N, S]`` waveforms at the classifier's rate) on
    the classifier's own input grid; ``options={"classifiers": [...]}`` lists the
    classifiers it supports (empty: any).

    Example::

        @hookimpl
        def register_explainers(register):
            register(ExplainerSpec(name="occlusion", summary="Occlusion sensitivity",
                                   factory="my_pkg.explain:Occlusion", requires=("torch",)))
    """
