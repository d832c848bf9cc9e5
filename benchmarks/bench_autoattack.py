"""AutoAttack for Keras vs IBM ART: agreement and time, side by side in one run.

On one model and the same test images it runs, at the same budget:

- our ``apgd_ce`` vs ART's ``AutoProjectedGradientDescent`` (cross-entropy);
- our ``apgd_t`` vs ART's APGD with the targeted DLR loss, run for each of the top
  ``--targets`` classes and kept per example as the worst case (what APGD-T does);
- our ``square`` vs ART's ``SquareAttack`` (L-inf, ``--queries`` queries);
- our ``autoattack`` (standard: APGD-CE, APGD-T, FAB-T, Square, per-example cascade)
  vs ART's ``AutoAttack`` (its default list: APGD-CE, APGD-DLR, DeepFool, Square).

It reports robust accuracy of each, the time each took, and the checks of the
evaluation issue: ours within 2 points of ART's (or lower) for each attack, our
AutoAttack never above any single attack of ours and at most 1 point above ART's
AutoAttack, and the time ratio of the two AutoAttacks (target: ours at least 2x faster).

Needs the bench extra (``pip install -e '.[bench]'``). Run:

    .venv/bin/python benchmarks/bench_autoattack.py --model runs/pat/model.keras --n 1000 \\
        --json docs/bench_autoattack.json

Without ``--model`` it first trains a small PGD-trained ``small_cnn`` (a vanilla epoch,
then one PGD-5 epoch on 20,000 images), so the comparison is made on a model with
non-trivial robust accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402
from keras_sns.training import RobustModel  # noqa: E402


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _model(path: str | None, eps: float) -> keras.Model:
    if path:
        return models.load(path)
    x, y, _ = data.load_arrays("fashion_mnist", "fit")
    keras.utils.set_random_seed(0)
    base = models.build("small_cnn")
    base.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    base.fit(x, y, epochs=1, batch_size=128, verbose=0)
    robust = RobustModel(base, method="pat", attack={"name": "pgd_linf", "eps": eps, "steps": 5,
                                                     "seed": 0})
    robust.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    robust.fit(x[:20000], y[:20000], epochs=1, batch_size=128, verbose=0)
    return base


def _accuracy(model, x_adv, y) -> float:
    logits = model.predict(np.asarray(x_adv, np.float32), batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, 1) == y))


def _timed(fn):
    start = time.perf_counter()
    out = np.asarray(fn(), np.float32)
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=1000, help="Test images (the first n).")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=100, help="APGD / FAB iterations.")
    p.add_argument("--targets", type=int, default=9, help="Target classes of APGD-T / FAB-T.")
    p.add_argument("--queries", type=int, default=5000, help="Square Attack queries.")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--skip-art-autoattack", action="store_true")
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = p.parse_args()

    from art.attacks.evasion import AutoAttack as ArtAutoAttack
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    eps, bs = args.eps, args.batch_size
    model = _model(args.model, eps)
    x, y, info = data.load_arrays("fashion_mnist", "test", limit=args.n)
    clf = TensorFlowV2Classifier(model, nb_classes=info.num_classes, input_shape=info.input_shape,
                                 loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                 clip_values=(0.0, 1.0))

    def ours(name, **params):
        attack = attacks.get(name, eps=eps, seed=0, **params)
        return lambda: np.concatenate([np.asarray(attack(model, x[i:i + bs], y[i:i + bs]))
                                       for i in range(0, len(x), bs)])

    def art_apgd_t():
        # APGD-T: the targeted DLR loss towards each of the top `targets` other classes,
        # worst case per example (an example stays robust only if every target failed).
        logits = model.predict(x, batch_size=256, verbose=0)
        order = np.argsort(-logits, axis=1)
        best = x.copy()
        robust = np.argmax(logits, 1) == y
        for t in range(1, args.targets + 1):
            idx = np.flatnonzero(robust)
            if not len(idx):
                break
            target = order[idx, t]
            apgd = AutoProjectedGradientDescent(
                clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=args.steps, targeted=True,
                nb_random_init=1, batch_size=bs, loss_type="difference_logits_ratio", verbose=False)
            found = apgd.generate(x[idx], target)
            fooled = np.argmax(model.predict(found, batch_size=256, verbose=0), 1) != y[idx]
            best[idx[fooled]] = found[fooled]
            robust[idx[fooled]] = False
        return best

    runs = {
        "ours apgd_ce": ours("apgd_ce", steps=args.steps),
        "art apgd_ce": lambda: AutoProjectedGradientDescent(
            clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=args.steps, nb_random_init=1,
            batch_size=bs, loss_type="cross_entropy", verbose=False).generate(x, y),
        "ours apgd_t": ours("apgd_t", steps=args.steps, n_target_classes=args.targets),
        "art apgd_t": art_apgd_t,
        "ours square": ours("square", n_queries=args.queries),
        "art square": lambda: SquareAttack(clf, norm=np.inf, eps=eps, max_iter=args.queries,
                                           p_init=0.8, nb_restarts=1, batch_size=bs,
                                           verbose=False).generate(x, y),
        "ours autoattack": ours("autoattack", steps=args.steps, n_queries=args.queries,
                                n_target_classes=args.targets),
    }
    if not args.skip_art_autoattack:
        runs["art autoattack"] = lambda: ArtAutoAttack(
            clf, norm=np.inf, eps=eps, eps_step=2 * eps, batch_size=bs).generate(x, y)

    acc = {"clean": _accuracy(model, x, y)}
    seconds = {}
    for name, fn in runs.items():
        x_adv, seconds[name] = _timed(fn)
        assert np.abs(x_adv - x).max() <= eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1, name
        acc[name] = _accuracy(model, x_adv, y)
        print(f"{name:<18} {100 * acc[name]:6.2f} %  {seconds[name]:8.1f} s", flush=True)

    checks = {f"{a}: ours <= art + 2 points": acc[f"ours {a}"] <= acc[f"art {a}"] + 0.02
              for a in ("apgd_ce", "apgd_t", "square")}
    singles = [acc[f"ours {a}"] for a in ("apgd_ce", "apgd_t", "square")]
    checks["our autoattack <= each single attack of ours"] = acc["ours autoattack"] <= min(singles)
    if "art autoattack" in acc:
        checks["our autoattack <= art autoattack + 1 point"] = (
            acc["ours autoattack"] <= acc["art autoattack"] + 0.01)
        ratio = seconds["art autoattack"] / seconds["ours autoattack"]
        checks["our autoattack >= 2x faster than art's"] = ratio >= 2.0
    for k, ok in checks.items():
        print(f"  {'OK  ' if ok else 'FAIL'} {k}")
    result = {"cpu": _cpu_model(), "args": vars(args), "accuracy": acc, "seconds": seconds,
              "checks": checks}
    print(json.dumps({"cpu": result["cpu"]}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
