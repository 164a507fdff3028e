"""Generative models: the KV cache and WaveNet's fast generation equal their slow definitions, bits per spike
has its exact value, and `neuroseq train --objective generate` / `neuroseq generate` run as a user runs them."""
import json
import math
import os

import numpy as np
import pytest
import soundfile
import torch

from conftest import DATA, assert_one_line_error, run_neuroseq, shared_folder
from neuroseq.gpt import GPT, GPTConfig, generate, sample_next
from neuroseq.neural_gpt import SpikeGPT, bits_per_spike, generate_spikes
from neuroseq.nwb import trial_spike_counts, write_generated_nwb
from neuroseq.synthetic import SyntheticConfig, write_synthetic_nwb
from neuroseq.wavenet import WaveNet, WaveNetConfig, generate_wavenet

torch.set_num_threads(1)


def small_gpt(n_classes=3, context=8):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, n_layers=2, n_heads=2, d_model=16, context=context, n_classes=n_classes))


def test_gpt_cache_equals_recompute_greedy():
    model = small_gpt()
    prompt, labels = torch.randint(0, 13, (3, 4)), torch.tensor([0, 1, 2])
    cached = generate(model, prompt, 40, labels, temperature=0, use_cache=True)
    recomputed = generate(model, prompt, 40, labels, temperature=0, use_cache=False)
    assert cached.shape == (3, 44)
    assert torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, recomputed)  # 44 tokens: far past the 8-token attention window


def test_gpt_cache_equals_recompute_seeded_sampling():
    model = small_gpt()
    prompt, labels = torch.randint(0, 13, (3, 4)), torch.tensor([2, 1, 0])
    options = dict(temperature=1.3, top_k=6, top_p=0.95, seed=11)
    cached = generate(model, prompt, 40, labels, use_cache=True, **options)
    assert torch.equal(cached, generate(model, prompt, 40, labels, use_cache=False, **options))
    assert torch.equal(cached, generate(model, prompt, 40, labels, use_cache=True, **options))  # repeatable
    assert not torch.equal(cached, generate(model, prompt, 40, labels, use_cache=True, **{**options, "seed": 12}))


def test_gpt_cache_with_prompt_longer_than_window():
    model = small_gpt(n_classes=0, context=4)
    prompt = torch.randint(0, 13, (2, 11))
    assert torch.equal(generate(model, prompt, 15, temperature=0), generate(model, prompt, 15, temperature=0, use_cache=False))


def test_conditional_gpt_requires_labels():
    with pytest.raises(ValueError, match="conditioned on 3 classes"):
        small_gpt()(torch.zeros(1, 4, dtype=torch.int64))


def test_sample_next_rejects_bad_options():
    logits = torch.zeros(1, 5)
    with pytest.raises(ValueError, match="top_p must lie in"):
        sample_next(logits, top_p=1.5)
    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):
        sample_next(logits, top_k=0)


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, top_k=40, seed=5)])
def test_wavenet_fast_equals_naive(sampling):
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(residual_channels=8, skip_channels=16, layers_per_stack=5, n_stacks=2, n_classes=4))
    assert model.receptive_field == 63
    prompt, labels = torch.randint(0, 256, (2, 5)), torch.tensor([3, 0])
    fast = generate_wavenet(model, prompt, 150, labels, fast=True, **sampling)
    naive = generate_wavenet(model, prompt, 150, labels, fast=False, **sampling)
    assert fast.shape == (2, 155)
    assert torch.equal(fast, naive)


def test_wavenet_receptive_field_matches_gradient():
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(residual_channels=4, skip_channels=8, layers_per_stack=4, n_stacks=1))
    embedded = model.embedding(torch.randint(0, 256, (1, 40))).detach().requires_grad_()
    x, skips = embedded.transpose(1, 2), 0
    for layer in model.layers:
        x, skip = layer(x)
        skips = skips + skip
    model.head(skips)[0, :, 39].sum().backward()
    reached = (embedded.grad[0].abs().sum(dim=1) > 0).nonzero().flatten()
    assert reached.min().item() == 39 - (model.receptive_field - 1)
    assert reached.max().item() == 39


def test_spike_gpt_cache_equals_recompute():
    torch.manual_seed(0)
    model = SpikeGPT(n_units=6, n_layers=2, n_heads=2, d_model=16, context=8, n_classes=2)
    labels = torch.tensor([0, 1, 1, 0])
    cached = generate_spikes(model, 4, 30, labels, seed=3)
    assert cached.shape == (4, 30, 6)
    assert torch.equal(cached, generate_spikes(model, 4, 30, labels, seed=3, use_cache=False))


