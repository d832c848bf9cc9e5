"""Input-pipeline throughput: `fit` on load_dataset's tf.data vs on in-memory NumPy arrays.

The issue's target: the tf.data pipeline reaches at least 90 % of the NumPy throughput.
Both variants train the same model (small_cnn) on the same examples with the same batch
size; runs alternate (A, B, A, B, ...) so that machine noise hits both alike, and the
report gives the median images/s over the repeats.

    .venv/bin/python benchmarks/bench_input_pipeline.py --examples 12800 --repeats 5
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_sns import data, models  # noqa: E402


def _model():
    m = models.build("small_cnn")
    m.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def _time_epoch(model, fit_args, fit_kwargs) -> float:
    start = time.perf_counter()
    model.fit(*fit_args, epochs=1, verbose=0, **fit_kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=12800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    x, y, _ = data.load_arrays("fashion_mnist", "train", limit=args.examples)
    ds, _ = data.load_dataset("fashion_mnist", "train", limit=args.examples,
                              batch_size=args.batch_size, seed=0)
    variants = {
        "numpy": ((x, y), {"batch_size": args.batch_size, "shuffle": True}),
        "tf.data": ((ds,), {"shuffle": False}),
    }
    built = {name: _model() for name in variants}
    for name, (fa, fk) in variants.items():  # warm-up: tracing, caches
        _time_epoch(built[name], fa, fk)
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (fa, fk) in variants.items():
            times[name].append(_time_epoch(built[name], fa, fk))
    rates = {n: args.examples / statistics.median(t) for n, t in times.items()}
    for n, r in rates.items():
        print(f"{n:8s} median {r:8.0f} images/s over {args.repeats} epochs of {args.examples}")
    ratio = rates["tf.data"] / rates["numpy"]
    print(f"tf.data / numpy throughput ratio: {ratio:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
