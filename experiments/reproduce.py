"""Reproduce the paper on Fashion-MNIST: the Table III analogue and the claims C1-C8.

One command, resumable and seeded. Every finished piece is cached under ``--out``
(models as ``.keras``, everything else as small JSON) and skipped when the command runs
again, so a killed run loses at most the piece it was working on:

1. ``base``: the vanilla ``small_cnn`` every method fine-tunes from.
2. ``sweep``: the SNS hyperparameters (lambda, layers, freezing) chosen on the
   *validation* split (the last 10 % of train), never the test set: a lambda sweep on
   the default layers, then layer sets and freezing at the best lambda.
3. ``grid``: every method fine-tuned from the base model with the same budget (data,
   epochs, attack steps), over seeds.
4. ``eval``: every model on the test split: clean, FGSM, PGD-L-inf-20, PGD-L2, C&W-L2,
   AutoAttack (or APGD-CE + APGD-T), SPSA and NAttack on fixed subsets, Gaussian noise
   1-5, with 95 % Wilson intervals.
5. ``claims``: the section IV studies (C1-C5, C8) on the vanilla, PAT, TRADES and best
   SNS models.
6. ``report``: ``results.json`` (and figures) under ``--results``, for docs/results.md.

Run (the full budget is stated in :data:`FULL`; ``--quick`` is the tiny one the test
runs):

    .venv/bin/python experiments/reproduce.py --out runs/reproduce --results docs/results
    .venv/bin/python experiments/reproduce.py --quick --out /tmp/q --results /tmp/q/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402
from keras_sns.evaluation import evaluate  # noqa: E402
from keras_sns.files import atomic_save_model, atomic_write_json  # noqa: E402
from keras_sns.training import RobustModel  # noqa: E402

logger = logging.getLogger("reproduce")

EPS = 0.1  # Fashion-MNIST's L-inf radius
L2_EPS = 1.5  # PGD-L2 / the C&W success radius on 28x28 images (stated, not tuned)


@dataclass(frozen=True)
class Budget:
    """How much data, how many epochs and which evaluation subsets every method gets."""

    train_limit: int | None  # examples of the fit split each fine-tune sees
    vanilla_epochs: int
    epochs: int  # fine-tuning epochs, the same for every method
    steps: int  # training attack steps (PGD-10 in the paper)
    sweep_limit: int  # fit examples of a sweep run
    sweep_epochs: int
    val_limit: int  # validation examples scoring a sweep run
    test_limit: int  # test examples of clean / FGSM / PGD / L2 / noise
    cw_limit: int  # C&W-L2 subset
    autoattack_limit: int  # AutoAttack subset (>= 500 in the full budget)
    black_box_limit: int  # SPSA and NAttack subset (>= 200 in the full budget)
    autoattack_steps: int = 100
    eval_steps: int = 20  # PGD-L-inf / PGD-L2 steps of the evaluation
    square_queries: int = 5000
    cw_steps: int = 100
    spsa_iterations: int = 100
    nattack_iterations: int = 100
    lambdas: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
    layer_sets: tuple[str, ...] = ("conv3,conv4", "conv4", "conv2..conv4")
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 128


#: The full budget: sized to a few hours of background compute on the AVX512 CPU.
FULL = Budget(train_limit=20000, vanilla_epochs=3, epochs=2, steps=10, sweep_limit=10000,
              sweep_epochs=1, val_limit=1000, test_limit=2000, cw_limit=500,
              autoattack_limit=500, black_box_limit=200)
#: The ``--quick`` budget: every stage on a tiny subset, one epoch (minutes).
QUICK = Budget(train_limit=256, vanilla_epochs=1, epochs=1, steps=2, sweep_limit=128,
               sweep_epochs=1, val_limit=64, test_limit=64, cw_limit=16, autoattack_limit=16,
               black_box_limit=8, autoattack_steps=3, eval_steps=3, square_queries=10,
               cw_steps=3, spsa_iterations=1, nattack_iterations=1, lambdas=(0.2, 1.0),
               layer_sets=("conv3,conv4",), seeds=(0, 1))


@dataclass(frozen=True)
class Method:
    """One row of the table: RobustModel settings (``sns`` filled from the sweep)."""

    name: str
    method: str
    attack: str = "pgd_linf"
    selection: str | None = None  # SNS selection; None: no SNS term
    seeds: str = "one"  # "one" or "all"
    sns_on: str | None = None  # the base method the SNS term is added to (composed)
    full_autoattack: bool = False
    params: dict = field(default_factory=dict)


#: The grid of the reproduction issue.
METHODS = (
    Method("vanilla", "vanilla"),
    Method("pat", "pat", seeds="all", full_autoattack=True),
    Method("alp", "alp"),
    Method("trades", "trades", seeds="all", full_autoattack=True),
    Method("sns-sen", "sns", selection="sen", seeds="all", full_autoattack=True),
    Method("sns-dyn", "sns", selection="dyn"),
    Method("sns-ema", "sns", selection="ema"),
    Method("sns-all", "sns", selection="all"),
    Method("sns-rand", "sns", selection="rand", seeds="all"),
    Method("trades+sns", "trades", selection="sen", sns_on="trades", seeds="all",
           full_autoattack=True),
    Method("single-step", "pat", attack="fgsm_rs"),
    Method("single-step+sns", "sns", attack="fgsm_rs", selection="sen"),
)


# ------------------------------------------------------------------ helpers


def cpu_model() -> str:
    """The CPU's model name (``lscpu``), recorded with every timing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion ``correct / n``."""
    if n <= 0:
        raise ValueError(f"Expected n >= 1. Received: n={n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_interval(values: list[float]) -> dict[str, float]:
    """Mean over seeds and its 95 % t-interval half-width (0 for one seed)."""
    t95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "half_width": 0.0, "n": len(values)}
    half = t95.get(len(values), 1.96) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return {"mean": mean, "half_width": half, "n": len(values)}


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _compile(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Runner:
    """The stages, each cached under ``out``; see the module docstring."""

    def __init__(self, out: Path, results: Path, budget: Budget, quick: bool):
        self.out, self.results, self.budget, self.quick = out, results, budget, quick
        self.out.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        b = budget
        self.fit = data.load_arrays("fashion_mnist", "fit", limit=b.train_limit)[:2]
        self.val = data.load_arrays("fashion_mnist", "validation", limit=b.val_limit)[:2]
        self.test = data.load_arrays("fashion_mnist", "test", limit=b.test_limit)[:2]
        self.log = _load_json(out / "timings.json") or {}

    def _timed(self, key: str, fn):
        start = time.perf_counter()
        result = fn()
        self.log[key] = round(time.perf_counter() - start, 1)
        atomic_write_json(self.out / "timings.json", self.log)
        return result

    # ---------------------------------------------------------------- base

    def base(self) -> Path:
        path = self.out / "base" / "model.keras"
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)

        def train():
            keras.utils.set_random_seed(0)
            x, y = data.load_arrays("fashion_mnist", "fit")[:2]
            if self.quick:
                x, y = x[: self.budget.train_limit], y[: self.budget.train_limit]
            model = _compile(models.build("small_cnn"))
            model.fit(x, y, epochs=self.budget.vanilla_epochs, batch_size=self.budget.batch_size,
                      verbose=0)
            atomic_save_model(model, path)

        self._timed("base", train)
        return path

    # ---------------------------------------------------------------- fine-tuning

    def _fine_tune(self, key: str, spec: dict, x, y, epochs: int, seed: int) -> Path:
        """Fine-tune the base model with RobustModel settings ``spec``; cached by key."""
        path = self.out / key / "model.keras"
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)

        def train():
            keras.utils.set_random_seed(seed)
            base = models.load(self.base())
            if spec["method"] == "vanilla":
                model = _compile(base)
                model.fit(x, y, epochs=epochs, batch_size=self.budget.batch_size, verbose=0)
            else:
                kwargs = {k: v for k, v in spec.items() if k not in ("attack",)}
                attack = {"name": spec.get("attack", "pgd_linf"), "eps": EPS, "seed": seed}
                if attack["name"] == "pgd_linf":
                    attack["steps"] = self.budget.steps
                robust = _compile(RobustModel(base, attack=attack, seed=seed, **kwargs))
                robust.fit(x, y, epochs=epochs, batch_size=self.budget.batch_size, verbose=0)
            for layer in base.layers:  # a plain, fully trainable model goes to disk
                layer.trainable = True
            atomic_save_model(base, path)
            atomic_write_json(path.parent / "spec.json", {"spec": spec, "seed": seed,
                                                          "epochs": epochs, "examples": len(x)})

        self._timed(key, train)
        return path

    # ---------------------------------------------------------------- sweep

    def _score(self, path: Path) -> dict:
        """Validation clean and PGD-20 accuracy (the sweep's score)."""
        cache = path.parent / "validation.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        model = models.load(path)
        pgd = attacks.get("pgd_linf", eps=EPS, steps=self.budget.eval_steps, seed=0)
        result = evaluate(model, self.val, [pgd], cascade=False, checks=False)
        score = {"clean": result.clean_accuracy, "pgd20": result.rows[0].accuracy,
                 "n": result.num_examples}
        atomic_write_json(cache, score)
        return score

    def _sweep_run(self, lam: float, layers: str, freeze: bool) -> dict:
        key = f"sweep/lam{lam:g}_{layers.replace(',', '+').replace('..', '-')}_{'frozen' if freeze else 'all'}"
        b = self.budget
        spec = {"method": "sns", "selection": "sen", "layers": layers, "lam": lam, "k": 0.1,
                "freeze_below": freeze}
        x, y = self.fit[0][: b.sweep_limit], self.fit[1][: b.sweep_limit]
        path = self._fine_tune(key, spec, x, y, b.sweep_epochs, seed=0)
        return {"lam": lam, "layers": layers, "freeze_below": freeze, **self._score(path)}

    def sweep(self) -> dict:
        """Coordinate search on validation PGD-20 accuracy: lambda, then layers, then freezing."""
        cache = self.out / "sweep" / "chosen.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        b = self.budget
        runs = [self._sweep_run(lam, b.layer_sets[0], False) for lam in b.lambdas]
        best = max(runs, key=lambda r: (r["pgd20"], r["clean"]))
        runs += [self._sweep_run(best["lam"], layers, False) for layers in b.layer_sets[1:]]
        best = max(runs, key=lambda r: (r["pgd20"], r["clean"]))
        runs.append(self._sweep_run(best["lam"], best["layers"], True))
        best = max(runs, key=lambda r: (r["pgd20"], r["clean"]))
        # The PAT reference at the same sweep budget, for the doc's comparison.
        pat = self._score(self._fine_tune("sweep/pat", {"method": "pat"}, self.fit[0][: b.sweep_limit],
                                          self.fit[1][: b.sweep_limit], b.sweep_epochs, seed=0))
        chosen = {"chosen": {k: best[k] for k in ("lam", "layers", "freeze_below")},
                  "score": {k: best[k] for k in ("clean", "pgd20")}, "runs": runs,
                  "pat_reference": pat, "criterion": "validation PGD-20 accuracy, then clean"}
        atomic_write_json(cache, chosen)
        return chosen

    # ---------------------------------------------------------------- grid

    def grid_specs(self, chosen: dict) -> list[tuple[str, dict, int, Method]]:
        """(key, RobustModel settings, seed, method) of every model of the grid."""
        sns = chosen["chosen"]
        out = []
        for m in METHODS:
            spec: dict[str, Any] = {"method": m.method, "attack": m.attack, **m.params}
            if m.selection is not None:
                term = {"layers": sns["layers"], "lam": sns["lam"], "k": 0.1,
                        "selection": m.selection}
                if m.sns_on:  # the SNS term composed with another adversarial loss
                    spec["sns"] = term
                else:
                    spec.update(term, freeze_below=sns["freeze_below"])
            seeds = self.budget.seeds if m.seeds == "all" else self.budget.seeds[:1]
            out += [(f"grid/{m.name}/seed{s}", spec, s, m) for s in seeds]
        return out

    def grid(self, chosen: dict, methods: tuple[str, ...] | None = None
             ) -> list[tuple[str, Path, Method]]:
        b = self.budget
        done = []
        for key, spec, seed, m in self.grid_specs(chosen):
            if methods is not None and m.name not in methods:
                continue
            epochs = b.epochs
            logger.info("training %s", key)
            path = self._fine_tune(key, spec, self.fit[0], self.fit[1], epochs, seed)
            done.append((key, path, m))
        return done

    # ---------------------------------------------------------------- evaluation

    def _attack_list(self, m: Method) -> dict[str, list]:
        b = self.budget
        full = {
            "fgsm": attacks.get("fgsm", eps=EPS),
            "pgd20": attacks.get("pgd_linf", eps=EPS, steps=b.eval_steps, seed=0),
            "pgd_l2": attacks.get("pgd_l2", eps=L2_EPS, steps=b.eval_steps, seed=0),
            **{f"noise{s}": attacks.get("gaussian_noise", severity=s, seed=0) for s in range(1, 6)},
        }
        if m.full_autoattack:
            aa = [attacks.get("autoattack", eps=EPS, steps=b.autoattack_steps,
                              n_queries=b.square_queries, seed=0)]
        else:
            aa = [attacks.get("apgd_ce", eps=EPS, steps=b.autoattack_steps, seed=0),
                  attacks.get("apgd_t", eps=EPS, steps=b.autoattack_steps, seed=0)]
        return {
            "full": full,
            "cw": {"cw_l2": attacks.get("cw_l2", iterations=b.cw_steps,
                                        binary_search_steps=1 if self.quick else 3)},
            "autoattack": {"autoattack" if m.full_autoattack else "apgd_ce+apgd_t": aa},
            "black_box": {
                "spsa": attacks.get("spsa", eps=EPS, iterations=b.spsa_iterations, seed=0),
                "nattack": attacks.get("nattack", eps=EPS, iterations=b.nattack_iterations, seed=0),
            },
        }

    def evaluate_model(self, key: str, path: Path, m: Method) -> dict:
        cache = path.parent / "evaluation.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        model = models.load(path)
        b = self.budget
        x, y = self.test
        limits = {"full": b.test_limit, "cw": b.cw_limit, "autoattack": b.autoattack_limit,
                  "black_box": b.black_box_limit}
        rows: dict[str, dict] = {}
        clean = None
        for group, named in self._attack_list(m).items():
            n = limits[group]
            singles = {k: a for k, a in named.items() if not isinstance(a, list)}
            ensembles = {k: a for k, a in named.items() if isinstance(a, list)}
            runs = []
            if singles:  # one pass over the subset, each attack on its own
                start = time.perf_counter()
                result = evaluate(model, (x[:n], y[:n]), list(singles.values()), cascade=False,
                                  checks=False)
                runs += [(k, result, r.accuracy, r.seconds, None)
                         for k, r in zip(singles, result.rows)]
            for k, parts in ensembles.items():  # one worst-case cascade over its parts
                start = time.perf_counter()
                result = evaluate(model, (x[:n], y[:n]), parts, cascade=True, checks=False)
                runs.append((k, result, result.robust_accuracy,
                             round(time.perf_counter() - start, 1),
                             {r.name: r.accuracy for r in result.rows}))
            for k, result, acc, seconds, stages in runs:
                total = result.num_examples
                rows[k] = {"accuracy": acc, "ci95": list(wilson(round(acc * total), total)),
                           "n": total, "clean_accuracy": result.clean_accuracy,
                           "seconds": seconds, "warnings": result.warnings}
                if stages:
                    rows[k]["stages"] = stages
            if group == "full":
                total = result.num_examples
                clean = {"accuracy": result.clean_accuracy, "n": total,
                         "ci95": list(wilson(round(result.clean_accuracy * total), total))}
        evaluation = {"clean": clean, "attacks": rows, "model": key}
        atomic_write_json(cache, evaluation)
        self.log[f"eval:{key}"] = round(sum(r["seconds"] for r in rows.values()), 1)
        atomic_write_json(self.out / "timings.json", self.log)
        return evaluation

    # ---------------------------------------------------------------- claims

    def claims(self, trained: list[tuple[str, Path, Method]]) -> dict:
        """The section IV studies on vanilla, PAT, TRADES and SNS-sen (seed 0), summarised."""
        from keras_sns.studies import AnalysisConfig, AttackSpec, run_analysis

        cache = self.out / "claims" / "claims.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        paths = {"vanilla": self.base()}
        paths.update({key.split("/")[1]: path for key, path, _ in trained
                      if key.endswith("seed0") and key.split("/")[1] in ("pat", "trades", "sns-sen")})
        loaded = {label: models.load(p) for label, p in paths.items()}
        n = self.budget.autoattack_limit
        x, y = self.test[0][:n], self.test[1][:n]
        layers = ("conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "conv4", "relu4", "fc1",
                  "fc1_relu")
        attack = AttackSpec("pgd_linf", {"eps": EPS, "steps": self.budget.eval_steps, "seed": 0})
        out = self.out / "claims"
        start = time.perf_counter()
        run_analysis(loaded, x, y, AnalysisConfig(attack=attack, layers=layers,
                                                   studies=("profile", "ratio")),
                     out / "all")
        fractions = (0.5, 1.0) if self.quick else (0.25, 0.5, 1.0, 1.5, 2.0)
        quick = {"classes": (0, 1), "betas": (1.0, 0.5), "repeats": 1} if self.quick else {}
        run_analysis({"vanilla": loaded["vanilla"]}, x, y,
                     AnalysisConfig(attack=attack, layers=layers,
                                    sweep_values=tuple(EPS * f for f in fractions),
                                    studies=("targeted", "suppression", "eps-sweep"),
                                    suppress_layer="relu4", **quick),
                     out / "vanilla")
        summary = summarise_claims(out)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        atomic_write_json(cache, summary)
        return summary

    # ---------------------------------------------------------------- report

    def report(self, chosen: dict, evaluations: dict[str, dict]) -> dict:
        """Per method: every seed's numbers, and the mean with its seed interval."""
        table: dict[str, dict] = {}
        for key, ev in evaluations.items():
            method = key.split("/")[1]
            entry = table.setdefault(method, {"seeds": {}, "summary": {}})
            entry["seeds"][key.split("/")[2]] = ev
        for method, entry in table.items():
            evs = list(entry["seeds"].values())
            entry["summary"]["clean"] = seed_interval([e["clean"]["accuracy"] for e in evs])
            for name in evs[0]["attacks"]:
                entry["summary"][name] = seed_interval([e["attacks"][name]["accuracy"] for e in evs])
        result = {"budget": dataclasses.asdict(self.budget), "quick": self.quick, "cpu": cpu_model(),
                  "eps": EPS, "l2_eps": L2_EPS, "sweep": chosen, "table": table,
                  "claims": _load_json(self.out / "claims" / "claims.json"),
                  "timings_seconds": self.log,
                  "command": " ".join(["experiments/reproduce.py", *sys.argv[1:]])}
        atomic_write_json(self.results / "reproduce.json", result)
        return result

    def run(self, stages: tuple[str, ...], methods: tuple[str, ...] | None = None) -> dict:
        self.base()
        chosen = self.sweep() if "sweep" in stages else _load_json(self.out / "sweep" / "chosen.json")
        if chosen is None:
            raise SystemExit("The sweep has not run yet: run the 'sweep' stage first.")
        trained = self.grid(chosen, methods) if "grid" in stages else []
        evaluations = {}
        if "eval" in stages:
            for key, path, m in trained or []:
                logger.info("evaluating %s", key)
                evaluations[key] = self.evaluate_model(key, path, m)
        if "claims" in stages:
            self.claims(trained)
        return self.report(chosen, evaluations)


