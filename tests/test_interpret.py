"""Tests of neuroseq.interpret and `neuroseq interpret` on small real models trained for a few steps."""
import json

import numpy as np
import pytest
import torch

from conftest import run_neuroseq
from neuroseq.gpt import GPT, GPTConfig
from neuroseq.interpret import (ablate_heads, ablate_inputs, align_latents, anova_selectivity, attention_rollout,
                                attribute, capture_activations, classifier_attention, count_hooks, gpt_attention,
                                half_max_latency, integrated_gradients_completeness, mean_baseline, probe_r2,
                                target_activation, visualize_feature)
from neuroseq.transformer import TransformerClassifier


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "Small models train fastest on one thread, and the machine is shared."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    "A transformer trained for 60 Adam steps on 3 classes whose units fire in class-specific time bins."
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(40)
    inputs = torch.randn(120, 8, 6, generator=generator)
    for code in range(3):
        inputs[labels == code, 2 * code:2 * code + 2, code] += 2.0  # class c: unit c is active in bins 2c, 2c + 1
    torch.manual_seed(0)
    model = TransformerClassifier(n_features=6, n_classes=3, d_model=16, n_heads=2, n_layers=2, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), inputs.numpy(), labels.numpy()


def test_model_learned_the_task(trained):
    model, inputs, labels = trained
    with torch.no_grad():
        accuracy = (model(torch.as_tensor(inputs)).argmax(1).numpy() == labels).mean()
    assert accuracy > 0.9


def test_capture_removes_hooks(trained):
    model, inputs, _ = trained
    with capture_activations(model, ["blocks.0", "blocks.1", "adapter"]) as cache:
        assert count_hooks(model) == 3
        model(torch.as_tensor(inputs[:5]))
    assert count_hooks(model) == 0
    assert cache["blocks.1"].shape == (5, 9, 16)  # classification token + 8 time bins
    assert cache["adapter"].shape == (5, 8, 16)


def test_capture_removes_hooks_after_exception(trained):
    model, _, _ = trained
    with pytest.raises(RuntimeError, match="inside the block"):
        with capture_activations(model, ["blocks.0"], inputs=True):
            raise RuntimeError("inside the block")
    assert count_hooks(model) == 0
    with pytest.raises(ValueError, match="the model expects 6"):
        with ablate_heads(model, [(0, 1)]), ablate_inputs(model, units=[2]):
            model(torch.zeros(2, 8, 5))  # 5 units instead of 6
    assert count_hooks(model) == 0


def test_capture_unknown_layer(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="no submodule 'blocks.9'"):
        with capture_activations(model, ["blocks.0", "blocks.9"]):
            pass
    assert count_hooks(model) == 0


def test_integrated_gradients_completeness(trained):
    model, inputs, labels = trained
    double = TransformerClassifier(n_features=6, n_classes=3, d_model=16, n_heads=2, n_layers=2, dropout=0.0)
    double.load_state_dict(model.state_dict())
    double = double.double().eval()
    errors = {}
    for n_steps in (32, 256):
        result = integrated_gradients_completeness(double, inputs[:10], labels[:10], mean_baseline(inputs),
                                                   n_steps=n_steps, device="cpu")
        errors[n_steps] = result["max_abs_error"]
    differences = np.abs(result["output_differences"])
    assert differences.max() > 1.0  # a real difference to explain
    # The quadrature error shrinks with the number of points; with 256 Gauss-Legendre points it is below 1e-6.
    assert errors[256] < 1e-6 * differences.max()
    assert errors[256] < errors[32]


def test_integrated_gradients_need_a_baseline(trained):
    model, inputs, _ = trained
    with pytest.raises(ValueError, match="explicit baseline"):
        attribute(model, inputs[:2], 0, "integrated_gradients")


