"""Step time of SNS (sen, ema) over PAT on the same model and batch, in one run.

Each variant fine-tunes its own copy of small_cnn with PGD-10 (eps 0.1) on the same
batches of Fashion-MNIST; the variants take turns, one timed block of --steps steps each
per round, and the report gives the median seconds per step over --rounds rounds after a
warm-up, the ratios to PAT, and images/s (2 x batch images go through the training pass).

    .venv/bin/python benchmarks/bench_train_step.py --batch-size 128 --steps 10 --rounds 5
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sns import data, models  # noqa: E402
from keras_sns.training import RobustModel  # noqa: E402

VARIANTS = {
    "pat": dict(method="pat"),
    "sns-sen": dict(method="sns", layers="conv3,conv4", lam=0.5, selection="sen"),
    "sns-ema": dict(method="sns", layers="conv3,conv4", lam=0.5, selection="ema"),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    x, y, _ = data.load_arrays("fashion_mnist", "train", limit=args.batch_size * args.steps)
    built = {}
    for name, kw in VARIANTS.items():
        keras.utils.set_random_seed(0)
        m = RobustModel(models.build("small_cnn"), attack={"name": "pgd_linf", "eps": 0.1,
                        "steps": 10, "seed": 0}, **kw)
        if kw["method"] == "sns":
            m.set_masks({n: (np.arange(c) < 7).astype("float32") for n, c in m.channels.items()})
        m.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x[: args.batch_size], y[: args.batch_size], batch_size=args.batch_size,
              epochs=1, verbose=0)  # warm-up: tracing
        built[name] = m
    times = {n: [] for n in built}
    for _ in range(args.rounds):
        for name, m in built.items():
            start = time.perf_counter()
            m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
            times[name].append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times["pat"])
    print(f"batch {args.batch_size}, PGD-10 eps 0.1, median of {args.rounds} x {args.steps} steps")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:<8} {1000 * med:7.1f} ms/step  {args.batch_size / med:6.0f} images/s  "
              f"ratio to PAT {med / base:5.3f}")


if __name__ == "__main__":
    main()
