"""Benchmark: speed-up of WaveNet's fast (queue-based) generation over naive generation.

Times `neuroseq.wavenet.generate_wavenet` with `fast=True` and `fast=False` on the same random model (dilations
1 ... 512, a receptive field of 1,024 samples, 64 residual and 128 skip channels), checks that both return the same
samples, and prints both times and their ratio.

    python benchmarks/bench_wavenet.py [--samples 2048] [--stacks 1] [--threads 1]
"""
import argparse
import time

import torch

from neuroseq.wavenet import WaveNet, WaveNetConfig, generate_wavenet


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2048, help="samples to generate (default: 2048)")
    parser.add_argument("--stacks", type=int, default=1, help="stacks of 10 layers (default: 1, a receptive field of 1,024)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = WaveNetConfig(residual_channels=64, skip_channels=128, layers_per_stack=10, n_stacks=args.stacks)
    model = WaveNet(config).eval()
    prompt = torch.full((1, 1), 128)
    generate_wavenet(model, prompt, 8, temperature=0)  # warm-up

    timings = {}
    outputs = {}
    for fast in (True, False):
        started = time.perf_counter()
        outputs[fast] = generate_wavenet(model, prompt, args.samples, temperature=1.0, seed=0, fast=fast)
        timings[fast] = time.perf_counter() - started
    if not torch.equal(outputs[True], outputs[False]):
        raise SystemExit("fast and naive generation differ: the queues are wrong")
    print(f"receptive field {config.receptive_field} samples, {args.samples} samples, {args.threads} thread(s): "
          f"fast {timings[True]:.2f} s ({args.samples / timings[True]:.0f} samples/s), naive {timings[False]:.2f} s "
          f"({args.samples / timings[False]:.0f} samples/s); speed-up {timings[False] / timings[True]:.1f}x")


if __name__ == "__main__":
    main()
