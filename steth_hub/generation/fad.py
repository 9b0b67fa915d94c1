"""Frechet Audio Distance (Kilgour et al. 2019) in the embedding space of EfficientAT mn04.

Embeddings: the AudioSet-pretrained EfficientAT MobileNetV3 ``mn04`` (``../shared/models/
efficientat-mn04-as/model.safetensors``, MIT; frozen, never shipped), on its published front end
(32 kHz, 128 Kaldi mel bands); the last feature map averaged over frequency gives one 384-d vector
per time step (about 10 per second), as FAD's VGGish embeddings are per frame. FAD between two
sets of clips is the Frechet distance between Gaussians fitted to their frame embeddings:
``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

A FAD value means little alone: it depends on the encoder, the number of clips and the audio
chain. :func:`fad_report` therefore gives, per class, the distance between two disjoint halves
of the real clips (split **by patient**: no patient in both halves) as the floor, and the distance
from the first half to synthetic clips (as many as the second half holds) as the measurement;
the distance between the first half and the real clips of another class gives the scale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from steth_hub.errors import ModelError

ENCODER_FILE = "efficientat-mn04-as/model.safetensors"


def default_encoder_path() -> Path:
    root = os.environ.get("STETH_HUB_SHARED_MODELS")
    base = Path(root) if root else Path(__file__).resolve().parents[2].parent / "shared" / "models"
    return base / ENCODER_FILE


class MN04Embedder:
    """Frame embeddings ``[frames, 384]`` of clips, from the frozen AudioSet mn04 encoder."""

    def __init__(self, weights: str | os.PathLike | None = None, *, batch_size: int = 16):
        path = Path(weights) if weights else default_encoder_path()
        if not path.is_file():
            raise ModelError("the EfficientAT mn04 weights for FAD are not there", path=path,
                             fix="set STETH_HUB_SHARED_MODELS to the folder holding efficientat-mn04-as/, or pass "
                                 "the model.safetensors path")
        from steth_builtin.efficientat_frontend import EfficientATMel
        from steth_builtin.efficientat_net import build_network, load_encoder_weights

        self.net = build_network(0.4)
        load_encoder_weights(self.net, path)
        self.net.eval()
        self.front_end = EfficientATMel()
        self.batch_size = int(batch_size)
        self.weights = str(path)

    def frames(self, waveforms, sample_rate: int) -> list[np.ndarray]:
        """One ``[frames, 384]`` float64 array per clip."""
        import torch

        out = []
        waveforms = np.asarray(waveforms, dtype=np.float32)
        for start in range(0, len(waveforms), self.batch_size):
            feats = torch.from_numpy(self.front_end(waveforms[start:start + self.batch_size], sample_rate))
            with torch.no_grad():
                fmap = self.net.features(feats)  # [N, C, F', T']
            for clip in fmap.mean(dim=2).permute(0, 2, 1).double().numpy():
                out.append(clip)
        return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b``."""
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if isinstance(covmean, tuple):  # older SciPy returned (sqrtm, error estimate) with disp=False
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def patient_halves(patient_ids, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean masks over the clips: patients split in two disjoint halves at random (seeded)."""
    ids = np.asarray(patient_ids).astype(str)
    patients = np.array(sorted(set(ids)))
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    first = set(patients[: len(patients) // 2])
    a = np.array([p in first for p in ids])
    return a, ~a


def stack(frames: list[np.ndarray], mask=None) -> np.ndarray:
    chosen = frames if mask is None else [f for f, m in zip(frames, mask) if m]
    return np.concatenate(chosen, axis=0)
