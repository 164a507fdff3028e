"""`neuroseq train` and `neuroseq evaluate` run as a user runs them: real NWB files, a few real epochs."""
import json

import pytest

from conftest import DATA, assert_one_line_error, run_neuroseq, shared_folder
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


def _assert_evaluate_reproduces_metrics(out):
    "Run `neuroseq evaluate` on the model's own held-out trials and check that it matches metrics.json."
    metrics = json.loads((out / "metrics.json").read_text())
    result = run_neuroseq("evaluate", "--model", out, "--out", out / "evaluation")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert evaluation["accuracy"] == metrics["accuracy"]
    assert evaluation["n_test"] == metrics["n_test"]
    assert f"accuracy {metrics['accuracy']:.3f}" in result.stdout


def test_evaluate_reproduces_test_accuracy(trained_synthetic):
    out, _ = trained_synthetic
    _assert_evaluate_reproduces_metrics(out)


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
    _assert_evaluate_reproduces_metrics(out)


# Small synthetic sessions with an LFP ElectricalSeries named "lfp": 3 conditions x 10 trials, 8 units, 4 channels
# at 200 Hz. Files that differ only in `trial_noise` share the seed, so they share their units, channels and
# condition states, and a model trained on some of them can be tested on another.
SMALL_SESSION = dict(n_units=8, n_conditions=3, trials_per_condition=10, lfp_channels=4, lfp_rate_hz=200.0)
SMALL_TRIALS = 30
GROUP_NOISES = (0.4, 0.5, 0.6)


def _small_session(folder=None, **changes):
    return synthetic_session_path(SyntheticConfig(**{**SMALL_SESSION, **changes}), folder=folder)


@pytest.fixture(scope="module")
def group_folder(tmp_path_factory):
    "Return a folder of three small sessions with the same units and channels, for `--split group`."
    folder = tmp_path_factory.mktemp("group_sessions")
    for noise in GROUP_NOISES:
        _small_session(folder, trial_noise=noise)
    return folder


def _assert_whole_files_held_out(config, metrics, trials_per_file):
    "Check that every file is entirely in the test set or entirely out of it, as config.json records."
    provenance = config["provenance"]
    test_groups = provenance["test_groups"]
    assert test_groups, "no file was held out"
    assert set(test_groups) < set(provenance["files"]), "every file was held out"
    for file in provenance["files"]:
        test_trials = provenance["test_trials"][file]
        if file in test_groups:
            assert sorted(test_trials) == list(range(trials_per_file[file])), file
        else:
            assert test_trials == [], file
    n_test = sum(trials_per_file[file] for file in test_groups)
    assert metrics["n_test"] == n_test
    assert metrics["n_train"] == sum(trials_per_file.values()) - n_test


@pytest.fixture(scope="module")
def trained_series(tmp_path_factory):
    out = tmp_path_factory.mktemp("series_model")
    result = run_neuroseq("train", _small_session(), "--series", "lfp", "--decimate", "2", "--label", "condition",
                          "--epochs", "2", "--permutations", "5", "--out", out)
    return out, result


