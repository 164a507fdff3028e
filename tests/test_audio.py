"""The audio data layer and audio classifiers: decoding, features, file-name parsing, splits and training."""
import argparse
import csv
import json
import logging
import os

import numpy as np
import pytest
import soundfile
import torch

from conftest import shared_folder
from neuroseq.audio import (AUDIO_EXTENSIONS, FSDD_PATTERN, AudioAugment, AudioPreprocessing, feature_array,
                            fetch_fsdd, fsdd_file_names, leave_one_group_out, load_audio_folder, mu_law_decode,
                            mu_law_encode, pad_or_crop, parse_file_name, raw_features, read_audio, split_by_group,
                            split_by_take)
from neuroseq.core import NeuroseqError

torch.set_num_threads(2)
RATE = 8000
TONE = 0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE // 2) / RATE)  # 0.5 s, peak 0.5


def fsdd_subset(tmp_path, speakers=("jackson", "lucas"), takes=range(8)):
    "Link the FSDD recordings of `speakers` and `takes` into a folder of their own; return it."
    recordings = shared_folder("data", "fsdd", "recordings")
    folder = tmp_path / "digits"
    folder.mkdir()
    for speaker in speakers:
        for digit in range(10):
            for take in takes:
                name = f"{digit}_{speaker}_{take}.wav"
                (folder / name).symlink_to(recordings / name)
    return folder


# ---- mu-law


def test_mu_law_exact_values():
    assert mu_law_encode(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    assert mu_law_decode(np.array([0, 255])).tolist() == [-1.0, 1.0]
    assert mu_law_encode(mu_law_decode(np.arange(256))).tolist() == list(range(256))


def test_mu_law_torch_matches_numpy():
    waveform = np.linspace(-1, 1, 1001)
    encoded = mu_law_encode(torch.tensor(waveform))
    assert encoded.dtype == torch.int64
    assert encoded.tolist() == mu_law_encode(waveform).tolist()
    np.testing.assert_allclose(mu_law_decode(encoded).numpy(), mu_law_decode(mu_law_encode(waveform)), atol=1e-6)


def test_mu_law_rejects_nan_and_bad_classes():
    with pytest.raises(ValueError, match="2 NaN"):
        mu_law_encode(np.array([np.nan, 0.0, np.nan]))
    with pytest.raises(ValueError, match="0..255"):
        mu_law_decode(np.array([-1]))


# ---- decoding every sample format


LOSSY = {"ULAW", "ALAW", "IMA_ADPCM", "MS_ADPCM", "GSM610", "G721_32", "G723_24", "G723_40", "NMS_ADPCM_16",
         "NMS_ADPCM_24", "NMS_ADPCM_32", "VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III",
         "DWVW_12", "PCM_S8", "PCM_U8"}
EXTENSION = {"WAV": ".wav", "WAVEX": ".wav", "AIFF": ".aiff", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3",
             "W64": ".w64", "CAF": ".caf", "AU": ".au", "RF64": ".rf64"}


def test_every_sample_format_reads_on_one_scale(tmp_path):
    checked, unreadable = [], []
    for container, extension in EXTENSION.items():
        for subtype in soundfile.available_subtypes(container):
            path = tmp_path / f"tone_{container}_{subtype}{extension}"
            rate = 48000 if subtype == "OPUS" else RATE
            tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate // 2) / rate)
            try:
                soundfile.write(path, tone, rate, format=container, subtype=subtype)
            except (soundfile.LibsndfileError, RuntimeError, ValueError):
                continue  # libsndfile cannot write this combination, so there is nothing to read back
            try:
                soundfile.read(path)
            except (soundfile.LibsndfileError, RuntimeError):
                # libsndfile 1.2.2 writes AIFF DWVW_16/24 files that it cannot read back: expect a clear error
                with pytest.raises(NeuroseqError, match=path.name):
                    read_audio(path)
                unreadable.append(f"{container}/{subtype}")
                continue
            waveform, sample_rate = read_audio(path)
            assert waveform.dtype == np.float32, path.name
            assert sample_rate == rate, path.name
            tolerance = 0.15 if subtype in LOSSY else 0.01
            assert abs(np.abs(waveform).max() - 0.5) < tolerance, path.name
            spectrum = np.abs(np.fft.rfft(waveform))
            assert abs(np.argmax(spectrum) * rate / len(waveform) - 440) < 10, path.name
            checked.append(f"{container}/{subtype}")
    assert len(checked) >= 60, checked  # libsndfile 1.2 writes about 70 of these combinations
    assert len(unreadable) <= 3, unreadable


def test_float_wav_beyond_full_scale_kept_with_warning(tmp_path, caplog):
    path = tmp_path / "loud.wav"
    soundfile.write(path, 4 * TONE, RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="neuroseq.audio"):
        waveform, _ = read_audio(path)
    assert abs(np.abs(waveform).max() - 2.0) < 1e-4
    assert "loud.wav" in caplog.text
    assert "kept, not clipped" in caplog.text


def test_stereo_is_averaged(tmp_path):
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([TONE, np.zeros_like(TONE)], axis=1), RATE)
    waveform, _ = read_audio(path)
    assert waveform.shape == (len(TONE),)
    assert abs(np.abs(waveform).max() - 0.25) < 1e-3


