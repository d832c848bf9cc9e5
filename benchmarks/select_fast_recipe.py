"""Choose the main job's recipe on the VALIDATION split: single-step + SNS vs PGD-10.

Trains one vanilla small_cnn (saved after --vanilla-epochs and after 5 epochs), then
fine-tunes it with every candidate (seed 0, or 1 where the name says ``-s1``; Adam 1e-3;
batch 128, or 64 where it says ``-b64``, for the vanilla init too with ``-vb64``; eps 0.1),
each on the same fit split. Every ``1 / --parts`` of an epoch it pauses the clock and measures
clean and PGD-20 accuracy on the first --val examples of the validation split (the last
6,000 training images, never fitted on; the test set is never touched), so every
candidate gives a curve of validation robustness against its own training wall time
(mask selection and the overfitting guard included, evaluation excluded). PGD-10
training runs for fewer epochs than the single-step ones: the comparison is at equal
wall time.

Each finished candidate is cached as OUT/<name>.json (a killed run loses at most the
candidate in progress); --report prints the Markdown table from the cache.

    nice -n 10 .venv/bin/python benchmarks/select_fast_recipe.py --out runs/recipe
    .venv/bin/python benchmarks/select_fast_recipe.py --out runs/recipe --report
"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402
from keras_sns.precision import hardware_description  # noqa: E402
from keras_sns.training import CatastrophicOverfittingGuard, RobustModel  # noqa: E402

EPS = 0.1
BATCH = 128
# name: (method, training attack, lam, vanilla epochs of the init, fine-tune epochs)
CANDIDATES = {
    "fgsm_rs+sns": ("sns", {"name": "fgsm_rs"}, 0.5, 3, 2),
    "n_fgsm+sns": ("sns", {"name": "n_fgsm"}, 0.5, 3, 2),
    # PGD-10 costs about 3.4 single-step steps: 0.75 epoch covers 2 single-step epochs.
    "pgd10+sns": ("sns", {"name": "pgd_linf", "steps": 10}, 0.5, 3, 0.75),
    "fgsm_rs+pat": ("pat", {"name": "fgsm_rs"}, 0.0, 3, 2),
    "fgsm_rs+sns-cos": ("sns", {"name": "fgsm_rs"}, 0.5, 3, 2),  # cosine lr decay to 0
    "n_fgsm+pat": ("pat", {"name": "n_fgsm"}, 0.0, 3, 2),
    "fgsm_rs+sns-lam1": ("sns", {"name": "fgsm_rs"}, 1.0, 3, 2),
    "fgsm_rs+sns-v2": ("sns", {"name": "fgsm_rs"}, 0.5, 2, 2),
    "pgd2+sns-v2": ("sns", {"name": "pgd_linf", "steps": 2}, 0.5, 2, 2),
    "fgsm_rs+sns-v1e3": ("sns", {"name": "fgsm_rs"}, 0.5, 1, 3),
    "fgsm_rs+sns-v2-lr2": ("sns", {"name": "fgsm_rs"}, 0.5, 2, 2),  # Adam 2e-3
    "pgd2+sns-v1": ("sns", {"name": "pgd_linf", "steps": 2}, 0.5, 1, 2),
    "pgd2+pat-v1": ("pat", {"name": "pgd_linf", "steps": 2}, 0.0, 1, 2),
    # lr x0.1 for the last quarter of the fine-tune (the usual end-of-training decay)
    "pgd2+sns-v1-decay": ("sns", {"name": "pgd_linf", "steps": 2}, 0.5, 1, 2),
    "pgd2+sns-v1-cos": ("sns", {"name": "pgd_linf", "steps": 2}, 0.5, 1, 2),
    "pgd2+sns-v1-lam1": ("sns", {"name": "pgd_linf", "steps": 2}, 1.0, 1, 2),
    "pgd2+sns-v1-lam2": ("sns", {"name": "pgd_linf", "steps": 2}, 2.0, 1, 2),
    "pgd2+pat-v1-decay": ("pat", {"name": "pgd_linf", "steps": 2}, 0.0, 1, 2),
    # PGD-10 SNS from the same 1-epoch init, at the wall time of 2 PGD-2 epochs (run
    # with --parts 4: 3 quarters)
    "pgd10+sns-v1": ("sns", {"name": "pgd_linf", "steps": 10}, 0.5, 1, 0.75),
    # pgd2+sns-v1-lam1 again, also scoring exponential moving averages of its weights
    # (momenta EMA_MOMENTA) at the end: the same training trajectory, so a paired comparison
    "pgd2+sns-v1-lam1-ema": ("sns", {"name": "pgd_linf", "steps": 2}, 1.0, 1, 2),
    # Twice the updates for the same images: batch 64 (a "-b64" name), against the chosen
    # recipe; "-s1" runs a candidate with seed 1 (the init and the fit order stay seed 0's)
    "pgd2+sns-v1-lam1-s1": ("sns", {"name": "pgd_linf", "steps": 2}, 1.0, 1, 2),
    "pgd2+sns-v1-lam1-b64": ("sns", {"name": "pgd_linf", "steps": 2}, 1.0, 1, 2),
    "pgd2+sns-v1-lam1-b64-s1": ("sns", {"name": "pgd_linf", "steps": 2}, 1.0, 1, 2),
    # ...and with the vanilla epoch at batch 64 too ("-vb64"), as `cli.py train
    # --batch-size 64` runs both stages
    "pgd2+sns-v1-lam1-b64-vb64": ("sns", {"name": "pgd_linf", "steps": 2}, 1.0, 1, 2),
}
EMA_MOMENTA = (0.99, 0.995, 0.998)


class WeightAverages(keras.callbacks.Callback):
    """Exponential moving averages of the trainable weights, one per momentum, updated
    after every step as Keras' ``use_ema`` optimizers do (the first step copies)."""

    def __init__(self, momenta):
        super().__init__()
        self.momenta, self.averages = momenta, None

    def on_train_batch_end(self, batch, logs=None):
        weights = [np.asarray(w) for w in self.model.trainable_weights]
        if self.averages is None:
            self.averages = {m: [w.copy() for w in weights] for m in self.momenta}
        else:
            for m, avg in self.averages.items():
                for a, w in zip(avg, weights):
                    a *= m
                    a += (1.0 - m) * w


