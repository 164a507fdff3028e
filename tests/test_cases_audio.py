"""The audio problem cases in ../shared/cases: every sample format, silent and constant files, MP3 input.

Each test fails, rather than skips, when its case folder is missing.
"""
import logging

import numpy as np
import pytest
import soundfile
import torch

from conftest import shared_folder
from neuroseq.audio import (AudioPreprocessing, find_audio_files, load_audio_folder, mu_law_encode,
                            normalize_waveform, raw_features, read_audio, signal_problem)
from neuroseq.core import NeuroseqError

torch.set_num_threads(2)
PREFIX_LABEL = r"(?P<label>[^_]+)_.*"  # the label is the file-name prefix before the first '_'


def dominant_hz(waveform, sample_rate):
    spectrum = np.abs(np.fft.rfft(waveform))
    return np.argmax(spectrum) * sample_rate / len(waveform)


# ---- 14: one tone in six WAV encodings


def test_case14_every_encoding_reads_alike(caplog):
    folder = shared_folder("cases", "14-wav-bit-depths", "wavs")
    files = sorted(folder.glob("*.wav"))
    assert len(files) == 12
    reference = {}
    with caplog.at_level(logging.WARNING, logger="neuroseq.audio"):
        for path in files:
            label, encoding = path.stem.split("_", 1)
            waveform, sample_rate = read_audio(path)
            assert (sample_rate, waveform.shape, waveform.dtype) == (16000, (8000,), np.float32), path.name
            peak = np.abs(waveform).max()
            assert abs(peak - (4.0 if encoding == "float32peak4" else 0.5)) < 0.01, path.name
            reference.setdefault(label, waveform / peak)
            assert np.corrcoef(reference[label], waveform)[0, 1] > 0.9999, path.name
            assert dominant_hz(waveform, sample_rate) == pytest.approx(220 if label == "low" else 880, abs=2)
    warned = [record.getMessage() for record in caplog.records]
    assert sum("float32peak4" in message and "not clipped" in message for message in warned) == 2


def test_case14_folder_gives_equal_features():
    folder = shared_folder("cases", "14-wav-bit-depths", "wavs")
    settings = AudioPreprocessing(sample_rate=16000, duration_s=0.5)
    records = load_audio_folder(folder, PREFIX_LABEL, settings=settings)
    assert len(records) == 12
    assert records.label_names == ["high", "low"]
    assert records.labels.count("low") == records.labels.count("high") == 6
    for waveform in records.waveforms:  # peak normalisation brings the ±4 files back to the common scale
        assert abs(np.abs(waveform).max() - 1.0) < 1e-5
    features = {file.name: raw_features(waveform, settings) for file, waveform in zip(records.files,
                                                                                      records.waveforms)}
    for label in ("low", "high"):
        reference = features[f"{label}_pcm16.wav"]
        audible = reference > reference.max() - 30  # the mel bins within 30 dB of the tone
        for name, values in features.items():
            if name.startswith(label):
                # 8-bit audio has a noise floor about 48 dB below full scale, so it gets a wider tolerance
                tolerance = 1.5 if "u8" in name else 0.5
                assert np.abs(values - reference)[audible].max() < tolerance, name


# ---- 16: silent and constant files


def test_case16_silent_and_constant_named_and_finite():
    folder = shared_folder("cases", "16-silent-and-constant-wav", "wavs")
    settings = AudioPreprocessing(sample_rate=16000)
    records = load_audio_folder(folder, PREFIX_LABEL, settings=settings)
    assert len(records) == 10
    notes = " ".join(records.notes)
    assert "noise_silent.wav: the recording is silent" in notes
    assert "tone_dc.wav: the recording is constant" in notes
    assert len(records.notes) == 2
    for waveform in records.waveforms:
        assert np.isfinite(waveform).all()
        assert np.isfinite(raw_features(waveform, settings)).all()
        assert np.isfinite(raw_features(waveform, AudioPreprocessing(sample_rate=16000, feature="mfcc"))).all()
    silent = records.waveforms[[file.name for file in records.files].index("noise_silent.wav")]
    constant = records.waveforms[[file.name for file in records.files].index("tone_dc.wav")]
    assert np.abs(silent).max() == 0  # kept as silence
    assert np.abs(constant).max() < 1e-6  # the DC offset is removed, leaving silence