def test_attributions_find_the_informative_cells(trained):
    model, inputs, labels = trained
    attributions = attribute(model, inputs, labels, "integrated_gradients", mean_baseline(inputs), device="cpu")
    assert attributions.shape == inputs.shape
    # Classes 1 and 2 are recognised by their own active cells. Class 0 can be recognised by the absence of the
    # other two patterns, so its own cells need not dominate, and it is not checked.
    for code in (1, 2):
        signed_map = attributions[labels == code].mean(axis=0)  # (bins, units)
        informative = signed_map[2 * code:2 * code + 2, code].mean()
        assert informative > 5 * np.median(np.abs(signed_map)), code


def test_ablating_nothing_changes_nothing(trained):
    model, inputs, _ = trained
    batch = torch.as_tensor(inputs)
    with torch.no_grad():
        plain = model(batch)
        with ablate_inputs(model, units=[]), ablate_inputs(model, time_bins=[], mode="mean",
                                                           mean_input=mean_baseline(inputs)), ablate_heads(model, []):
            ablated = model(batch)
    assert torch.equal(plain, ablated)
    assert count_hooks(model) == 0


def test_ablating_the_informative_unit_hurts(trained):
    model, inputs, labels = trained
    batch = torch.as_tensor(inputs)
    with torch.no_grad(), ablate_inputs(model, units=[1], mode="mean", mean_input=mean_baseline(inputs)):
        predicted = model(batch).argmax(1).numpy()
    assert (predicted[labels == 1] == 1).mean() < 0.5
    assert (predicted[labels == 2] == 2).mean() > 0.8


def test_zero_ablating_all_heads_equals_zero_attention(trained):
    model, inputs, _ = trained
    batch = torch.as_tensor(inputs[:6])
    with torch.no_grad():
        with ablate_heads(model, [(0, 0), (0, 1)]):
            ablated = model(batch)
        handle = model.blocks[0].attention.out.register_forward_pre_hook(lambda module, args: (torch.zeros_like(args[0]),))
        try:
            expected = model(batch)
        finally:
            handle.remove()
    torch.testing.assert_close(ablated, expected)


def test_feature_visualisation_beats_real_inputs(trained):
    model, inputs, _ = trained
    low, high = inputs.min(axis=0), inputs.max(axis=0)
    for target in (1, ("blocks.1", 3)):
        visualised = visualize_feature(model, target, mean_baseline(inputs), bounds=(low, high),
                                       device="cpu")
        with torch.no_grad():
            real = target_activation(model, torch.as_tensor(inputs), target).numpy()
        assert visualised.activation > real.max(), (target, visualised.activation, real.max())
        assert (visualised.inputs >= low - 1e-6).all()
        assert (visualised.inputs <= high + 1e-6).all()
    assert count_hooks(model) == 0


def test_attention_rollout_rows_sum_to_one(trained):
    model, inputs, _ = trained
    attention = classifier_attention(model, inputs[:4])
    assert attention.shape == (2, 4, 2, 9, 9)
    torch.testing.assert_close(attention_rollout(attention).sum(-1), torch.ones(4, 9))


def test_gpt_attention_reproduces_the_layer():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, n_layers=2, n_heads=2, d_model=16, context=5)).eval()
    tokens = torch.randint(0, 13, (2, 7))
    weights = gpt_attention(model, tokens)
    assert weights.shape == (2, 2, 2, 7, 7)
    assert (weights[..., 6, :2] == 0).all()  # outside the 5-token window
    with capture_activations(model, ["decoder.blocks.1.attention.qkv", "decoder.blocks.1.attention"]) as cache:
        model(tokens)
    values = cache["decoder.blocks.1.attention.qkv"].split(16, dim=2)[2].reshape(2, 7, 2, 8).transpose(1, 2)
    mixed = (weights[1] @ values).transpose(1, 2).reshape(2, 7, 16)
    torch.testing.assert_close(model.decoder.blocks[1].attention.projection(mixed), cache["decoder.blocks.1.attention"])