def test_read_audio_errors_name_the_file(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(NeuroseqError, match="notes.wav"):
        read_audio(text)

    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0), RATE)
    with pytest.raises(NeuroseqError, match="empty.wav: the audio file contains no samples"):
        read_audio(empty)

    broken = tmp_path / "nan.wav"
    soundfile.write(broken, np.array([0.0, np.nan, np.inf, 0.1]), RATE, subtype="FLOAT")
    with pytest.raises(NeuroseqError, match="nan.wav: 2 samples are NaN or infinite"):
        read_audio(broken)

    with pytest.raises(NeuroseqError, match="missing.flac: audio file not found"):
        read_audio(tmp_path / "missing.flac")


def test_undecodable_compressed_file_names_the_fix(tmp_path):
    # libsndfile does not read AAC, so this goes to audioread, which has no backend without ffmpeg or GStreamer
    fake = tmp_path / "speech.m4a"
    fake.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    with pytest.raises(NeuroseqError) as raised:
        read_audio(fake)
    message = str(raised.value)
    assert "speech.m4a" in message
    assert "ffmpeg" in message or "could not decode" in message
    assert type(raised.value) is NeuroseqError  # never a bare NoBackendError


# ---- file names, folders, CSV


def test_parse_fsdd_names():
    assert parse_file_name("x/7_jackson_32.wav") == {"label": "7", "group": "jackson", "take": 32}
    assert parse_file_name("0_yweweler_0.wav")["take"] == 0


def test_parse_custom_patterns():
    assert parse_file_name("high_pcm24x.wav", r"(?P<label>[^_]+)_.*")["label"] == "high"
    assert parse_file_name("s03-yes-1.flac", r"s\d+-(\w+)-\d", r"(s\d+)") == {"label": "yes", "group": "s03",
                                                                              "take": None}


def test_parse_errors_name_file_and_pattern():
    with pytest.raises(NeuroseqError, match="jackson_7.wav: the file name does not match the label pattern"):
        parse_file_name("jackson_7.wav")
    with pytest.raises(NeuroseqError, match=r"no group; name the label part"):
        parse_file_name("abc.wav", r"abc")
    with pytest.raises(NeuroseqError, match="7_x_1.wav: the file name does not match the group pattern"):
        parse_file_name("7_x_1.wav", FSDD_PATTERN, r"(?P<group>speaker\d)")


def test_folder_skips_unmatched_names_with_count(tmp_path):
    folder = fsdd_subset(tmp_path, takes=range(2))
    soundfile.write(folder / "recording-final.wav", TONE, RATE)
    (folder / "notes.txt").write_text("labels are in the names")
    records = load_audio_folder(folder)
    assert len(records) == 40
    assert [file.name for file, _ in records.skipped] == ["recording-final.wav"]
    assert "does not match the label pattern" in records.skipped[0][1]
    assert any("notes.txt" in note and "1 files that are not audio" in note for note in records.notes)


def test_folder_with_one_class_is_an_error(tmp_path):
    for take in range(3):
        soundfile.write(tmp_path / f"3_ann_{take}.wav", TONE, RATE)
    with pytest.raises(NeuroseqError, match=r"label \['3'\]; a classifier needs at least 2 classes"):
        load_audio_folder(tmp_path)
    assert len(load_audio_folder(tmp_path, min_classes=1)) == 3