def test_case16_skip_mode_lists_the_files():
    folder = shared_folder("cases", "16-silent-and-constant-wav", "wavs")
    records = load_audio_folder(folder, PREFIX_LABEL, settings=AudioPreprocessing(sample_rate=16000),
                                on_silent="skip")
    assert len(records) == 8
    assert sorted(file.name for file, _ in records.skipped) == ["noise_silent.wav", "tone_dc.wav"]


def test_case16_every_normalisation_and_mu_law_stays_finite():
    folder = shared_folder("cases", "16-silent-and-constant-wav", "wavs")
    for name in ("noise_silent.wav", "tone_dc.wav"):
        waveform, _ = read_audio(folder / name)
        assert signal_problem(waveform) == ("silent" if "silent" in name else "constant")
        for method in ("peak", "rms", "none"):
            normalised = normalize_waveform(waveform, method)
            assert np.isfinite(normalised).all(), (name, method)
            classes = mu_law_encode(normalised)
            assert classes.min() >= 0
            assert classes.max() <= 255
    silent, _ = read_audio(folder / "noise_silent.wav")
    assert set(mu_law_encode(silent).tolist()) == {128}


def test_case16_training_loss_finite_at_every_step():
    from fastai.callback.core import Callback

    from neuroseq.audio import feature_array, fit_standardization
    from neuroseq.audio_models import AudioResNet
    from neuroseq.train import fit_classifier

    folder = shared_folder("cases", "16-silent-and-constant-wav", "wavs")
    records = load_audio_folder(folder, PREFIX_LABEL, settings=AudioPreprocessing(sample_rate=16000))
    settings = fit_standardization([raw_features(waveform, records.settings) for waveform in records.waveforms],
                                   records.settings)
    features = feature_array(records.waveforms, settings)
    labels = records.label_indices()
    assert np.isfinite(features).all()
    losses = []

    class RecordLoss(Callback):
        def after_loss(self):
            losses.append(float(self.loss))

    fit_classifier(AudioResNet(n_classes=2, width=8), features, labels, features, labels, epochs=3, batch_size=4,
                   callbacks=[RecordLoss()])
    assert len(losses) >= 9
    assert np.isfinite(losses).all()


# ---- 18: MP3 files and a text file in one folder


def test_case18_folder_scan_ignores_text():
    folder = shared_folder("cases", "18-mp3-input", "audio")
    audio, other = find_audio_files(folder)
    assert len(audio) == 8
    assert [file.name for file in other] == ["README.txt"]
    records = load_audio_folder(folder, PREFIX_LABEL, settings=AudioPreprocessing(sample_rate=22050, trim_db=None))
    assert len(records) == 8
    assert records.label_names == ["down", "up"]
    assert any("README.txt" in note for note in records.notes)


def test_case18_wav_only_says_what_it_left_out(caplog):
    folder = shared_folder("cases", "18-mp3-input", "audio")
    with caplog.at_level(logging.WARNING, logger="neuroseq.audio"):
        records = load_audio_folder(folder, PREFIX_LABEL, extensions=[".wav"])
    assert len(records) == 4
    assert "4 audio files are left out because only .wav are read" in caplog.text


def test_case18_mp3_matches_its_wav_twin():
    folder = shared_folder("cases", "18-mp3-input", "audio")
    for name in ("up_0", "up_1", "down_0", "down_1"):
        compressed, rate = read_audio(folder / f"{name}.mp3")
        original, original_rate = read_audio(folder / f"{name}.wav")
        assert (rate, compressed.shape) == (22050, (22050,)), name
        assert original_rate == 22050
        assert np.corrcoef(compressed, original)[0, 1] > 0.999, name


def test_case18_text_file_gives_clear_error():
    folder = shared_folder("cases", "18-mp3-input", "audio")
    with pytest.raises(NeuroseqError) as raised:
        read_audio(folder / "README.txt")
    assert type(raised.value) is NeuroseqError
    assert "README.txt: not an audio file that libsndfile can read" in str(raised.value)


def test_case18_renamed_text_file_is_skipped_with_name(tmp_path):
    folder = shared_folder("cases", "18-mp3-input", "audio")
    for path in folder.iterdir():
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "up_2.mp3").write_bytes((folder / "README.txt").read_bytes())  # text with an audio extension
    records = load_audio_folder(tmp_path, PREFIX_LABEL)
    assert len(records) == 8
    assert [file.name for file, _ in records.skipped] == ["up_2.mp3"]
    reason = records.skipped[0][1]
    assert "up_2.mp3" in reason
    assert "NoBackendError" not in reason
    assert "ffmpeg" in reason or "libsndfile" in reason
