"""`neuroseq train` and `neuroseq evaluate` run as a user runs them: real NWB files, a few real epochs."""
import json

import pytest

from conftest import DATA, run_neuroseq, shared_folder
from neuroseq.synthetic import SyntheticConfig, synthetic_session_path

QUICK = ["--epochs", "3", "--permutations", "5"]
EXPECTED_FILES = {"model.safetensors", "config.json", "metrics.json", "confusion.png", "training.png"}


@pytest.fixture(scope="module")
def trained_synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_model")
    result = run_neuroseq("train", *QUICK, "--out", out)
    return out, result


def test_train_without_path_writes_every_file(trained_synthetic):
    out, result = trained_synthetic
    assert result.returncode == 0, result.stderr
    assert EXPECTED_FILES <= {path.name for path in out.iterdir()}
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    assert not (out / "last_epoch.safetensors").exists(), "the checkpoint of a finished run should be removed"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ["accuracy", "balanced_accuracy", "chance", "baseline_accuracy", "permutation_p", "n_train",
                "n_test", "labels"]:
        assert key in metrics, key
    assert metrics["n_train"] + metrics["n_test"] == 120  # the synthetic session's 6 x 20 trials
    assert metrics["labels"] == ["0", "1", "2", "3", "4", "5"]
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "spikes"
    assert config["architecture"]["name"] == "transformer"
    assert config["preprocessing"]["label"] == "condition"


def test_train_records_held_out_trials(trained_synthetic):
    out, _ = trained_synthetic
    config = json.loads((out / "config.json").read_text())
    (test_trials,) = config["provenance"]["test_trials"].values()
    assert len(test_trials) == 24
    assert len(set(test_trials)) == 24


def test_evaluate_reproduces_test_accuracy(trained_synthetic):
    out, _ = trained_synthetic
    metrics = json.loads((out / "metrics.json").read_text())
    result = run_neuroseq("evaluate", "--model", out, "--out", out / "evaluation")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == metrics["accuracy"]
    assert evaluation["n_test"] == metrics["n_test"]
    assert f"accuracy {metrics['accuracy']:.3f}" in result.stdout


def test_evaluate_on_training_file_scores_only_held_out(trained_synthetic):
    out, _ = trained_synthetic
    config = json.loads((out / "config.json").read_text())
    result = run_neuroseq("evaluate", "--model", out, config["provenance"]["files"][0], "--out", out / "again")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "again" / "evaluation.json").read_text())["n_test"] == 24