def test_align_latents_averages_samples_in_each_bin():
    truth = {"latents": np.arange(20, dtype=float)[:, None].repeat(3, axis=1), "times_s": np.arange(20) * 0.01,
             "bin_s": 0.01}
    aligned = align_latents(truth, np.array([0.0, 0.1]), np.array([0.0, 0.03, 0.06]))
    assert aligned.shape == (2, 2, 3)
    np.testing.assert_allclose(aligned[:, :, 0], [[1.0, 4.0], [11.0, 14.0]])
    assert probe_r2(aligned.repeat(5, axis=0), aligned.repeat(5, axis=0))["r2"] == pytest.approx(1.0)


def test_anova_and_latency_exact_cases():
    labels = np.repeat(["a", "b"], 4)
    counts = np.array([[1.0, 3.0], [1.0, 3.0], [2.0, 3.0], [2.0, 3.0], [5.0, 3.0], [5.0, 3.0], [6.0, 3.0], [6.0, 3.0]])
    result = anova_selectivity(counts, labels)
    # group means 1.5 and 5.5, grand mean 3.5: between = 8 * 4 / 1, within = 8 * 0.25 / 6
    assert result["f"][0] == pytest.approx(32 / (2 / 6))
    assert (result["f"][1], result["p"][1]) == (0.0, 1.0)
    assert half_max_latency([1, 1, 1, 2, 3], [-0.05, -0.025, 0.0, 0.025, 0.05]) == 0.025
    assert np.isnan(half_max_latency([3, 3, 1, 1], [-0.05, -0.025, 0.0, 0.025]))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    "A transformer trained by `neuroseq train` on the synthetic session for 3 epochs."
    folder = tmp_path_factory.mktemp("interpret") / "model"
    result = run_neuroseq("train", "--epochs", "3", "--permutations", "0", "--out", folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_cli_interpret_synthetic(model_dir, tmp_path):
    out = tmp_path / "interpret"
    result = run_neuroseq("interpret", "--model", model_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Spearman rho" in result.stdout
    written = json.loads((out / "interpret.json").read_text())
    assert written["has_true_latents"]
    for layer in ("input", "adapter", "blocks.0", "blocks.1"):
        assert 0 < written["probes"][layer]["r2"] <= 1, layer
    assert written["attribution"]["unit_rank_correlation"]["n"] == 40
    assert len(written["ablation"]["heads"]) == 8  # 2 layers of 4 heads
    assert len(written["ablation"]["time_windows"]) == 20
    for name in ("attribution.png", "selectivity.png", "attention.png", "ablation.png", "probes.png"):
        assert (out / name).stat().st_size > 0, name


def test_cli_interpret_spike_generator(tmp_path):
    model_dir = tmp_path / "gpt"
    trained = run_neuroseq("train", "--objective", "generate", "--model", "gpt", "--epochs", "3", "--out", model_dir)
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "interpret"
    result = run_neuroseq("interpret", "--model", model_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    written = json.loads((out / "interpret.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # the rebuilt split gives the held-out score that training reported
    assert written["held_out_bits_per_spike"] == pytest.approx(metrics["held_out_bits_per_spike"], rel=1e-6)
    assert len(written["head_ablation"]["zero"]) == 8
    assert 0 < written["probes"]["decoder.blocks.1"]["r2"] <= 1
    for name in ("attention.png", "ablation.png", "probes.png"):
        assert (out / name).stat().st_size > 0, name


def test_cli_missing_model_dir(tmp_path):
    result = run_neuroseq("interpret", "--model", tmp_path / "nothing", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "model directory" in result.stderr
    assert "not found" in result.stderr


@pytest.mark.parametrize("kind, architecture, message", [
    ("audio", "audio-resnet", "audio classifier"),
    ("generative-audio", "gpt", "other generative models are not supported"),
])
def test_cli_rejects_unsupported_model(tmp_path, kind, architecture, message):
    model_dir = tmp_path / kind
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"kind": kind, "architecture": {"name": architecture}}))
    (model_dir / "model.safetensors").write_bytes(b"")
    result = run_neuroseq("interpret", "--model", model_dir, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out" / "interpret.json").exists()


def test_cli_rejects_bad_steps(model_dir, tmp_path):
    result = run_neuroseq("interpret", "--model", model_dir, "--steps", "1", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "--steps 1 must be at least 2" in result.stderr