def summarise_claims(out: Path) -> dict:
    """The numbers of C1-C5 and C8 from the studies' JSON files under ``out``."""
    targeted = _load_json(out / "vanilla" / "targeted.json") or {}
    classes = targeted.get("classes", {})
    spearman = {t: e["spearman"] for t, e in classes.items() if e.get("num_success")}
    report = (_load_json(out / "all" / "sensitivity.json") or {}).get("models", {})
    sigma = {label: {layer: stats["mean_sigma"] for layer, stats in entry["layers"].items()}
             for label, entry in report.items()}
    suppression = (_load_json(out / "vanilla" / "suppression.json") or {}).get("results", {})
    sweep = _load_json(out / "vanilla" / "eps_sweep.json") or {}
    ratio = sweep.get("models", {}).get("vanilla", {}).get("mean_ratio", {})
    return {
        "C1_spearman_per_class": spearman,
        "C1_mean_spearman": targeted.get("mean_spearman"),
        "C2_layers": targeted.get("layers"),
        "C3_suppression": {"sensitive": suppression.get("sensitive"),
                           "random": suppression.get("random")},
        "C4_C8_mean_sigma": sigma,
        "C5_ratio_vs_eps": {"values": sweep.get("values"), "mean_ratio": ratio},
    }


STAGES = ("base", "sweep", "grid", "eval", "claims", "report")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/reproduce", help="Cache of models and results.")
    p.add_argument("--results", default="docs/results", help="Where results.json goes.")
    p.add_argument("--quick", action="store_true", help="The tiny budget (minutes).")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"Comma-separated stages to run, of {', '.join(STAGES)}.")
    p.add_argument("--methods", default=None,
                   help="Comma-separated grid rows to train and evaluate (default: all of "
                        f"{', '.join(m.name for m in METHODS)}).")
    args = p.parse_args(argv)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; expected some of {', '.join(STAGES)}")
    methods = None
    if args.methods:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        bad = [m for m in methods if m not in {x.name for x in METHODS}]
        if bad:
            p.error(f"unknown method(s) {bad}; expected some of {', '.join(x.name for x in METHODS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    runner = Runner(Path(args.out), Path(args.results), QUICK if args.quick else FULL, args.quick)
    return runner.run(stages, methods)


if __name__ == "__main__":
    main()