def test_train_pooled_sessions_and_evaluate(tmp_path):
    folder = shared_folder("data", "zhang_desimone_it")
    files = sorted(folder.glob("*.nwb"))[:3]
    out = tmp_path / "pooled"
    result = run_neuroseq("train", *files, "--pool-sessions", "--label", "stimulus_ID", "--align",
                          "stimulus_onset_time", "--window", "0.1", "0.4", "--bin-ms", "100", "--pseudo-trials", "40",
                          "--model", "linear", *QUICK, "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "pseudo-population"
    assert metrics["n_train"] == 7 * 40
    assert metrics["n_test"] == 7 * 10
    config = json.loads((out / "config.json").read_text())
    assert sum(len(units) for units in config["preprocessing"]["units"].values()) == 4 + 4 + 6
    evaluation = run_neuroseq("evaluate", "--model", out)
    assert evaluation.returncode == 0, evaluation.stderr
    assert f"accuracy {metrics['accuracy']:.3f}" in evaluation.stdout


def _different_units_file():
    return synthetic_session_path(SyntheticConfig(n_units=12, trials_per_condition=6))


BAD_OPTIONS = [
    (["--label", "no_such_column"], "'no_such_column'"),
    (["--trials", "no_such_table"], "no_such_table"),
    (["--window", "20", "30"], "20"),
    (["--window", "1", "0"], "START_S < STOP_S"),
    (["--label", "start_time"], "too few trials per class"),
    (["--min-trials-per-class", "50"], "too few trials per class"),
    (["--epochs", "0"], "--epochs 0"),
    (["--bin-ms", "0"], "--bin-ms 0"),
    (["--test-fraction", "1.5"], "--test-fraction 1.5"),
    (["--model", "cnn"], "--model cnn"),
    (["--model", "bogus"], "bogus"),
    (["--series", "lfp", "--pool-sessions"], "--pool-sessions"),
    (["--split", "take"], "--split 'take'"),
    (["--threads", "0"], "--threads 0"),
]


@pytest.mark.parametrize("options, named", BAD_OPTIONS, ids=[" ".join(options) for options, _ in BAD_OPTIONS])
def test_train_bad_option_exits_2(tmp_path, options, named):
    result = run_neuroseq("train", *QUICK, *options, "--out", tmp_path / "model")
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model" / "metrics.json").exists()


def test_train_one_class_exits_2(tmp_path):
    one_condition = synthetic_session_path(SyntheticConfig(n_conditions=1, trials_per_condition=10))
    result = run_neuroseq("train", one_condition, "--label", "condition", *QUICK, "--out", tmp_path / "model")
    assert result.returncode == 2
    assert "only one class" in result.stderr


def test_train_different_units_need_pool_sessions(tmp_path):
    result = run_neuroseq("train", synthetic_session_path(), _different_units_file(), "--label", "condition",
                          *QUICK, "--out", tmp_path / "model")
    assert result.returncode == 2
    assert "--pool-sessions" in result.stderr
    assert "different units" in result.stderr


def test_train_without_label_for_path_exits_2(tmp_path):
    result = run_neuroseq("train", synthetic_session_path(), *QUICK, "--out", tmp_path / "model")
    assert result.returncode == 2
    assert "--label" in result.stderr


def test_evaluate_missing_model_dir_exits_2(tmp_path):
    result = run_neuroseq("evaluate", "--model", tmp_path / "nowhere")
    assert result.returncode == 2
    assert "nowhere" in result.stderr


def test_evaluate_folder_without_model_files_exits_2(tmp_path):
    result = run_neuroseq("evaluate", "--model", tmp_path)
    assert result.returncode == 2
    assert "config.json" in result.stderr


def test_evaluate_other_units_exits_2(trained_synthetic, tmp_path):
    out, _ = trained_synthetic
    result = run_neuroseq("evaluate", "--model", out, _different_units_file())
    assert result.returncode == 2
    assert "12 units" in result.stderr


def test_generate_objective_without_module_is_clear(tmp_path):
    import importlib.util

    if importlib.util.find_spec("neuroseq.cli_generate") is not None:
        pytest.skip("neuroseq.cli_generate exists; its own tests cover --objective generate")
    result = run_neuroseq("train", "--objective", "generate", "--out", tmp_path / "model")
    assert result.returncode == 2
    assert "neuroseq.cli_generate" in result.stderr


def test_train_resume_after_ctrl_c_matches_full_run(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from conftest import REPO

    options = ["train", "--epochs", "30", "--permutations", "0", "--seed", "3"]
    full = run_neuroseq(*options, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr

    interrupted_dir = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "neuroseq", *options, "--out", str(interrupted_dir)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = interrupted_dir / "last_epoch.safetensors"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before it could be interrupted")
    assert process.returncode == 130, stderr
    assert checkpoint.exists()
    assert not (interrupted_dir / "metrics.json").exists()

    resumed = run_neuroseq(*options, "--out", interrupted_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    full_weights = load_file(tmp_path / "full" / "model.safetensors")
    resumed_weights = load_file(interrupted_dir / "model.safetensors")
    for name, value in full_weights.items():
        assert (resumed_weights[name] - value).abs().max() < 1e-5, name
    full_metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed_metrics = json.loads((interrupted_dir / "metrics.json").read_text())
    assert resumed_metrics["accuracy"] == full_metrics["accuracy"]
    assert len(resumed_metrics["history"]) == 30
