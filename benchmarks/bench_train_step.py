"""RobustModel's training step against a plain tf.function loop doing the same work.

For each method (PAT and SNS with PGD-10; optionally vanilla, and SNS with single-step
FGSM-RS or with PGD-2) two variants train their own copy of small_cnn (same initial
weights) on the
same fixed batch of Fashion-MNIST images:

- ``fit``: ``RobustModel.fit`` on that batch repeated ``--steps`` times; step times are
  the gaps between a callback's ``on_train_batch_end`` timestamps, so ``fit``'s start-up
  is not in them;
- ``loop``: the floor, a hand-written ``tf.function`` step (PGD-L-inf written out in
  place, one forward pass over [x, x'], cross-entropy, L_sns for SNS, Adam), timed the
  same way, once per step, ``--steps`` steps in a row.

The variants take turns (one block of ``--steps`` steps each per round, ``--rounds``
rounds, after a warm-up block that traces), so they see the same machine load; the
report gives each variant's median step time (median over rounds of the per-block
median, the first ``--skip`` gaps of a block dropped) and, per method, fit / loop as
the median over rounds of the ratio of the two blocks of a round, which ran back to
back: on a shared machine whose load drifts, pairing cancels most of the drift.
``--precisions float32,mixed_bfloat16`` runs every variant in each policy, side by side.
``--xla`` adds a third variant, ``xla``: the plain loop compiled by XLA
(``tf.function(jit_compile=True)``), reported as xla / loop.

    nice -n 10 .venv/bin/python benchmarks/bench_train_step.py --json runs/bench/train_step.json
    .venv/bin/python benchmarks/bench_train_step.py --methods vanilla,pat,sns,sns-fgsm_rs \
        --precisions float32,mixed_bfloat16 --steps 20 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sns import data, models  # noqa: E402
from keras_sns.neurons.probe import LOGITS_KEY, probe  # noqa: E402
from keras_sns.precision import hardware_description  # noqa: E402
from keras_sns.training import CatastrophicOverfittingGuard, RobustModel, sns_loss  # noqa: E402

EPS = 0.1
LAYERS = ["conv3", "conv4"]
LAM = 0.5
# method: (RobustModel method, training attack name, attack steps)
METHODS = {
    "vanilla": ("vanilla", None, 0),
    "pat": ("pat", "pgd_linf", 10),
    "sns": ("sns", "pgd_linf", 10),
    "pat-fgsm_rs": ("pat", "fgsm_rs", 1),
    "sns-fgsm_rs": ("sns", "fgsm_rs", 1),
    "sns-pgd2": ("sns", "pgd_linf", 2),
}


class BatchClock(keras.callbacks.Callback):
    """Timestamps of every training batch's end, inside one ``fit`` call."""

    def on_train_begin(self, logs=None):
        self.stamps = [time.perf_counter()]

    def on_train_batch_end(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


def fixed_masks(channels: dict) -> dict:
    return {n: (np.arange(c) < max(1, c // 10)).astype("float32") for n, c in channels.items()}


def fit_variant(method, attack_name, steps, initial, x, y):
    """``run(n)`` -> step times of ``n`` steps of ``RobustModel.fit`` on the batch."""
    base = models.build("small_cnn")
    base.set_weights(initial)
    attack = None if attack_name is None else {"name": attack_name, "eps": EPS, "seed": 0,
                                                **({"steps": steps} if steps > 1 else {})}
    model = RobustModel(base, method=method, layers=LAYERS if method == "sns" else None,
                        lam=LAM if method == "sns" else None, attack=attack, eval_attack=False)
    if method == "sns":
        model.set_masks(fixed_masks(model.channels))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clock = BatchClock()
    # The catastrophic-overfitting guard that fit adds for single-step attacks, on one
    # example and never between batches: its checks at the start and end of a block
    # fall outside the timed gaps (the first --skip gaps are dropped).
    guard = CatastrophicOverfittingGuard(x[:1], y[:1], every=10 ** 9)

    def run(n):
        ds = tf.data.Dataset.from_tensors((x, y)).repeat(n)
        model.fit(ds, epochs=1, verbose=0, callbacks=[clock, guard])
        return np.diff(clock.stamps)

    return run


def loop_variant(method, attack_name, steps, initial, x, y, jit_compile=False):
    """``run(n)`` -> step times of ``n`` calls of a hand-written compiled step (by XLA
    with ``jit_compile``)."""
    base = models.build("small_cnn")
    base.set_weights(initial)
    net = probe(base, LAYERS) if method == "sns" else None
    masks = {n: tf.constant(m) for n, m in
             fixed_masks({n: int(base.get_layer(n).output.shape[-1]) for n in LAYERS}).items()}
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(base.trainable_variables)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = tf.random.Generator.from_seed(0)
    alpha = EPS / np.sqrt(steps) if attack_name == "pgd_linf" else 1.25 * EPS

    def input_grad(x_adv, labels):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = tf.cast(base(x_adv, training=False), tf.float32)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, x_adv)

    @tf.function(jit_compile=jit_compile)
    def step(xb, yb):
        labels = tf.cast(yb, tf.int32)
        if attack_name is None:
            with tf.GradientTape() as tape:
                loss = ce(yb, base(xb, training=True))
        else:
            x_adv = tf.clip_by_value(xb + rng.uniform(tf.shape(xb), -EPS, EPS), 0.0, 1.0)
            for _ in range(steps):  # unrolled, as the library's PGD
                x_adv = x_adv + alpha * tf.sign(input_grad(x_adv, labels))
                x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, xb - EPS, xb + EPS), 0.0, 1.0)
            x_adv = tf.stop_gradient(x_adv)
            xx = tf.concat([xb, x_adv], 0)
            yy = tf.concat([yb, yb], 0)
            with tf.GradientTape() as tape:
                if net is None:
                    loss = ce(yy, base(xx, training=True))
                else:
                    outs = net(xx, training=True)
                    n = tf.shape(xb)[0]
                    reg, _ = sns_loss({k: outs[k][:n] for k in LAYERS},
                                      {k: outs[k][n:] for k in LAYERS}, masks)
                    loss = ce(yy, outs[LOGITS_KEY]) + LAM * reg
        grads = tape.gradient(loss, base.trainable_variables)
        optimizer.apply_gradients(zip(grads, base.trainable_variables))
        return loss

    def run(n):
        stamps = [time.perf_counter()]
        for _ in range(n):
            step(x, y)
            stamps.append(time.perf_counter())
        return np.diff(stamps)

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="pat,sns")
    p.add_argument("--precisions", default="float32")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip", type=int, default=2, help="gaps dropped at a block's start")
    p.add_argument("--json", default=None)
    p.add_argument("--xla", action="store_true", help="also time the plain loop under XLA")
    args = p.parse_args()
    x, y, _ = data.load_arrays("fashion_mnist", "train", limit=args.batch_size)
    x, y = tf.constant(x), tf.constant(y)
    keras.utils.set_random_seed(0)
    initial = models.build("small_cnn").get_weights()
    variants = {}
    for precision in args.precisions.split(","):
        keras.mixed_precision.set_global_policy(precision)
        for name in args.methods.split(","):
            method, attack, steps = METHODS[name]
            kinds = [("fit", fit_variant), ("loop", loop_variant)]
            if args.xla:
                kinds.append(("xla", lambda *a: loop_variant(*a, jit_compile=True)))
            for kind, make in kinds:
                run = make(method, attack, steps, initial, x, y)
                run(args.skip + 2)  # warm-up: tracing
                variants[(precision, name, kind)] = run
    keras.mixed_precision.set_global_policy("float32")
    blocks = {key: [] for key in variants}
    for r in range(args.rounds):
        for key, run in variants.items():
            blocks[key].append(float(np.median(run(args.steps + args.skip)[args.skip:])))
        print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
    median = {key: statistics.median(v) for key, v in blocks.items()}
    hw = hardware_description()
    print(f"\nCPU {hw.cpu_model} ({platform.machine()}), batch {args.batch_size}, "
          f"{args.rounds} rounds x {args.steps} steps, load average {os.getloadavg()}")
    print("| precision | method | RobustModel.fit ms/step | plain loop ms/step | fit / loop "
          "(paired median) | quietest round: fit, loop ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for precision in args.precisions.split(","):
        for name in args.methods.split(","):
            f, lp = median[(precision, name, "fit")], median[(precision, name, "loop")]
            fits, loops = blocks[(precision, name, "fit")], blocks[(precision, name, "loop")]
            ratio = statistics.median(a / b for a, b in zip(fits, loops))
            quiet = min(range(len(fits)), key=lambda i: fits[i] + loops[i])
            rows.append({"precision": precision, "method": name, "fit_ms": 1000 * f,
                         "loop_ms": 1000 * lp, "ratio": ratio, "ratio_of_medians": f / lp,
                         "fit_blocks_ms": [1000 * v for v in blocks[(precision, name, "fit")]],
                         "loop_blocks_ms": [1000 * v for v in blocks[(precision, name, "loop")]]})
            print(f"| {precision} | {name} | {1000 * f:.1f} | {1000 * lp:.1f} | {ratio:.3f} | "
                  f"{1000 * fits[quiet]:.0f}, {1000 * loops[quiet]:.0f} |")
            if args.xla:
                xlas = blocks[(precision, name, "xla")]
                rows[-1].update(xla_ms=1000 * median[(precision, name, "xla")],
                                xla_over_loop=statistics.median(a / b for a, b in zip(xlas, loops)),
                                xla_blocks_ms=[1000 * v for v in xlas])
    if args.xla:
        print("\n| precision | method | plain loop ms/step | XLA loop ms/step | xla / loop "
              "(paired median) |\n| --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['precision']} | {r['method']} | {r['loop_ms']:.1f} | {r['xla_ms']:.1f} | "
                  f"{r['xla_over_loop']:.3f} |")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"cpu": hw.cpu_model, "args": vars(args), "rows": rows,
                       "load_average": os.getloadavg()}, fh, indent=1)


if __name__ == "__main__":
    main()