class Clock(keras.callbacks.Callback):
    """Training wall time per (sub-)epoch; at its end, validation accuracy off the clock."""

    def __init__(self, evaluate, steps_per_part, start_seconds, steps_per_epoch):
        super().__init__()
        self.evaluate, self.steps_per_part = evaluate, steps_per_part
        self.steps_per_epoch, self.train_cpu_seconds = steps_per_epoch, 0.0
        self.train_seconds, self.points = start_seconds, []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds += time.perf_counter() - self._t0
        # CPU time of all threads: the fine-tune's cost even on a shared machine
        self.train_cpu_seconds += time.process_time() - self._cpu0
        clean, pgd = self.evaluate()
        self.points.append({"epochs": (epoch + 1) * self.steps_per_part / self.steps_per_epoch,
                            "train_seconds": round(self.train_seconds, 1),
                            "train_cpu_seconds": round(self.train_cpu_seconds, 1),
                            "val_clean": clean, "val_pgd20": pgd})
        print(json.dumps(self.points[-1]), flush=True)


FIT_IMAGES = 54_000


def steps_per_epoch(batch):
    """Batches in one epoch of the fit split (422 at batch 128)."""
    return -(-FIT_IMAGES // batch)


def vanilla(out, epochs, fit_ds, val_ds, tag=""):
    path = os.path.join(out, f"vanilla_e{epochs}{tag}.keras")
    if os.path.exists(path):
        return path, json.load(open(path + ".json"))
    keras.utils.set_random_seed(0)
    model = models.build("small_cnn", input_shape=(28, 28, 1), num_classes=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    saved = {}

    class Save(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved[epoch + 1] = time.perf_counter() - start
            if epoch + 1 in (epochs, 3, 5):
                p = os.path.join(out, f"vanilla_e{epoch + 1}{tag}.keras")
                self.model.save(p)
                acc = self.model.evaluate(val_ds, verbose=0)[1]
                json.dump({"train_seconds": round(saved[epoch + 1], 1), "val_clean": acc},
                          open(p + ".json", "w"))

    start = time.perf_counter()
    model.fit(fit_ds, epochs=max(epochs, 5) if epochs in (3, 5) else epochs, verbose=2,
              callbacks=[Save()], shuffle=False)
    return path, json.load(open(path + ".json"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/recipe")
    p.add_argument("--val", type=int, default=1000, help="validation examples per point")
    p.add_argument("--parts", type=int, default=2, help="evaluation points per epoch")
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.report:
        return report(args.out)
    keras.mixed_precision.set_global_policy("float32")  # the AVX2 machine's precision
    fit_ds, _ = data.load_dataset("fashion_mnist", "fit", batch_size=BATCH, seed=0)
    fit_small, _ = data.load_dataset("fashion_mnist", "fit", batch_size=BATCH // 2, seed=0)
    val_ds, _ = data.load_dataset("fashion_mnist", "validation", batch_size=500)
    x_val, y_val, _ = data.load_arrays("fashion_mnist", "validation", limit=args.val)
    pgd20 = attacks.get("pgd_linf", eps=EPS, steps=20, seed=0)

    for name, (method, attack, lam, v_epochs, epochs) in CANDIDATES.items():
        path = os.path.join(args.out, f"{name}.json")
        if (args.only and name not in args.only) or os.path.exists(path):
            continue
        small_vanilla = "-vb64" in name  # the vanilla epoch at batch 64 too
        init, vinfo = vanilla(args.out, v_epochs, fit_small if small_vanilla else fit_ds, val_ds,
                              tag="_b64" if small_vanilla else "")
        seed = 1 if "-s1" in name else 0
        batch = BATCH // 2 if "-b64" in name else BATCH
        keras.utils.set_random_seed(seed)
        base = models.load(init)

        def evaluate():
            logits = base.predict(x_val, batch_size=500, verbose=0)
            clean = float(np.mean(logits.argmax(-1) == y_val))
            x_adv = np.concatenate([np.asarray(pgd20(base, x_val[i:i + 500], y_val[i:i + 500]))
                                    for i in range(0, len(x_val), 500)])
            robust = float(np.mean(base.predict(x_adv, batch_size=500, verbose=0).argmax(-1)
                                   == y_val))
            return clean, robust

        model = RobustModel(base, method=method, layers="conv3,conv4" if method == "sns" else None,
                            lam=lam, attack={**attack, "eps": EPS, "seed": seed}, eval_attack=False)
        part = -(-steps_per_epoch(batch) // args.parts)
        parts = int(round(epochs * args.parts))
        total = parts * part
        if name.endswith("-cos"):
            lr = keras.optimizers.schedules.CosineDecay(1e-3, total)
        elif name.endswith("-decay"):
            lr = keras.optimizers.schedules.PiecewiseConstantDecay([int(0.75 * total)],
                                                                   [1e-3, 1e-4])
        else:
            lr = 2e-3 if name.endswith("-lr2") else 1e-3
        model.compile(optimizer=keras.optimizers.Adam(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        clock = Clock(evaluate, part, vinfo["train_seconds"], steps_per_epoch(batch))
        print(f"== {name}: {method} {attack} lam {lam}, init vanilla {v_epochs} epochs "
              f"({vinfo['train_seconds']} s), {epochs} epochs", flush=True)
        # The guard (what fit adds for single-step attacks) goes before the clock, so
        # its epoch-end check is on the clock too; it reads 256 validation images, it
        # never trains on them.
        guard = ([CatastrophicOverfittingGuard(x_val[:256], y_val[:256], seed=0)]
                 if model.single_step_attack else [])
        averages = [WeightAverages(EMA_MOMENTA)] if name.endswith("-ema") else []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit((fit_small if batch < BATCH else fit_ds).repeat(), epochs=parts,
                      steps_per_epoch=part,
                      callbacks=guard + averages + [clock], verbose=0, shuffle=False)
        ema = {}
        if averages:
            raw = [np.asarray(w) for w in model.trainable_weights]
            for m, avg in averages[0].averages.items():
                for var, a in zip(model.trainable_weights, avg):
                    var.assign(a)
                clean, pgd = evaluate()
                ema[str(m)] = {"val_clean": clean, "val_pgd20": pgd}
                print(json.dumps({"ema_momentum": m, **ema[str(m)]}), flush=True)
            for var, w in zip(model.trainable_weights, raw):
                var.assign(w)
        guard_msgs = [str(w.message) for w in caught if "Catastrophic" in str(w.message)]
        record = {"name": name, "method": method, "attack": attack["name"], "lam": lam,
                  "batch_size": batch, "seed": seed,
                  "vanilla_batch_size": BATCH // 2 if small_vanilla else BATCH,
                  "vanilla_epochs": v_epochs, "vanilla_seconds": vinfo["train_seconds"],
                  "vanilla_val_clean": vinfo["val_clean"], "points": clock.points,
                  "guard": guard_msgs, "ema": ema,
                  "guard_checks": guard[0].checks if guard else [], "cpu": hardware_description().cpu_model,
                  "load_average": os.getloadavg()}
        json.dump(record, open(path, "w"), indent=1)
    report(args.out)


def report(out):
    rows = []
    for name in CANDIDATES:
        path = os.path.join(out, f"{name}.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        for pt in r["points"]:
            rows.append(f"| {name} | {pt['epochs']:.2f} | {pt['train_seconds']:.0f} | "
                        f"{100 * pt['val_clean']:.1f} % | {100 * pt['val_pgd20']:.1f} % |"
                        + (" guard stopped |" if r["guard"] and pt is r["points"][-1] else " |"))
        for m, pt in r.get("ema", {}).items():
            rows.append(f"| {name}, weight average (momentum {m}) | {r['points'][-1]['epochs']:.2f} | "
                        f"{r['points'][-1]['train_seconds']:.0f} | {100 * pt['val_clean']:.1f} % | "
                        f"{100 * pt['val_pgd20']:.1f} % | |")
    print("| candidate | epochs | train s (vanilla incl.) | val clean | val PGD-20 | |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
