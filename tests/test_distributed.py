"""Distributed data parallel training: two CPU processes with the gloo backend end with identical weights."""
import socket

import numpy as np
import torch
import torch.distributed as distributed
import torch.multiprocessing as multiprocessing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_on_rank(rank, world_size, port, folder):
    from safetensors.torch import save_file

    from neuroseq.core import set_seed
    from neuroseq.train import fit_classifier
    from neuroseq.transformer import TransformerClassifier

    torch.set_num_threads(1)
    distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        rng = np.random.default_rng(0)
        labels = np.repeat([0, 1], 20)
        inputs = (rng.normal(0, 1, (40, 4, 3)) + labels[:, None, None]).astype(np.float32)
        set_seed(100 + rank)  # different initial weights per process: DDP must broadcast rank 0's
        model = TransformerClassifier(3, 2, d_model=8, n_heads=2, n_layers=1)
        learner = fit_classifier(model, inputs, labels, inputs[:8], labels[:8], epochs=2, batch_size=5,
                                 lr=1e-2, seed=0, device="cpu")
        weights = {name: value.contiguous() for name, value in learner.model.state_dict().items()}
        save_file(weights, f"{folder}/rank{rank}.safetensors")
        save_file({"n_batches": torch.tensor(len(learner.dls.train))}, f"{folder}/batches{rank}.safetensors")
    finally:
        distributed.destroy_process_group()


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    from safetensors.torch import load_file

    multiprocessing.spawn(_train_on_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    # each process trained on its half of the 40 trials: 20 trials in batches of 5
    assert int(load_file(tmp_path / "batches0.safetensors")["n_batches"]) == 4
