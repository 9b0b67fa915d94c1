"""Feature extractors on real recordings: multi-window log-mel (against librosa), 4 kHz input, the AST front end."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from steth_hub.audio import decode, resample  # noqa: E402
from steth_hub.errors import ConfigError  # noqa: E402
from steth_hub.features import ASTFrontEnd, MultiWindowLogMel  # noqa: E402
from steth_hub.preprocess import Preprocessor  # noqa: E402

ASTHMA = "kauh/EP38_Asthma,E W,P R M,38,M_middle10sec.wav"
NORMAL = "kauh/EP32_N,N,A R L,30,M_middle10sec.wav"


@pytest.fixture(scope="module")
def extractor():
    return MultiWindowLogMel()


@pytest.fixture(scope="module")
def clips(examples_dir):
    """Real clips from the default preset: [6, 80000] at 16 kHz (two 4 kHz KAUH recordings)."""
    pre = Preprocessor()
    return np.stack([c.samples for name in (ASTHMA, NORMAL) for c in pre.run(examples_dir / name)])


def _upper_bands(extractor, min_hz: float = 2050.0) -> np.ndarray:
    """Mel bands whose triangle starts above ``min_hz``."""
    fb = extractor.filterbank.numpy()
    freqs = np.arange(fb.shape[0]) * extractor.sample_rate / extractor.n_fft
    lower_edge = np.array([freqs[fb[:, m] > 0].min() for m in range(fb.shape[1])])
    return lower_edge >= min_hz


def test_shape_and_frames(extractor, clips):
    out = extractor(clips, 16000)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert tuple(out.shape) == (6, 3, 128, 501) == (6, 3, 128, extractor.n_frames(80000))
    assert extractor.win_lengths == [400, 1600, 2800] and extractor.hop == 160 and extractor.n_fft == 2800
    # the three windows differ (time vs frequency resolution), so the channels are not copies
    assert not torch.allclose(out[:, 0], out[:, 2], atol=1.0)


def test_matches_librosa(extractor, clips):
    librosa = pytest.importorskip("librosa")
    ours = extractor(clips[:2], 16000).numpy()
    for i in range(2):
        for k, win in enumerate(extractor.win_lengths):
            mel = librosa.feature.melspectrogram(y=clips[i], sr=16000, n_fft=2800, hop_length=160, win_length=win,
                                                 window="hann", center=True, pad_mode="reflect", power=2.0,
                                                 n_mels=128, fmin=0.0, fmax=8000.0)
            ref = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)
            assert np.abs(ours[i, k] - ref).max() < 0.02, (i, win)


def test_filterbank_is_librosas(extractor):
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=2800, n_mels=128, fmin=0.0, fmax=8000.0)
    assert np.allclose(extractor.filterbank.numpy().T, ref, atol=1e-7)


def test_inputs_numpy_torch_one_clip_and_batches(extractor, clips):
    ref = extractor(clips[:3], 16000)
    assert torch.allclose(extractor(torch.from_numpy(clips[:3]), 16000), ref)
    assert torch.allclose(extractor(clips[0], 16000)[0], ref[0], atol=1e-4)
    for batch, chunk in ((2, 97), (3, None), (1, 1000)):  # uneven chunks of clips and of frames
        small = MultiWindowLogMel(batch_size=batch, chunk_frames=chunk)
        assert torch.allclose(small(clips[:3], 16000), ref, atol=1e-4)  # chunking does not change the numbers


def test_4khz_recording_upper_bands_sit_at_the_floor(extractor, examples_dir):
    rec = decode(examples_dir / ASTHMA)
    assert rec.sample_rate == 4000
    # through the preset (resampled to 16 kHz) and given directly at 4 kHz (resampled inside)
    via_preset = extractor(np.stack([c.samples for c in Preprocessor().run(rec)]), 16000).numpy()
    direct = extractor(rec.samples[None, :20000], 4000).numpy()
    upper = _upper_bands(extractor)
    assert upper.sum() > 50  # mel bands above 2 kHz: empty for a 4 kHz recording
    for out in (via_preset, direct):
        assert np.isfinite(out).all()
        floor = out.max(axis=(2, 3), keepdims=True) - 80.0
        at_floor = np.isclose(out, floor, atol=1e-3)
        assert at_floor[:, :, upper].mean() > 0.98  # leakage of the windows' side lobes aside
        low = ~_upper_bands(extractor, 500.0)  # bands starting below 500 Hz
        assert at_floor[:, :, low].mean() < 0.05  # where breath and heart sounds are: content, not floor
        assert out.min() >= floor.min() - 1e-3


def test_full_band_audio_is_not_at_the_floor(extractor, shared_data):
    """The contrast that makes the 4 kHz check meaningful: a real 44.1 kHz recording has content above 2 kHz."""
    path = shared_data / "icbhi" / "113_1b1_Ar_sc_Litt3200_middle10sec.wav"
    candidates = [p for p in sorted((shared_data / "icbhi").glob("*.wav")) if decode(p).sample_rate == 44100]
    rec = decode(candidates[0] if candidates else path)
    assert rec.sample_rate == 44100
    x = resample(rec.samples, 44100, 16000)[:80000]
    out = extractor(x[None, :] / np.abs(x).max(), 16000).numpy()
    floor = out.max(axis=(2, 3), keepdims=True) - 80.0
    assert np.isclose(out, floor, atol=1e-3)[:, :, _upper_bands(extractor)].mean() < 0.5


def test_silence_gives_the_floor_not_nan(extractor):
    out = extractor(np.zeros((1, 16000), np.float32), 16000)
    assert torch.isfinite(out).all() and float(out.max()) == pytest.approx(-100.0)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="half the sample rate"):
        MultiWindowLogMel(sample_rate=8000, f_max=8000)
    with pytest.raises(ConfigError, match="n_fft"):
        MultiWindowLogMel(n_fft=512)
    with pytest.raises(ConfigError, match=r"\[N, S\]"):
        MultiWindowLogMel()(np.zeros((1, 2, 16000), np.float32), 16000)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(clips):
    with pytest.raises(ConfigError, match="no CUDA"):
        MultiWindowLogMel(device="cuda")(clips[:1], 16000)
    assert MultiWindowLogMel(device="auto")(clips[:1], 16000).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(extractor, clips):
    gpu = MultiWindowLogMel(device="cuda")(clips, 16000)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - extractor(clips, 16000)).abs().max() < 0.05
    on_input_device = MultiWindowLogMel()(torch.from_numpy(clips).cuda(), 16000)
    assert on_input_device.device.type == "cuda"


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
def test_ast_front_end_is_transformers_extractor(clips):
    from transformers import ASTFeatureExtractor

    front = ASTFrontEnd(max_length=512)
    out = front(clips[:2], 16000)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 512, 128)
    ref = ASTFeatureExtractor(sampling_rate=16000, max_length=512)(list(clips[:2]), sampling_rate=16000,
                                                                   return_tensors="np")["input_values"]
    assert np.allclose(out.numpy(), ref)
    assert torch.isfinite(out).all()
    given = ASTFrontEnd(ASTFeatureExtractor(max_length=300))
    assert given(clips[:1], 16000).shape == (1, 300, 128) and given.config()["max_length"] == 300
    with pytest.raises(ConfigError):
        ASTFrontEnd(ASTFeatureExtractor(), max_length=3)


def test_ast_front_end_resamples_4khz(examples_dir):
    rec = decode(examples_dir / ASTHMA)
    front = ASTFrontEnd(max_length=512)
    direct = front(rec.samples[None, :20000], 4000)
    via = front(resample(rec.samples[:20000], 4000, 16000)[None, :], 16000)
    assert torch.isfinite(direct).all() and torch.allclose(direct, via)


def test_registered_as_plugins(clips):
    from steth_hub.registry import get_registry

    registry = get_registry()
    assert {"multiwindow-logmel", "ast-fbank"} <= set(registry.names("feature_extractor"))
    mw = registry.create("feature_extractor", "multiwindow-logmel", n_mels=64, f_max=4000)
    assert mw(clips[:1], 16000).shape == (1, 3, 64, 501)
    ast = registry.create("feature_extractor", "ast-fbank", max_length=256)
    assert ast(clips[:1], 16000).shape == (1, 256, 128)