def test_folder_without_usable_audio_names_files(tmp_path):
    (tmp_path / "0_ann_0.wav").write_text("broken")
    with pytest.raises(NeuroseqError, match="no usable audio in .*0_ann_0.wav"):
        load_audio_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NeuroseqError, match="no audio files were found"):
        load_audio_folder(empty)
    with pytest.raises(NeuroseqError, match="nowhere: no such file or folder"):
        load_audio_folder(tmp_path / "nowhere")


def test_csv_labels_and_groups(tmp_path):
    (tmp_path / "audio").mkdir()
    rows = []
    for index, (label, speaker) in enumerate([("yes", "a"), ("no", "a"), ("yes", "b"), ("no", "b")]):
        soundfile.write(tmp_path / "audio" / f"clip{index}.wav", TONE * (index + 1) / 4, RATE)
        rows.append({"file": f"audio/clip{index}.wav", "label": label, "group": speaker})
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["file", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    records = load_audio_folder(tmp_path / "labels.csv")
    assert records.labels == ["yes", "no", "yes", "no"]
    assert records.groups == ["a", "a", "b", "b"]
    assert records.label_names == ["no", "yes"]

    (tmp_path / "bad.csv").write_text("path,class\naudio/clip0.wav,yes\n")
    with pytest.raises(NeuroseqError, match="bad.csv: a label CSV needs a header row with the columns file,label"):
        load_audio_folder(tmp_path / "bad.csv")


# ---- splits


def test_official_split_has_no_take_leak():
    records_takes = [int(name[:-4].split("_")[2]) for name in fsdd_file_names()]
    train, test = split_by_take(records_takes)
    assert (len(train), len(test)) == (2250, 250)
    assert {records_takes[index] for index in test} == {0, 1, 2, 3, 4}
    assert min(records_takes[index] for index in train) == 5
    assert not set(train) & set(test)


def test_leave_one_speaker_out_has_no_speaker_leak():
    speakers = [name[:-4].split("_")[1] for name in fsdd_file_names()]
    folds = list(leave_one_group_out(speakers))
    assert [fold[0] for fold in folds] == ["george", "jackson", "lucas", "nicolas", "yweweler"]
    for speaker, train, test in folds:
        assert len(test) == 500
        assert {speakers[index] for index in test} == {speaker}
        assert speaker not in {speakers[index] for index in train}
        assert len(train) + len(test) == 2500


def test_split_errors_say_what_to_do():
    with pytest.raises(NeuroseqError, match="take number in every file name"):
        split_by_take([1, None, 6])
    with pytest.raises(NeuroseqError, match="leaves 0 training"):
        split_by_take([0, 1, 2])
    with pytest.raises(NeuroseqError, match=r"test groups \['zed'\] are not in the data"):
        split_by_group(["a", "b"], ["zed"])
    with pytest.raises(NeuroseqError, match="needs a group for every file"):
        split_by_group(["a", None], ["a"])


# ---- features


def test_feature_shapes_and_masks():
    settings = AudioPreprocessing()
    assert raw_features(TONE.astype(np.float32), settings).shape == (101, 40)
    assert raw_features(TONE.astype(np.float32), AudioPreprocessing(feature="mfcc", n_mfcc=13)).shape == (101, 13)
    features, masks = feature_array([TONE.astype(np.float32)], settings, return_mask=True)
    assert features.shape == (1, 101, 40)
    assert masks.sum() == 50  # 0.5 s of audio: frames centred on samples 0, 80, ..., 3920
    padded, mask = pad_or_crop(np.arange(3), 5)
    assert padded.tolist() == [0, 1, 2, 0, 0]
    assert mask.tolist() == [True, True, True, False, False]


def test_silence_gives_finite_features():
    settings = AudioPreprocessing()
    for clip in (np.zeros(8000, np.float32), np.full(8000, 0.25, np.float32), np.full(8000, 1e-7, np.float32)):
        features = raw_features(clip, settings)
        assert np.isfinite(features).all()
        assert features.min() >= -100.001  # the decibel floor set by amin = 1e-10


def test_augmented_copies_differ_from_clean():
    settings = AudioPreprocessing()
    features = feature_array([TONE.astype(np.float32)], settings, AudioAugment(), copies=2, seed=3)
    assert features.shape == (3, 101, 40)
    assert not np.allclose(features[0], features[1])
    again = feature_array([TONE.astype(np.float32)], settings, AudioAugment(), copies=2, seed=3)
    np.testing.assert_array_equal(features, again)  # one seed, one result


def test_preprocessing_round_trips_through_json():
    settings = AudioPreprocessing(sample_rate=16000, feature="mfcc", trim_db=None, feature_mean=[0.5] * 20,
                                  feature_std=[2.0] * 20)
    assert AudioPreprocessing.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    with pytest.raises(NeuroseqError, match=r"unknown audio preprocessing settings \['hop'\]"):
        AudioPreprocessing.from_dict({"hop": 10})
    with pytest.raises(NeuroseqError, match="'cqt'"):
        AudioPreprocessing(feature="cqt")


# ---- the FSDD download


def test_fetch_fsdd_downloads_and_checks(tmp_path, monkeypatch):
    recordings = shared_folder("data", "fsdd", "recordings")
    monkeypatch.setenv("NEUROSEQ_DATA", str(tmp_path / "cache"))
    folder = fetch_fsdd(base_url=recordings.resolve().as_uri() + "/")  # a file:// mirror: no network
    assert folder == tmp_path / "cache" / "fsdd" / "recordings"
    assert len(list(folder.glob("*.wav"))) == 2500
    assert fetch_fsdd() == folder  # cached: nothing is fetched again

    os.chmod(folder / "0_george_0.wav", 0o644)
    (folder / "0_george_0.wav").write_bytes((folder / "0_george_1.wav").read_bytes())
    with pytest.raises(NeuroseqError, match="do not match their published checksums"):
        fetch_fsdd()


def test_fetch_fsdd_names_missing_files(tmp_path):
    with pytest.raises(NeuroseqError, match=f"{tmp_path} lacks 2500 of the 2500 FSDD recordings"):
        fetch_fsdd(tmp_path)
    with pytest.raises(NeuroseqError, match="could not download"):
        fetch_fsdd(base_url=(tmp_path / "no-mirror").as_uri() + "/")


# ---- training, saving and evaluating


def test_train_and_evaluate_round_trip(tmp_path, capsys):
    from neuroseq.cli_audio import evaluate_audio, train_audio

    folder = fsdd_subset(tmp_path)
    out = tmp_path / "model"
    arguments = argparse.Namespace(paths=[folder], out=out, model="cnn", label_pattern=None, group_pattern=None,
                                   split="take", epochs=2, seed=0)
    assert train_audio(arguments) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    for name in ("model.safetensors", "config.json", "metrics.json", "confusion.png", "training.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["kind"] == "audio"
    assert config["architecture"]["name"] == "audio-resnet"
    assert config["preprocessing"]["label_pattern"] == FSDD_PATTERN
    assert len(config["preprocessing"]["feature_mean"]) == 40
    assert config["provenance"]["test_takes"] == [0, 1, 2, 3, 4]
    assert metrics["n_test"] == 100
    assert metrics["n_train"] == 60
    assert all(np.isfinite(row[1]) and np.isfinite(row[2]) for row in metrics["history"])

    evaluation = argparse.Namespace(paths=[folder], model_dir=out, out=tmp_path / "scores", label_pattern=None)
    assert evaluate_audio(evaluation, config) == 0
    printed = capsys.readouterr().out
    assert "60 training recordings left out" in printed
    assert "true\\pred" in printed
    scores = json.loads((tmp_path / "scores" / "evaluation.json").read_text())
    assert scores["accuracy"] == metrics["accuracy"]  # the same features, the same model, the held-out takes
    assert scores["n_test"] == 100


def test_transformer_trains_a_few_steps(tmp_path):
    from neuroseq.audio_models import fit_audio_classifier

    records = load_audio_folder(fsdd_subset(tmp_path, speakers=("george",), takes=range(7)))
    train, test = split_by_take(records.takes)
    fit = fit_audio_classifier(records.subset(train), records.subset(test), model="transformer", epochs=1,
                               copies=0, augment=None)
    assert fit.architecture["name"] == "transformer"
    assert np.isfinite(fit.history[0][1])
    assert fit.metrics["n_test"] == 50


def test_model_saved_under_old_module_loads(tmp_path):
    "Model directories saved before AudioResNet moved to neuroseq.audio_cnn record neuroseq.audio_models as its module."
    import subprocess
    import sys

    from neuroseq.audio_cnn import AudioResNet
    from neuroseq.train import save_model

    torch.manual_seed(0)
    model = AudioResNet(n_classes=3, n_bins=8, width=8).eval()
    features = torch.randn(2, 20, 8)
    save_model(tmp_path / "new", model, {"architecture": {"n_classes": 3, "n_bins": 8, "width": 8}})
    new_config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert new_config["architecture"]["module"] == "neuroseq.audio_cnn"
    save_model(tmp_path / "old", model, {"architecture": {"n_classes": 3, "n_bins": 8, "width": 8,
                                                          "module": "neuroseq.audio_models"}})
    torch.save(features, tmp_path / "features.pt")
    expected = model(features).detach()

    # Load in a fresh interpreter, so that only the module named in config.json can register the architecture.
    script = ("import sys, torch\n"
              "from neuroseq.train import load_model\n"
              "model, _ = load_model(sys.argv[1], device='cpu')\n"
              "print(type(model).__module__)\n"
              "torch.save(model(torch.load(sys.argv[2])).detach(), sys.argv[3])\n")
    for name in ("old", "new"):
        loaded = subprocess.run([sys.executable, "-c", script, tmp_path / name, tmp_path / "features.pt",
                                 tmp_path / f"{name}-logits.pt"], capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stderr
        assert loaded.stdout.strip() == "neuroseq.audio_cnn", name
        assert torch.equal(torch.load(tmp_path / f"{name}-logits.pt"), expected), name


def test_evaluate_rejects_unknown_labels(tmp_path):
    from neuroseq.cli_audio import evaluate_audio, train_audio

    folder = fsdd_subset(tmp_path, speakers=("jackson",), takes=range(6))
    arguments = argparse.Namespace(paths=[folder], out=tmp_path / "model", model="cnn", label_pattern=None,
                                   group_pattern=None, split="take", epochs=1, seed=0)
    assert train_audio(arguments) == 0
    other = tmp_path / "other"
    other.mkdir()
    soundfile.write(other / "eleven_jackson_0.wav", TONE, RATE)
    soundfile.write(other / "twelve_jackson_0.wav", TONE, RATE)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    evaluation = argparse.Namespace(paths=[other], model_dir=tmp_path / "model", out=None,
                                    label_pattern=r"(?P<label>[a-z]+)_(?P<group>[a-z]+)_(?P<take>\d+)")
    with pytest.raises(NeuroseqError, match=r"labels \['eleven', 'twelve'\] are not among the model's labels"):
        evaluate_audio(evaluation, config)


def test_audio_extensions_include_common_formats():
    for extension in (".wav", ".flac", ".mp3", ".ogg", ".aiff"):
        assert extension in AUDIO_EXTENSIONS


# ---- the command line


def test_cli_trains_and_reproduces_through_evaluate(tmp_path):
    from conftest import run_neuroseq

    folder = fsdd_subset(tmp_path, speakers=("nicolas", "george"), takes=range(7))
    out = tmp_path / "model"
    trained = run_neuroseq("train", folder, "--epochs", "1", "--out", out)
    assert trained.returncode == 0, trained.stderr
    assert "held-out accuracy" in trained.stdout
    accuracy = json.loads((out / "metrics.json").read_text())["accuracy"]
    evaluated = run_neuroseq("evaluate", "--model", out)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"accuracy {accuracy:.3f} on 100 recordings" in evaluated.stdout


def test_cli_one_class_folder_exits_2_naming_it(tmp_path):
    from conftest import run_neuroseq

    for take in range(6):
        soundfile.write(tmp_path / f"4_ann_{take}.wav", TONE, RATE)
    result = run_neuroseq("train", tmp_path, "--out", tmp_path / "model")
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr
    assert "at least 2 classes" in result.stderr
    assert "Traceback" not in result.stderr
