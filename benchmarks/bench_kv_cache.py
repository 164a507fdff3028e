"""Benchmark: speed-up of the GPT's key/value cache when generating 1,024 tokens.

Times `neuroseq.gpt.generate` with the cache and with a full recomputation at every step on the same random model
(4 layers, width 128, 4 heads, attention window 1,024 tokens, 256-token vocabulary), checks that both return the
same tokens, and prints both times and their ratio.

    python benchmarks/bench_kv_cache.py [--tokens 1024] [--threads 1]
"""
import argparse
import time

import torch

from neuroseq.gpt import GPT, GPTConfig, generate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1024, help="tokens to generate (default: 1024)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=256, n_layers=4, n_heads=4, d_model=128, context=1024)
    model = GPT(config).eval()
    prompt = torch.full((1, 1), 128)
    generate(model, prompt, 8, temperature=0)  # warm-up

    timings = {}
    outputs = {}
    for use_cache in (True, False):
        started = time.perf_counter()
        outputs[use_cache] = generate(model, prompt, args.tokens, temperature=0, use_cache=use_cache)
        timings[use_cache] = time.perf_counter() - started
    if not torch.equal(outputs[True], outputs[False]):
        raise SystemExit("the cached and recomputed generations differ: the cache is wrong")
    print(f"{args.tokens} tokens, {args.threads} thread(s): with cache {timings[True]:.2f} s "
          f"({args.tokens / timings[True]:.0f} tokens/s), recomputing {timings[False]:.2f} s "
          f"({args.tokens / timings[False]:.0f} tokens/s); speed-up {timings[False] / timings[True]:.1f}x")


if __name__ == "__main__":
    main()
