"""Our CNN14: its signal front end against known answers, and the real checkpoint-loading path
with a randomly initialised network saved the way the official checkpoint is laid out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmrag.pipelines.audio import panns
from mmrag.pipelines.model_resolver import ModelNotAvailable


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random CNN14 saved like the official file ({"model": ..., "sampler": numpy state})."""
    torch.manual_seed(0)
    model = panns.build_cnn14()
    path = tmp_path_factory.mktemp("panns") / panns.CHECKPOINT_NAME
    sampler = {"queue": [np.arange(10)], "pointers": np.zeros(527, dtype=np.int64)}
    torch.save({"iteration": 1, "model": model.state_dict(), "sampler": sampler}, path)
    return path


@pytest.fixture(scope="module")
def cnn14(random_checkpoint: Path) -> panns.LoadedCnn14:
    return panns.load_cnn14(random_checkpoint, device="cpu")


# --- the front end ----------------------------------------------------------------------------


def test_slaney_mel_scale_known_points() -> None:
    assert panns.hz_to_mel(1000.0) == pytest.approx(15.0)  # linear part: 200/3 Hz per mel
    assert panns.hz_to_mel(6400.0) == pytest.approx(42.0)  # log part: 6.4x per 27 mels
    hz = np.array([0.0, 50.0, 700.0, 1000.0, 3000.0, 14000.0])
    np.testing.assert_allclose(panns.mel_to_hz(panns.hz_to_mel(hz)), hz, rtol=1e-9, atol=1e-9)


def test_mel_filterbank_shape_support_peaks_and_unit_area() -> None:
    fb = panns.mel_filterbank()
    assert fb.shape == (64, 513) and fb.dtype == np.float32
    assert (fb >= 0).all()
    bin_hz = panns.SAMPLE_RATE / panns.WINDOW
    freqs = np.arange(513) * bin_hz
    assert fb[:, freqs < panns.FMIN].sum() == 0 and fb[:, freqs > panns.FMAX].sum() == 0
    centres = panns.mel_to_hz(
        np.linspace(panns.hz_to_mel(panns.FMIN), panns.hz_to_mel(panns.FMAX), 66)
    )[1:-1]
    peaks = freqs[fb.argmax(axis=1)]
    assert np.all(np.abs(peaks - centres) <= bin_hz)  # each triangle peaks at its centre
    assert np.all(np.diff(peaks) >= 0)
    # Slaney normalisation: unit area in Hz (exact for filters spanning many FFT bins).
    area = fb.sum(axis=1) * bin_hz
    np.testing.assert_allclose(area[-20:], 1.0, rtol=0.02)


def test_mel_filterbank_equals_an_independent_librosa_port() -> None:
    """transformers' mel_filter_bank(norm="slaney", mel_scale="slaney") reproduces librosa."""
    from transformers import audio_utils

    ref = audio_utils.mel_filter_bank(513, 64, 50.0, 14000.0, 32000, "slaney", "slaney").T
    np.testing.assert_allclose(panns.mel_filterbank(), ref, rtol=0, atol=1e-7)


def test_conv_stft_matches_torch_stft() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 16000)
    real, imag = panns.build_stft()(x)
    ours = torch.sqrt(real**2 + imag**2)[:, 0]  # (batch, frames, bins)
    ref = torch.stft(
        x,
        n_fft=1024,
        hop_length=320,
        window=torch.hann_window(1024, periodic=True),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()
    assert ours.shape == ref.transpose(1, 2).shape
    torch.testing.assert_close(ours, ref.transpose(1, 2), rtol=1e-3, atol=2e-3)


# --- loading and running ----------------------------------------------------------------------


def test_random_checkpoint_loads_and_embeds(cnn14: panns.LoadedCnn14) -> None:
    assert not cnn14.model.training
    wave = torch.from_numpy(np.random.default_rng(2).standard_normal((3, 32000)).astype("f4"))
    with torch.inference_mode():
        emb, probs = cnn14.model(wave)
        again, _ = cnn14.model(wave)
        single, _ = cnn14.model(wave[1:2])
    assert emb.shape == (3, panns.EMBEDDING_DIM) and probs.shape == (3, panns.CLASSES)
    assert (emb >= 0).all() and emb.abs().sum() > 0  # fc1 after ReLU, not all dead
    assert ((probs > 0) & (probs < 1)).all()
    torch.testing.assert_close(emb, again, rtol=0, atol=0)  # deterministic in eval mode
    torch.testing.assert_close(single[0], emb[1], rtol=1e-4, atol=1e-4)  # batch-independent
    assert not torch.allclose(emb[0], emb[1])


def test_weights_really_come_from_the_checkpoint(
    random_checkpoint: Path, cnn14: panns.LoadedCnn14
) -> None:
    saved = torch.load(random_checkpoint, weights_only=False)["model"]
    torch.testing.assert_close(cnn14.model.fc1.weight, saved["fc1.weight"])
    fresh = panns.build_cnn14()  # another random draw differs
    assert not torch.equal(fresh.fc1.weight, saved["fc1.weight"])


def test_no_labels_csv_means_no_tags_and_a_csv_gives_527_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert panns.read_labels(tmp_path) == []
    rows = ["index,mid,display_name"] + [f'{i},/m/{i},"Sound {i}, kind"' for i in range(527)]
    (tmp_path / panns.LABELS_NAME).write_text("\n".join(rows) + "\n")
    labels = panns.read_labels(tmp_path)
    assert len(labels) == 527 and labels[3] == "Sound 3, kind"


def test_a_mismatched_state_dict_names_the_keys(random_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(random_checkpoint, weights_only=False)["model"]
    state["fc.weight"] = state.pop("fc1.weight")  # renamed
    del state["conv_block6.conv2.weight"]  # missing
    bad = tmp_path / "renamed.pth"
    torch.save({"model": state}, bad)
    with pytest.raises(ModelNotAvailable) as err:
        panns.load_cnn14(bad)
    message = str(err.value)
    assert "missing: conv_block6.conv2.weight, fc1.weight" in message
    assert "unexpected: fc.weight" in message
    assert str(bad) in message


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"<html>404</html>")
    with pytest.raises(ModelNotAvailable, match="does not load"):
        panns.load_cnn14(junk)


def test_env_variable_names_the_checkpoint(
    random_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(panns.CHECKPOINT_ENV, str(random_checkpoint))
    assert panns.find_checkpoint() == random_checkpoint
    monkeypatch.setenv(panns.CHECKPOINT_ENV, str(random_checkpoint.with_name("gone.pth")))
    with pytest.raises(ModelNotAvailable, match=r"gone\.pth \(from \$MMRAG_PANNS_CHECKPOINT\)"):
        panns.find_checkpoint()


def test_missing_checkpoint_offline_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as err:
        panns.load_cnn14()
    message = str(err.value)
    assert str(tmp_path / "panns_data" / "Cnn14_mAP=0.431.pth") in message
    assert panns.CHECKPOINT_URL in message and "MMRAG_PANNS_CHECKPOINT" in message
    assert not (tmp_path / "panns_data").exists()  # nothing was fetched or created
