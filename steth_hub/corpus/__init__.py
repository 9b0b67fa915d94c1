"""Corpora: import recordings into a clean, patient-split Hugging Face ``datasets`` folder.

    >>> from steth_hub.corpus import import_corpus, load_corpus
    >>> report = import_corpus("kauh", "lung-sounds/kauh", "corpora/kauh", n_folds=5)  # doctest: +SKIP
    >>> print(report.summary())                                                        # doctest: +SKIP
    >>> corpus = load_corpus("corpora/kauh")                                           # doctest: +SKIP
    >>> for row, recording in corpus.recordings(): ...                                 # doctest: +SKIP

Modules, one job each: ``kauh.py``, ``icbhi.py``, ``manifest.py`` (read names and tables),
``diagnosis.py`` (canonical diagnoses, the asthma label), ``qc.py`` (hygiene and the QC
report), ``splits.py`` (patient folds), ``store.py`` (the folder on disk), ``build.py``
(import and merge). See docs/corpus.md.

Importing this package does not import ``datasets`` or scikit-learn; they load when a
corpus is written or read.
"""

from __future__ import annotations

from steth_hub.corpus.build import IMPORTERS, ImportReport, import_corpus, merge_corpora
from steth_hub.corpus.diagnosis import asthma_label, normalise_diagnosis
from steth_hub.corpus.store import Corpus, Patient, load_corpus

__all__ = ["IMPORTERS", "ImportReport", "import_corpus", "merge_corpora", "load_corpus", "Corpus", "Patient",
           "normalise_diagnosis", "asthma_label"]