def test_spike_gpt_bin_embedding_cache_equals_recompute():
    torch.manual_seed(0)
    model = SpikeGPT(n_units=6, n_layers=2, n_heads=2, d_model=16, context=30, n_classes=2, bin_embedding=True)
    labels = torch.tensor([0, 1, 1, 0])
    cached = generate_spikes(model, 4, 30, labels, seed=3)
    assert torch.equal(cached, generate_spikes(model, 4, 30, labels, seed=3, use_cache=False))
    with pytest.raises(ValueError, match="bin embeddings for 30 positions"):
        generate_spikes(model, 4, 31, labels, seed=3)


def test_bits_per_spike_exact_value():
    counts = np.array([[[1.0]]])
    # log L(model) - log L(null) = (log e - e) - (log 1 - 1) = 2 - e, over one spike
    assert bits_per_spike(np.array([[[math.e]]]), counts, np.array([1.0])) == pytest.approx((2 - math.e) / math.log(2))
    assert bits_per_spike(np.ones((1, 1, 1)), counts, np.array([1.0])) == 0.0


def test_bits_per_spike_rejects_no_spikes():
    with pytest.raises(ValueError, match="without a spike"):
        bits_per_spike(np.ones((2, 3, 1)), np.zeros((2, 3, 1)), np.ones(1))


def test_generated_nwb_round_trip(tmp_path):
    counts = np.random.default_rng(0).poisson(1.0, (5, 20, 3)).astype(float)
    path = write_generated_nwb(tmp_path / "generated.nwb", counts, ["a", "b", "a", "b", "b"], bin_s=0.05)
    reread = trial_spike_counts(path, "trials", "start_time", (0.0, 1.0), bin_ms=50.0)
    assert np.array_equal(reread.counts, counts)
    assert reread.labels["condition"].tolist() == ["a", "b", "a", "b", "b"]


def test_generated_nwb_rejects_wrong_condition_count(tmp_path):
    with pytest.raises(ValueError, match="2 conditions for 3 trials"):
        write_generated_nwb(tmp_path / "x.nwb", np.zeros((3, 4, 2)), [0, 1], bin_s=0.05)


# The command line, end to end.

@pytest.fixture(scope="module")
def spike_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spikes")
    session = write_synthetic_nwb(folder / "session.nwb", SyntheticConfig(n_units=12, trials_per_condition=8, seed=3))
    model_dir = folder / "model"
    result = run_neuroseq("train", session, "--objective", "generate", "--model", "gpt", "--epochs", "3",
                          "--bin-ms", "50", "--out", model_dir)
    return model_dir, result


def test_train_generate_spikes_writes_model_dir(spike_model):
    model_dir, result = spike_model
    assert result.returncode == 0, result.stderr
    assert {"model.safetensors", "config.json", "metrics.json"} <= {path.name for path in model_dir.iterdir()}
    config = json.loads((model_dir / "config.json").read_text())
    assert config["kind"] == "generative-spikes"
    assert config["labels"] == ["0", "1", "2", "3", "4", "5"]
    assert config["preprocessing"]["bin_ms"] == 50.0
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["n_train_trials"] + metrics["n_validation_trials"] + metrics["n_test_trials"] == 48
    assert math.isfinite(metrics["held_out_bits_per_spike"])
    assert math.isfinite(metrics["calibrated_bits_per_spike"])
    assert len(metrics["null_shrinkage_weights"]) == 12
    assert all(0.0 <= weight <= 1.0 for weight in metrics["null_shrinkage_weights"])
    assert metrics["true_rate_bits_per_spike"] > 0  # a synthetic session has its true rates


