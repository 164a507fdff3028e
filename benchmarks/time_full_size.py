"""Benchmark: time per training step of the full-size runs in lessons 5 and 7, and an estimate of their total time.

Builds the same training and held-out windows from all of FSDD, and the same models, as the slow cells of
nbs/05_gpt.ipynb and nbs/07_wavenet.ipynb. The GPT has 6 layers of width 256 with 8 heads and trains on 512-token
windows with stride 256 in batches of 32. The WaveNet has 3 stacks of 10 layers with 64 residual and 128 skip
channels and trains on 4,096-sample windows with stride 2,048 in batches of 8. Both train for 4 epochs.

For each model the script counts the training steps per epoch from the same fastai loaders that `fit_gpt` builds,
which keep full batches only. It runs 2 warm-up steps, then times `--steps` real steps: forward, backward, and an
optimizer step of fastai's Adam with decoupled weight decay (AdamW), the optimizer of `fit_gpt`'s Learner. It also
times a few held-out batches without gradients, for the validation that fastai runs after each epoch and for the
final `mean_loss` pass. It prints the hardware, seconds per step, the steps, and an estimate of the time of the whole
cell: steps times seconds per step, plus the held-out passes at the measured time per window.

Uses CUDA when a GPU is visible, else the CPU with torch's default number of threads. NOTE: the timed loop runs
without fastai's Learner and its callbacks (loss recording, one-cycle schedule), so the estimate leaves out their
small cost per step. On a shared machine the seconds per step grow with the load, so the load average is printed.

    python benchmarks/time_full_size.py [--model gpt|wavenet|both] [--steps N] [--fsdd ../shared/data/fsdd]
"""
import argparse
import dataclasses
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from neuroseq.audio import read_fsdd_tokens
from neuroseq.core import default_device, set_seed
from neuroseq.gpt import GPT, GPTConfig, TokenWindows, token_cross_entropy
from neuroseq.wavenet import WaveNet, WaveNetConfig

DEFAULT_FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
WARMUP_STEPS = 2
HELD_OUT_BATCHES = 3  # timed held-out batches per batch size, after one warm-up batch


@dataclasses.dataclass
class FullSizeRun:
    "The settings of one notebook's slow cell."
    name: str
    build_model: Callable[[], torch.nn.Module]
    context: int
    stride: int
    batch_size: int  # fit_gpt's batch size, also the batch size of fastai's validation after each epoch
    mean_loss_batch_size: int  # the batch size of the cell's final mean_loss call
    epochs: int
    default_steps: int  # timed training steps when --steps is not given


RUNS = {
    "gpt": FullSizeRun(
        "GPT (lesson 5)",
        lambda: GPT(GPTConfig(vocab_size=256, n_layers=6, n_heads=8, d_model=256, context=512, n_classes=10)),
        context=512, stride=256, batch_size=32, mean_loss_batch_size=64, epochs=4, default_steps=10),
    "wavenet": FullSizeRun(
        "WaveNet (lesson 7)",
        lambda: WaveNet(WaveNetConfig(residual_channels=64, skip_channels=128, layers_per_stack=10, n_stacks=3,
                                      n_classes=10)),
        context=4096, stride=2048, batch_size=8, mean_loss_batch_size=4, epochs=4, default_steps=5),
}


def cpu_model() -> str:
    "Return the CPU's model name from /proc/cpuinfo, or platform.processor() where that file is missing."
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_hardware(device: str) -> None:
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__} "
          f"with {torch.get_num_threads()} CPU threads")
    if device.startswith("cuda"):
        print(f"device: {device} ({torch.cuda.get_device_name(device)})")
    else:
        print(f"device: {device}")


def print_load_average(when: str) -> None:
    one, five, fifteen = os.getloadavg()
    print(f"load average {when}: {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)")


def synchronized_time(device: str) -> float:
    "Return time.perf_counter() after the GPU has finished its queued work, so that a step is timed in full."
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()


def format_duration(seconds: float) -> str:
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{seconds:,.0f} s = {hours} h {minutes} min"


