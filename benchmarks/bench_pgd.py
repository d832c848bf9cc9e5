"""PGD-10 throughput and agreement: keras-sns vs IBM ART vs CleverHans, in one run.

Same model, same batch, same box [0, 1], same eps / step size / steps / random start for
every implementation. Reports images/s (median of --repeats timed runs after a warm-up),
ratios to ART, to CleverHans and to the floor 1 / (10 x one forward+backward gradient
step), and the robust accuracy each implementation leaves on --eval-examples test
images (they must agree within 2 points). Also compares APGD-CE with ART's
AutoProjectedGradientDescent, and checks APGD-CE <= our PGD at the same budget.

Needs the bench extra (`pip install -e '.[bench]'`). Run:

    .venv/bin/python benchmarks/bench_pgd.py --model runs/fashion_mnist_small_cnn/model.keras

Without --model it trains small_cnn for 2 epochs first (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402


def _model(path: str | None) -> keras.Model:
    if path:
        return models.load(path)
    x, y, _ = data.load_arrays("fashion_mnist", "fit")
    keras.utils.set_random_seed(0)
    m = models.build("small_cnn")
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    m.fit(x, y, epochs=2, batch_size=128, verbose=0)
    return m


def _median_rate(fn, batch: int, repeats: int) -> float:
    fn()  # warm-up: tracing, graph building
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        np.asarray(out)  # make sure the work is done
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def _accuracy(model, x_adv, y) -> float:
    return float(np.mean(np.argmax(model.predict(np.asarray(x_adv), batch_size=256, verbose=0), 1) == y))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--eval-examples", type=int, default=1000)
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = p.parse_args()

    from art.attacks.evasion import AutoProjectedGradientDescent, ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    model = _model(args.model)
    x_all, y_all, info = data.load_arrays("fashion_mnist", "test", limit=args.eval_examples)
    xb, yb = x_all[: args.batch_size], y_all[: args.batch_size]
    eps, steps = args.eps, args.steps
    alpha = eps / np.sqrt(steps)  # the paper's step size, for every implementation

    ours = attacks.get("pgd_linf", eps=eps, steps=steps, step_size=alpha, seed=0)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    art_clf = TensorFlowV2Classifier(model, nb_classes=info.num_classes, input_shape=info.input_shape,
                                     loss_object=loss_fn, clip_values=(0.0, 1.0))
    art_pgd = ProjectedGradientDescent(art_clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                       num_random_init=1, batch_size=args.batch_size, verbose=False)

    def cleverhans_pgd(x):
        # clip_min/clip_max: without them CleverHans leaves [0, 1] and looks stronger.
        return projected_gradient_descent(lambda t: model(t, training=False), x, eps, alpha, steps,
                                          np.inf, clip_min=0.0, clip_max=1.0, rand_init=True,
                                          sanity_checks=False)

    @tf.function
    def grad_step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn(y, model(x, training=False))
        return tape.gradient(loss, x)

    xt, yt = tf.constant(xb), tf.constant(yb)
    floor = _median_rate(lambda: grad_step(xt, yt), args.batch_size, args.repeats * 3) / steps
    rates = {
        "keras_sns": _median_rate(lambda: ours(model, xb, yb), args.batch_size, args.repeats),
        "cleverhans": _median_rate(lambda: cleverhans_pgd(xt), args.batch_size, args.repeats),
        "art": _median_rate(lambda: art_pgd.generate(xb, yb), args.batch_size, args.repeats),
    }

    def run_all(fn, bs=args.batch_size):
        return np.concatenate([np.asarray(fn(x_all[i:i + bs], y_all[i:i + bs]))
                               for i in range(0, len(x_all), bs)])

    apgd_ours = attacks.get("apgd_ce", eps=eps, steps=steps, seed=0)
    art_apgd = AutoProjectedGradientDescent(art_clf, norm=np.inf, eps=eps, eps_step=2 * eps,
                                            max_iter=steps, nb_random_init=1,
                                            batch_size=args.batch_size, verbose=False)
    adv = {
        "keras_sns pgd": run_all(lambda x, y: ours(model, x, y)),
        "cleverhans pgd": run_all(lambda x, y: cleverhans_pgd(tf.constant(x))),
        "art pgd": run_all(lambda x, y: art_pgd.generate(x, y)),
        "keras_sns apgd_ce": run_all(lambda x, y: apgd_ours(model, x, y)),
        "art apgd": run_all(lambda x, y: art_apgd.generate(x, y)),
    }
    acc = {"clean": _accuracy(model, x_all, y_all)}
    for name, x_adv in adv.items():
        assert np.abs(x_adv - x_all).max() <= eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1, name
        acc[name] = _accuracy(model, x_adv, y_all)

    print(f"PGD-{steps}, eps={eps}, step={alpha:.4f}, batch {args.batch_size}, "
          f"median of {args.repeats} runs; floor = 1 / ({steps} x gradient step)")
    print(f"{'implementation':<14} {'images/s':>9}")
    print(f"{'floor':<14} {floor:9.0f}")
    for name, r in rates.items():
        print(f"{name:<14} {r:9.0f}")
    ratios = {
        "ours / art": rates["keras_sns"] / rates["art"],
        "ours / cleverhans": rates["keras_sns"] / rates["cleverhans"],
        "ours / floor": rates["keras_sns"] / floor,
    }
    targets = {"ours / art": 2.5, "ours / cleverhans": 1.0, "ours / floor": 0.9}
    for k, v in ratios.items():
        print(f"{k:<18} {v:5.2f}  (target >= {targets[k]})")
    print(f"robust accuracy on {len(y_all)} test images:")
    for k, v in acc.items():
        print(f"  {k:<18} {100 * v:6.2f} %")
    agree = {
        "pgd: ours vs art (<= +2 points)": acc["keras_sns pgd"] <= acc["art pgd"] + 0.02,
        "pgd: ours vs cleverhans (<= +2 points)": acc["keras_sns pgd"] <= acc["cleverhans pgd"] + 0.02,
        "apgd_ce: ours vs art (<= +2 points)": acc["keras_sns apgd_ce"] <= acc["art apgd"] + 0.02,
        "apgd_ce <= our pgd": acc["keras_sns apgd_ce"] <= acc["keras_sns pgd"],
    }
    for k, ok in agree.items():
        print(f"  {'OK ' if ok else 'FAIL'} {k}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": rates, "floor": floor, "ratios": ratios, "accuracy": acc,
                       "agreement": agree, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
