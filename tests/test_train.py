"""The training core and the data layer on real arrays: splits, pseudo-populations, checkpoints, resume."""
import numpy as np
import pytest
import torch
from fastai.callback.core import Callback

from neuroseq.core import NeuroseqError, set_seed
from neuroseq.data import SessionTrials, group_split, pseudo_population, stratified_split
from neuroseq.train import fit_classifier, load_model, predict_logits, save_model
from neuroseq.transformer import TransformerClassifier

torch.set_num_threads(1)


def test_stratified_split_disjoint_and_complete():
    labels = np.repeat(["a", "b", "c", "d"], [7, 12, 30, 5])
    for seed in range(5):
        train, test = stratified_split(labels, test_fraction=0.25, seed=seed)
        assert len(np.intersect1d(train, test)) == 0
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
        assert set(labels[test]) == set(labels) == set(labels[train])


def test_stratified_split_rejects_singleton_class():
    with pytest.raises(NeuroseqError, match="'z': 1"):
        stratified_split(["a"] * 5 + ["z"])


def test_group_split_keeps_groups_whole():
    groups = np.repeat(["s1", "s2", "s3", "s4", "s5"], 6)
    train, test = group_split(groups, test_fraction=0.4, seed=2)
    assert not set(groups[train]) & set(groups[test])
    assert len(set(groups[test])) == 2


def _sessions(rng, n_trials=(40, 37), units=(3, 4)):
    sessions = []
    for index, (count, n_units) in enumerate(zip(n_trials, units)):
        labels = rng.permutation(np.resize(["car", "face", "hand", "kiwi"], count))
        counts = rng.poisson(2.0, size=(count, 5, n_units)).astype(float)
        counts[:, :, 0] = np.arange(count)[:, None]  # unit 0 stores the real trial index, to trace each pseudo-trial
        sessions.append(SessionTrials(counts, labels, session_id=f"s{index}"))
    return sessions


def test_pseudo_population_preserves_labels():
    sessions = _sessions(np.random.default_rng(0))
    population = pseudo_population(sessions, n_train_per_class=30, n_test_per_class=8, seed=3)
    offsets = [0, 3]  # first column of each session's units
    for inputs, codes in [(population.train_inputs, population.train_labels),
                          (population.test_inputs, population.test_labels)]:
        names = np.array(population.label_names)[codes]
        for session, offset in zip(sessions, offsets):
            real_trials = inputs[:, 0, offset].astype(int)
            assert (session.labels[real_trials] == names).all()


def test_pseudo_population_never_reuses_test_trials():
    sessions = _sessions(np.random.default_rng(1))
    population = pseudo_population(sessions, n_train_per_class=200, n_test_per_class=50, seed=0)
    for column, offset in enumerate([0, 3]):
        train_used = set(population.train_inputs[:, 0, offset].astype(int))
        test_used = set(population.test_inputs[:, 0, offset].astype(int))
        assert not train_used & test_used
        assert not set(population.train_pools[column]) & set(population.test_pools[column])


def test_pseudo_population_masks_position_transfer():
    sessions = _sessions(np.random.default_rng(2))
    train_masks = [np.arange(len(s.labels)) % 2 == 0 for s in sessions]  # "upper" trials
    test_masks = [~mask for mask in train_masks]  # "lower" trials
    population = pseudo_population(sessions, 20, 5, seed=0, train_masks=train_masks, test_masks=test_masks)
    for column in range(2):
        assert (population.train_trials[:, column] % 2 == 0).all()
        assert (population.test_trials[:, column] % 2 == 1).all()


def test_pseudo_population_rejects_different_bins():
    first, second = _sessions(np.random.default_rng(3))
    second.counts = second.counts[:, :3]
    with pytest.raises(NeuroseqError, match=r"\[3, 5\]"):
        pseudo_population([first, second])


def _data():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 24)
    inputs = rng.normal(0, 1, size=(72, 6, 5)).astype(np.float32)
    inputs[:, 2:4, 0] += labels[:, None] * 1.5  # the label shows in unit 0 during bins 2-3
    return inputs[::2], labels[::2], inputs[1::2], labels[1::2]


def _run(**kwargs):
    set_seed(0)
    model = TransformerClassifier(5, 3, d_model=16, n_heads=2, n_layers=1)
    train_x, train_y, test_x, test_y = _data()
    return fit_classifier(model, train_x, train_y, test_x, test_y, epochs=4, lr=5e-3, batch_size=8, seed=0,
                          device="cpu", **kwargs)


def test_checkpoint_round_trip_same_predictions(tmp_path):
    learner = _run()
    config = {"kind": "spikes", "labels": ["a", "b", "c"],
              "architecture": {"n_features": 5, "n_classes": 3, "d_model": 16, "n_heads": 2, "n_layers": 1}}
    save_model(tmp_path / "model", learner.model, config)
    reloaded, saved_config = load_model(tmp_path / "model", device="cpu")
    test_x = _data()[2]
    np.testing.assert_array_equal(predict_logits(reloaded, test_x), predict_logits(learner.model, test_x))
    assert saved_config["architecture"]["name"] == "transformer"
    assert saved_config["provenance"]["neuroseq_version"]


class _InterruptEpoch(Callback):
    def __init__(self, epoch):
        self.interrupt_at = epoch

    def before_batch(self):
        if self.epoch == self.interrupt_at and self.iter == 1:
            raise KeyboardInterrupt


def test_resume_equals_uninterrupted_run(tmp_path):
    uninterrupted = _run(checkpoint_path=tmp_path / "full.safetensors")
    checkpoint = tmp_path / "interrupted.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _run(checkpoint_path=checkpoint, callbacks=[_InterruptEpoch(2)])
    resumed = _run(checkpoint_path=checkpoint, resume=True)
    for name, value in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-6)
    assert [row[0] for row in resumed.history] == [0, 1, 2, 3]


def test_resume_without_checkpoint_is_clear(tmp_path):
    with pytest.raises(NeuroseqError, match="no checkpoint"):
        _run(checkpoint_path=tmp_path / "missing.safetensors", resume=True)


def test_load_model_never_unpickles(tmp_path):
    learner = _run()
    save_model(tmp_path, learner.model, {"architecture": {"n_features": 5, "n_classes": 3, "d_model": 16,
                                                          "n_heads": 2, "n_layers": 1}})
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")  # a pickle header
    with pytest.raises(Exception) as error:
        load_model(tmp_path)
    assert "pickle" not in type(error.value).__module__


def test_early_stopping_stops_before_last_epoch():
    train_x, train_y, test_x, test_y = _data()
    set_seed(0)
    model = TransformerClassifier(5, 3, d_model=16, n_heads=2, n_layers=1)
    shuffled = np.random.default_rng(0).permutation(train_y)  # nothing to learn: the validation loss cannot keep falling
    learner = fit_classifier(model, train_x, shuffled, test_x, test_y, epochs=40, lr=5e-2, batch_size=8, seed=0,
                             device="cpu", early_stopping_patience=2)
    assert len(learner.recorder.values) < 40