def time_training_steps(model, loader, optimizer, device: str, n_steps: int) -> list[float]:
    "Run WARMUP_STEPS then `n_steps` training steps on batches from `loader`; return the seconds of each timed step."
    model.train()
    batches = iter(loader)
    seconds = []
    for step in range(WARMUP_STEPS + n_steps):
        started = synchronized_time(device)
        inputs, labels, targets = next(batches)  # the fastai loader has moved them to `device`
        loss = token_cross_entropy(model(inputs, labels), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        finished = synchronized_time(device)
        if step >= WARMUP_STEPS:
            seconds.append(finished - started)
    return seconds


def time_held_out_window(model, dataset, batch_size: int, device: str) -> float:
    "Return the mean seconds per window of a gradient-free forward pass and loss over HELD_OUT_BATCHES batches."
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    batches = iter(loader)
    seconds, windows = 0.0, 0
    with torch.no_grad():
        for batch in range(1 + HELD_OUT_BATCHES):
            try:
                inputs, labels, targets = next(batches)
            except StopIteration:
                break
            started = synchronized_time(device)
            loss = token_cross_entropy(model(inputs.to(device), labels.to(device)), targets.to(device))
            float(loss)  # mean_loss also converts each batch loss to a Python float
            finished = synchronized_time(device)
            if batch > 0:  # batch 0 is the warm-up
                seconds += finished - started
                windows += len(targets)
    if windows == 0:
        raise SystemExit(f"the held-out set has {len(dataset)} windows, too few to time after a warm-up batch; "
                         "point --fsdd at a folder with all FSDD recordings")
    return seconds / windows


def time_run(run: FullSizeRun, fsdd: Path, n_steps: int, device: str) -> None:
    from fastai.data.core import DataLoaders
    from fastai.optimizer import Adam

    print(f"\n== {run.name} ==")
    started = time.perf_counter()
    train_tokens, train_digits = read_fsdd_tokens(fsdd, "train")
    test_tokens, test_digits = read_fsdd_tokens(fsdd, "test")
    train = TokenWindows(train_tokens, train_digits, context=run.context, stride=run.stride)
    held_out = TokenWindows(test_tokens, test_digits, context=run.context)
    print(f"read {len(train_tokens)} training and {len(test_tokens)} held-out recordings in "
          f"{time.perf_counter() - started:.1f} s: {len(train):,} training windows (context {run.context}, "
          f"stride {run.stride}), {len(held_out):,} held-out windows")

    # The same loaders as fit_gpt: shuffled full training batches, and every held-out window for validation.
    set_seed(0)
    batch_size = min(run.batch_size, len(train))
    loaders = DataLoaders.from_dsets(train, held_out, bs=batch_size, device=device, shuffle=True, drop_last=True)
    loaders.valid.shuffle, loaders.valid.drop_last = False, False
    steps_per_epoch = len(loaders.train)
    if steps_per_epoch != len(train) // batch_size:
        raise SystemExit(f"fastai's loader has {steps_per_epoch} batches per epoch, expected "
                         f"{len(train)} // {batch_size} = {len(train) // batch_size}; the step count is wrong")
    total_steps = steps_per_epoch * run.epochs
    if WARMUP_STEPS + n_steps > steps_per_epoch:
        raise SystemExit(f"--steps {n_steps} plus {WARMUP_STEPS} warm-up steps is more than the {steps_per_epoch} "
                         f"steps of one epoch of the {run.name}; pass a smaller --steps")

    torch.manual_seed(0)
    model = run.build_model().to(device)
    n_parameters = sum(parameter.numel() for parameter in model.parameters())
    optimizer = Adam(list(model.parameters()), lr=1e-3)  # fastai's defaults: wd=0.01, decoupled (AdamW)

    step_seconds = time_training_steps(model, loaders.train, optimizer, device, n_steps)
    seconds_per_step = sum(step_seconds) / len(step_seconds)
    print(f"{n_parameters:,} parameters, batch {batch_size}; {len(step_seconds)} timed training steps after "
          f"{WARMUP_STEPS} warm-up steps: {seconds_per_step:.3f} s per step "
          f"(fastest {min(step_seconds):.3f} s, slowest {max(step_seconds):.3f} s)")

    validation_seconds_per_window = time_held_out_window(model, held_out, batch_size, device)
    mean_loss_seconds_per_window = time_held_out_window(model, held_out, run.mean_loss_batch_size, device)
    print(f"held-out forward pass: {1000 * validation_seconds_per_window:.2f} ms per window at batch {batch_size}, "
          f"{1000 * mean_loss_seconds_per_window:.2f} ms per window at batch {run.mean_loss_batch_size}")

    training_seconds = total_steps * seconds_per_step
    # fastai validates on every held-out window after each epoch, and the cell then calls mean_loss once more.
    held_out_seconds = len(held_out) * (run.epochs * validation_seconds_per_window + mean_loss_seconds_per_window)
    print(f"steps: {steps_per_epoch:,} per epoch ({len(train):,} windows // batch {batch_size}), "
          f"{total_steps:,} for {run.epochs} epochs")
    print(f"ESTIMATE of the full cell on {device}: training {total_steps:,} steps x {seconds_per_step:.3f} s = "
          f"{format_duration(training_seconds)}; held-out passes ({run.epochs} validations + 1 mean_loss) "
          f"{format_duration(held_out_seconds)}; total {format_duration(training_seconds + held_out_seconds)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["gpt", "wavenet", "both"], default="both",
                        help="which full-size run to time (default: both)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps per model, after 2 warm-up steps (default: 10 for the GPT, "
                             "5 for the WaveNet, whose steps take longer)")
    parser.add_argument("--fsdd", type=Path, default=DEFAULT_FSDD,
                        help=f"FSDD folder that contains 'recordings' (default: {DEFAULT_FSDD})")
    args = parser.parse_args()
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if not args.fsdd.is_dir():
        parser.error(f"FSDD folder {args.fsdd} not found; pass --fsdd with the folder that contains 'recordings'")

    device = default_device()
    print_hardware(device)
    print_load_average("before")
    names = ["gpt", "wavenet"] if args.model == "both" else [args.model]
    for name in names:
        run = RUNS[name]
        time_run(run, args.fsdd, args.steps or run.default_steps, device)
    print()
    print_load_average("after")


if __name__ == "__main__":
    main()
