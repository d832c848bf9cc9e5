"""Cost per image of a training step at several batch sizes, side by side.

The main job's recipe trades batch 128 for batch 64 (twice the updates for the same
images; docs/hyperparameters.md); that is only free if a step of 64 images costs half a
step of 128. For each method (the vanilla step and the main job's PGD-2 SNS step by
default) and batch size, ``RobustModel.fit`` trains its own copy of small_cnn (same
initial weights) on one fixed batch, timed as in ``bench_train_step.py`` (gaps between
``on_train_batch_end`` timestamps inside one ``fit`` call). The batch sizes take turns,
one block of ``--steps`` steps each per round, so they see the same machine load; the
report gives each one's median milliseconds per image and, per method, the ratio of the
per-image costs of each batch size to the largest, as the median over rounds of the
ratio within a round.

    .venv/bin/python benchmarks/bench_batch_size.py --json runs/bench/batch_size.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from bench_train_step import METHODS, fit_variant  # noqa: E402
from keras_sns import data, models  # noqa: E402
from keras_sns.precision import hardware_description  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="vanilla,sns-pgd2")
    p.add_argument("--batch-sizes", default="64,128")
    p.add_argument("--steps", type=int, default=12, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip", type=int, default=2, help="gaps dropped at a block's start")
    p.add_argument("--json", default=None)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.steps <= args.skip:
        p.error(f"--steps ({args.steps}) must exceed --skip ({args.skip})")
    sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
    keras.mixed_precision.set_global_policy("float32")
    x, y, _ = data.load_arrays("fashion_mnist", "fit", limit=max(sizes))
    keras.utils.set_random_seed(0)
    initial = models.build("small_cnn").get_weights()
    hw = hardware_description()
    isa = "avx512_bf16" if "avx512_bf16" in hw.cpu_flags else "avx2 only"
    result = {"cpu": f"{hw.cpu_model} ({isa}, {os.cpu_count()} CPUs)", "precision": "float32",
              "command": " ".join(["benchmarks/bench_batch_size.py", *argv]),
              "methods": {}}
    for name in args.methods.split(","):
        method, attack, steps = METHODS[name]
        runs = {b: fit_variant(method, attack, steps, initial, x[:b], y[:b]) for b in sizes}
        for run in runs.values():
            run(args.skip + 2)  # warm-up: traces the step
        per_image = {b: [] for b in sizes}  # ms per image, one value per round
        loads = []
        for _ in range(args.rounds):
            for b, run in runs.items():
                gaps = run(args.steps)[args.skip:]
                per_image[b].append(1000 * statistics.median(gaps) / b)
            loads.append(os.getloadavg()[0])
        top = sizes[-1]
        result["methods"][name] = {
            "ms_per_image": {b: statistics.median(v) for b, v in per_image.items()},
            "ratio_to_largest": {b: statistics.median(c / t for c, t in
                                                      zip(per_image[b], per_image[top]))
                                 for b in sizes},
            "load_average": [min(loads), max(loads)]}
        print(name, json.dumps(result["methods"][name]), flush=True)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