def test_generate_nwb_then_explore(spike_model, tmp_path):
    model_dir, _ = spike_model
    result = run_neuroseq("generate", "--model", model_dir, "--n", "5", "--condition", "2", "--seed", "1",
                          "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    generated = tmp_path / "generated.nwb"
    reread = trial_spike_counts(generated, "trials", "start_time", (0.0, 1.0), bin_ms=50.0)
    assert reread.counts.shape == (5, 20, 12)
    assert reread.labels["condition"].tolist() == [2] * 5
    explored = run_neuroseq("explore", generated)
    assert explored.returncode == 0, explored.stderr
    assert "12 units" in explored.stdout
    assert "5 trials" in explored.stdout


def test_generate_same_seed_same_trials(spike_model, tmp_path):
    model_dir, _ = spike_model
    for name in ("first", "second"):
        result = run_neuroseq("generate", "--model", model_dir, "--n", "3", "--seed", "4", "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
    first = trial_spike_counts(tmp_path / "first" / "generated.nwb", bin_ms=50.0).counts
    second = trial_spike_counts(tmp_path / "second" / "generated.nwb", bin_ms=50.0).counts
    assert np.array_equal(first, second)


def test_generate_unknown_condition_exits_2(spike_model, tmp_path):
    model_dir, _ = spike_model
    result = run_neuroseq("generate", "--model", model_dir, "--n", "1", "--condition", "9", "--out", tmp_path)
    assert result.returncode == 2
    assert "condition '9'" in result.stderr
    assert "['0', '1', '2', '3', '4', '5']" in result.stderr


def test_generate_longer_than_bin_embedding_exits_2(spike_model, tmp_path):
    model_dir, _ = spike_model
    result = run_neuroseq("generate", "--model", model_dir, "--seconds", "10", "--out", tmp_path / "out")
    assert_one_line_error(result, "ask for at most 3.2 s")
    assert not (tmp_path / "out").exists()  # an invalid request leaves no output folder behind


def test_generate_out_is_a_file_exits_2(spike_model, tmp_path):
    model_dir, _ = spike_model
    (tmp_path / "notes.txt").write_text("keep me")
    result = run_neuroseq("generate", "--model", model_dir, "--n", "1", "--out", tmp_path / "notes.txt")
    assert_one_line_error(result, "is a file, not a folder")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_model_weights_readable_by_group(spike_model):
    model_dir, _ = spike_model
    umask = os.umask(0)
    os.umask(umask)
    assert (model_dir / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_generate_temperature_for_spikes_exits_2(spike_model, tmp_path):
    model_dir, _ = spike_model
    result = run_neuroseq("generate", "--model", model_dir, "--temperature", "0.5", "--out", tmp_path)
    assert result.returncode == 2
    assert "--temperature applies to audio and text" in result.stderr


def test_generate_from_classifier_dir_exits_2(tmp_path):
    classifier = tmp_path / "classifier"
    trained = run_neuroseq("train", "--epochs", "1", "--permutations", "0", "--out", classifier)
    assert trained.returncode == 0, trained.stderr
    result = run_neuroseq("generate", "--model", classifier, "--n", "1", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert str(classifier) in result.stderr
    assert "not a generative one" in result.stderr


def test_generate_missing_model_dir_exits_2(tmp_path):
    result = run_neuroseq("generate", "--model", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "nowhere" in result.stderr


def test_train_generate_wavenet_on_audio_then_wav(tmp_path):
    recordings = shared_folder("data", "fsdd", "recordings")
    folder = tmp_path / "audio"
    folder.mkdir()
    for digit in (3, 5):
        for take in (0, 1, 5, 6, 7, 8):
            name = f"{digit}_jackson_{take}.wav"
            (folder / name).symlink_to(recordings / name)
    model_dir = tmp_path / "wavenet"
    trained = run_neuroseq("train", folder, "--objective", "generate", "--model", "wavenet", "--epochs", "1",
                           "--out", model_dir)
    assert trained.returncode == 0, trained.stderr
    config = json.loads((model_dir / "config.json").read_text())
    assert config["kind"] == "generative-audio"
    assert config["labels"] == ["3", "5"]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["held_out_bits_per_token"] < 8.5

    result = run_neuroseq("generate", "--model", model_dir, "--n", "2", "--condition", "5", "--seconds", "0.05",
                          "--out", tmp_path / "wav")
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "wav").glob("*.wav"))
    assert [path.name for path in files] == ["sample000_5.wav", "sample001_5.wav"]
    waveform, rate = soundfile.read(files[0])
    assert rate == 8000
    assert len(waveform) == 400

    unknown = run_neuroseq("generate", "--model", model_dir, "--condition", "7", "--out", tmp_path / "wav")
    assert unknown.returncode == 2
    assert "condition '7'" in unknown.stderr


def test_train_generate_wavenet_on_text_exits_2(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("spikes " * 100, encoding="utf-8")
    result = run_neuroseq("train", text, "--objective", "generate", "--model", "wavenet", "--out", tmp_path / "m")
    assert result.returncode == 2
    assert "--model wavenet generates audio only" in result.stderr
    assert str(text) in result.stderr