def test_train_series_records_settings(trained_series):
    out, result = trained_series
    assert result.returncode == 0, result.stderr
    assert EXPECTED_FILES <= {path.name for path in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "series"
    preprocessing = config["preprocessing"]
    assert preprocessing["source"] == "series"
    assert preprocessing["series"] == "lfp"
    assert preprocessing["decimate"] == 2
    assert preprocessing["n_time"] == 100  # a 1 s window at 200 Hz, every 2nd sample kept
    assert preprocessing["n_features"] == 4
    assert list(preprocessing["units"].values()) == [[0, 1, 2, 3]]  # the channels of the series
    assert preprocessing["transform"] == "none"  # continuous windows are z-scored, not square-rooted
    assert config["architecture"]["adapter"] == "channel"
    assert config["provenance"]["split"] == "trials"


def test_train_series_metrics_are_sensible(trained_series):
    out, _ = trained_series
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == SMALL_TRIALS
    assert metrics["n_test"] == 6  # 0.2 of each condition's 10 trials
    assert metrics["labels"] == ["0", "1", "2"]
    assert metrics["chance"] == pytest.approx(1 / 3)
    assert 0 <= metrics["accuracy"] <= 1
    assert 0 <= metrics["balanced_accuracy"] <= 1
    assert metrics["baseline_accuracy"] > metrics["chance"] + 0.3  # the LFP mixes the latents that set the condition
    assert 0 < metrics["permutation_p"] <= 1
    assert 0 < metrics["model_permutation_p"] <= 1
    assert metrics["summed_counts_baseline_accuracy"] is None  # summed counts are only scored for spikes
    assert metrics["split"] == "trials"
    assert len(metrics["history"]) == 2


def test_evaluate_series_rebuilds_preprocessing(trained_series):
    out, _ = trained_series
    _assert_evaluate_reproduces_metrics(out)

    other_session = _small_session(trial_noise=0.45)  # same channels, not used for training
    result = run_neuroseq("evaluate", "--model", out, other_session, "--out", out / "other")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "other" / "evaluation.json").read_text())["n_test"] == SMALL_TRIALS


@pytest.fixture(scope="module")
def trained_group(tmp_path_factory, group_folder):
    out = tmp_path_factory.mktemp("group_model")
    result = run_neuroseq("train", group_folder, "--split", "group", "--label", "condition", "--epochs", "2",
                          "--permutations", "5", "--out", out)
    return out, result


def test_train_group_split_records_settings(trained_group):
    out, result = trained_group
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "spikes"
    assert config["provenance"]["split"] == "group"
    assert len(config["provenance"]["files"]) == len(GROUP_NOISES)
    assert len(config["provenance"]["test_groups"]) == 1  # round(0.2 * 3 files)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "group"
    assert metrics["chance"] == pytest.approx(1 / 3)
    assert 0 <= metrics["accuracy"] <= 1
    assert 0 < metrics["permutation_p"] <= 1
    # The files share their condition states, so the logistic regression decodes the held-out file too.
    assert metrics["baseline_accuracy"] > metrics["chance"] + 0.3
    assert 0 <= metrics["summed_counts_baseline_accuracy"] <= 1


def test_train_group_split_holds_out_whole_files(trained_group):
    out, _ = trained_group
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    trials_per_file = {file: SMALL_TRIALS for file in config["provenance"]["files"]}
    _assert_whole_files_held_out(config, metrics, trials_per_file)


def test_evaluate_group_split_scores_held_out_file(trained_group):
    out, _ = trained_group
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    _assert_evaluate_reproduces_metrics(out)

    (held_out,) = config["provenance"]["test_groups"]
    result = run_neuroseq("evaluate", "--model", out, held_out, "--out", out / "held_out")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "held_out" / "evaluation.json").read_text())["accuracy"] == metrics["accuracy"]


def test_evaluate_group_split_training_file_exits_2(trained_group):
    out, _ = trained_group
    config = json.loads((out / "config.json").read_text())
    training_file = next(file for file in config["provenance"]["files"] if file not in config["provenance"]["test_groups"])
    result = run_neuroseq("evaluate", "--model", out, training_file)
    assert_one_line_error(result, "every trial", "was used to train this model", "none is left to score")


def test_train_series_group_split_and_evaluate(tmp_path, group_folder):
    out = tmp_path / "series_group_model"
    result = run_neuroseq("train", group_folder, "--series", "lfp", "--split", "group", "--label", "condition",
                          "--model", "linear", "--epochs", "1", "--permutations", "0", "--out", out)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["kind"] == "series"
    assert config["preprocessing"]["series"] == "lfp"
    assert config["provenance"]["split"] == "group"
    trials_per_file = {file: SMALL_TRIALS for file in config["provenance"]["files"]}
    _assert_whole_files_held_out(config, metrics, trials_per_file)
    _assert_evaluate_reproduces_metrics(out)


