"""Generation speed of block diffusion with and without the KV cache (issue 26, item 5).

What it measures, on the CPU: tokens per second of :func:`gdds.block_sampling.sample_blocks` generating
``--length`` tokens (1,024) for ``--num`` sequences, block sizes ``--block-sizes`` (4, 16, 64), ``--steps``
reverse steps per block (4), with the cache (one ``extend`` per block, each step a pass over one block
attending to the cache) and without it (each step the full forward pass over the clean prefix and the
block). The network is the ``tiny`` preset (randomly initialised: speed does not depend on training) with
``--length`` positions and a vocabulary of 89 tokens (the decisive comparison's characters) under the mask
kernel. Both paths draw the same samples for the same seed (``tests/inference/test_block_sampling.py``);
the report says whether they did here. ``--device cuda`` measures the same on a GPU
(``benchmarks/gpu_suite.sh``), the network in float32 as ``Method.generate`` hands it to the block sampler,
every timer waiting for the GPU's queued work.

Run it alone (two CPU-heavy jobs on 2 cores distort each other)::

    python benchmarks/block_generation.py [--out DIR] [--quick] [--device cpu|cuda]

Results go to ``DIR/block_generation.json`` (default ``results/bench``) with the machine, versions and
settings; a table is printed. ``--quick`` is a dry run of a few seconds (64 tokens, blocks of 4 and 16,
two steps, a smaller network).
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

import torch

import gdds
from common import add_device, checked_device, command_line, machine_info, timed, versions, write_json
from gdds import kernels as K
from gdds.block_sampling import sample_blocks
from gdds.models import DiTConfig
from gdds.models.block import BlockDiT

VOCAB, SEED = 89, 0
QUICK = dict(length=64, block_sizes=[4, 16], steps=2, num=1, preset_overrides=dict(layers=1, width=32, heads=2,
                                                                                  cond_width=16))


def measure(block_size: int, length: int, steps: int, num: int, overrides: dict[str, int],
            device: str = "cpu") -> dict[str, Any]:
    """Seconds and tokens/s with and without the cache at one block size, and whether the samples agree."""
    torch.manual_seed(SEED)
    net = BlockDiT(DiTConfig.preset("tiny", VOCAB, max_len=length, **overrides), block_size).to(device).eval()
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Mask(VOCAB, VOCAB - 1)).to(device)
    row: dict[str, Any] = {"block_size": block_size}
    samples = {}
    for cache in (True, False):
        draw = partial(sample_blocks, process, net, num, length, steps, cache=cache,
                       generator=torch.Generator(device=device).manual_seed(SEED))
        samples[cache], seconds = timed(draw, device)
        key = "cached" if cache else "uncached"
        row[f"{key}_s"], row[f"{key}_tokens_per_s"] = seconds, num * length / seconds
    row["speedup"] = row["cached_tokens_per_s"] / row["uncached_tokens_per_s"]
    row["same_samples"] = bool(torch.equal(samples[True], samples[False]))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--quick", action="store_true", help="a dry run of a few seconds")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--num", type=int, default=1)
    add_device(parser)
    args = parser.parse_args(argv)
    checked_device(parser, args)
    settings: dict[str, Any] = dict(length=args.length, block_sizes=args.block_sizes, steps=args.steps, num=args.num,
                                    preset_overrides={})
    if args.quick:
        settings.update(QUICK)
    settings.update(preset="tiny", vocab=VOCAB, kernel="mask", schedule="LogLinear(1e-3)", device=args.device,
                    threads=torch.get_num_threads(), seed=SEED)
    results = [measure(b, settings["length"], settings["steps"], settings["num"], settings["preset_overrides"],
                       args.device) for b in settings["block_sizes"]]
    print(f"{settings['num']} x {settings['length']} tokens, {settings['steps']} steps per block, "
          f"{args.device.upper()}")
    print(f"{'block':>6} {'cached tok/s':>14} {'uncached tok/s':>16} {'speedup':>8} {'same samples':>13}")
    for r in results:
        print(f"{r['block_size']:>6} {r['cached_tokens_per_s']:>14.1f} {r['uncached_tokens_per_s']:>16.1f} "
              f"{r['speedup']:>7.1f}x {r['same_samples']!s:>13}")
    write_json({"benchmark": "block_generation", "mode": "quick" if args.quick else "full",
                "command": command_line(__file__, argv), "machine": machine_info(cuda_used=args.device == "cuda"),
                "versions": versions(), "settings": settings, "results": results},
               args.out / "block_generation.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