def test_train_group_split_real_sessions(tmp_path):
    folder = shared_folder("data", "zhang_desimone_it")
    files = [folder / "sub-M_ses-1001.nwb", folder / "sub-M_ses-1002.nwb"]  # both have 4 units
    out = tmp_path / "group"
    result = run_neuroseq("train", *files, "--split", "group", "--label", "stimulus_ID", "--align",
                          "stimulus_onset_time", "--window", "0.1", "0.4", "--bin-ms", "100", "--model", "linear",
                          "--epochs", "1", "--permutations", "5", "--out", out)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["provenance"]["split"] == "group"
    assert metrics["labels"] == ["car", "couch", "face", "flower", "guitar", "hand", "kiwi"]
    assert metrics["chance"] == pytest.approx(1 / 7, abs=0.01)
    trials_per_file = {file: 420 for file in config["provenance"]["files"]}  # sessions 1001 and 1002 have 420 trials each
    _assert_whole_files_held_out(config, metrics, trials_per_file)
    _assert_evaluate_reproduces_metrics(out)


def _bad_input_files(kind):
    "Return the NWB files of a bad-input case: none (the built-in session), one, or two that do not match."
    if kind == "none":
        return []
    if kind == "one":
        return [_small_session()]
    if kind == "different units":
        return [_small_session(), _small_session(n_units=6)]
    if kind == "different channels":
        return [_small_session(), _small_session(lfp_channels=2)]
    raise ValueError(f"unknown case {kind!r}")


BAD_SERIES_AND_GROUP = [
    ("one", ["--series", "no_such_series"], ["'no_such_series'", "'lfp'"]),
    ("one", ["--series", "lfp", "--window", "100", "101"], ["no trial window", "fully covered", "lfp"]),
    ("one", ["--series", "lfp", "--window", "0", "0.001"], ["contains no sample of lfp", "200 Hz"]),
    ("none", ["--split", "group"], ["--split group", "at least two NWB files", "got 1"]),
    ("one", ["--split", "group"], ["--split group", "at least two NWB files", "got 1"]),
    ("different units", ["--split", "group"], ["--split group", "same units", "has 6"]),
    ("different channels", ["--split", "group", "--series", "lfp"], ["--split group", "same channels", "has 2"]),
    ("none", ["--split", "group", "--pool-sessions"], ["--split group", "--pool-sessions"]),
]


@pytest.mark.parametrize("files, options, fragments", BAD_SERIES_AND_GROUP,
                         ids=[f"{files}: {' '.join(options)}" for files, options, _ in BAD_SERIES_AND_GROUP])
def test_train_bad_series_or_group_exits_2(tmp_path, files, options, fragments):
    label = [] if files == "none" else ["--label", "condition"]
    result = run_neuroseq("train", *_bad_input_files(files), *label, *options, "--model", "linear", "--epochs", "1",
                          "--permutations", "0", "--out", tmp_path / "model")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "model" / "metrics.json").exists()


def test_decimate_short_window_exits_2(tmp_path):
    result = run_neuroseq("train", _small_session(), "--label", "condition", "--series", "lfp", "--window", "0",
                          "0.05", "--decimate", "2", "--model", "linear", "--epochs", "1", "--permutations", "0",
                          "--out", tmp_path / "model")
    assert_one_line_error(result, "--decimate 2")


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


def test_train_table_alias_of_trials(tmp_path):
    nwb_file = shared_folder("data", "dandi000207") / "sub-4_ses-4_ecephys+image.nwb"
    out = tmp_path / "model"
    result = run_neuroseq("train", nwb_file, "--table", "recognition_table", "--label", "stimuli_type",
                          "--model", "linear", "--epochs", "1", "--permutations", "0", "--out", out)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["preprocessing"]["table"] == "recognition_table"
