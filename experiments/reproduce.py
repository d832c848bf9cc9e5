"""Reproduce the paper on Fashion-MNIST: the Table III analogue and the claims C1-C8.

One command, resumable and seeded. Every finished piece is cached under ``--out``
(models as ``.keras``, everything else as small JSON) and skipped when the command runs
again, so a killed run loses at most the piece it was working on (one model's training,
one attack of one evaluation, one AutoAttack stage, or one chunk of 50 images of SPSA or
NAttack). The cache is not committed (models are not), but everything the report needs
is: an empty cache (a fresh checkout) is first seeded from ``<results>/reproduce.json``
(:meth:`Runner.restore`: the sweeps' choices, every finished evaluation with its attack
pieces, per-image AutoAttack results, black-box chunks done so far, the paired
comparisons, the studies' numbers, the timings). A model is trained again (seeded, in
float32: the same model on every CPU this has run on, which the runner checks against
the committed clean and FGSM accuracy) only when a piece still needs it. ``--seeds``
and ``--methods`` pick grid rows. The stages:

1. ``base``: the vanilla ``small_cnn`` every method fine-tunes from.
2. ``sweep``: the SNS hyperparameters (lambda, layers, freezing) chosen on the
   *validation* split (the last 10 % of train), never the test set: a lambda sweep on
   the default layers, then layer sets and freezing at the best lambda, and PAT at the
   same budget as the reference; then TRADES' beta (1, 2, 3, 6, and one step beyond
   the grid's edge when the best is there) by the same rule, so
   the baseline SNS is compared with gets the tuning SNS gets. It runs first: every SNS
   variant and every TRADES row needs its choice. A grid model cached with other
   settings than the plan's (TRADES at the default beta 6, trained before the TRADES
   sweep existed) is moved aside to ``<folder>.superseded<N>``, evaluations included,
   and trained again.
3. ``grid`` and ``eval``, interleaved: each model is fine-tuned from the base model and
   then evaluated on the test split before the next one is trained, in priority order
   (:func:`run_order`): seed 0 of PAT, SNS-sen, TRADES, TRADES+SNS and vanilla; then the
   ``claims`` studies (they need those models); then seed 0 of every other method; then
   seed 1 of the methods run over seeds, then seed 2. A partial run therefore always
   has complete rows for the most important methods. Evaluation: clean, FGSM,
   PGD-L-inf-20, PGD-L2, Gaussian noise 1-5 on the test subset; C&W-L2; AutoAttack or
   APGD-CE + APGD-T as a worst-case cascade; SPSA and NAttack; 95 % Wilson intervals.
4. ``claims``: the section IV studies (C1-C5, C8) on the vanilla, PAT, TRADES and SNS-sen
   (seed 0) models.
5. ``report``: under ``--results``, from whatever is finished (rows not done yet are
   "pending"): ``reproduce.json`` (every number, small), ``table.md`` (the Table III
   analogue with 95 % intervals, and what each piece cost; :mod:`experiments.report`),
   ``claims.md`` (each claim's rule and verdict; :mod:`experiments.claims`),
   ``timings.json`` (a copy of the cache's) and ``figures/*.png``. ``reproduce.json``,
   ``table.md`` and ``claims.md`` are also rewritten after every evaluated model; the
   figures only by this stage, so ``--stages report`` redraws everything from the cache
   while a run goes on.

Budget (:data:`FULL`), the same for every method. Each fine-tune sees the first 12,800
examples of the fit split for 2 epochs (100 steps of 128 per epoch, 200 steps) with a
10-step training attack (PGD-10 at eps 0.1, the paper's; TRADES' KL attack with 10
steps; the one exception, ``single-step+sns-3x``, trains single-step SNS for 6 epochs,
about PAT's cost); the base model trains 3 clean epochs on the whole fit split; every sweep run
gets the grid's own training budget (12,800 examples, 2 epochs: a setting is chosen
under the conditions it is used in; a first try with 50 steps per run left every lambda
from 0.05 to 2 within 2 points of validation PGD-20, 51.7-53.6 %, inside the noise) and
scores on 2,000 validation images. Evaluation:
clean, FGSM, PGD-20, PGD-L2 and noise on the first 2,000 test images; C&W-L2 and
AutoAttack on the first 500; SPSA and NAttack (the paper's settings: 100 iterations,
512 directions / a population of 300) on the first 200. Full standard AutoAttack
(APGD-CE, APGD-T, FAB-T, Square with 5,000 queries) for seed 0 of PAT, TRADES, the best
SNS (SNS-sen) and TRADES+SNS, the models the question turns on; APGD-CE + APGD-T
(AutoAttack's first two stages, the same attacks with the same seed) for every other
model and seed. SPSA and NAttack for those same four models, seed 0 only
(``black_box_scope="full_autoattack"``).

Why this size. The issue asks for about 8 hours of background compute on the AVX2-only
EPYC and 2-3 on the AVX512 one. Measured on the AVX512 EPYC (2 CPUs, float32, under a
load of 4-8, so in CPU seconds rather than wall seconds; 2026-11-30): a PGD-10 (or
TRADES) training step of 128 images takes 1.37 CPU s; on 128 test images PGD-20 takes
1.8, C&W-L2 (3 x 100 iterations) 28, APGD-CE 13, APGD-T 47 (up to about 120 on robust
images), FAB-T 86 and Square 134 CPU s; SPSA 37 and NAttack 11 CPU s *per image*. So
the 23 fine-tunes, the base model and the 10 sweep runs cost about 2.8 CPU hours, the white-box
evaluation of the 23 models about 3.3 and the studies well under one: about 3.5 hours of
wall time on the two idle cores of the fast CPU, about 10 on the slow one. SPSA and
NAttack at the paper's settings on 200 images (170 or so classified correctly, the only
ones attacked) cost about 2.3 CPU hours *per model*: 50 for the whole grid, 9 for the
four models above, which adds about 4.5 hours on the fast CPU (13 on the slow one).
Hence the scope, and even so the black-box attacks are more than half of the run;
``black_box_scope="all"`` restores them for every model, ``Budget(...,
spsa_iterations=...)`` or a smaller ``black_box_limit`` trades them for time. The data,
not the steps, were cut: every model keeps the paper's 10-step attack and the same 2
epochs, and the evaluation subsets keep the sizes the issue asks for (at least 500 for
AutoAttack, 200 for the black-box attacks). ``timings.json`` holds what each piece
really cost.

Precision: everything runs in float32 whatever the CPU (``--precision auto`` would pick
bfloat16 on the AVX512-BF16 EPYC and float32 on the AVX2 one), so that a grid resumed on
another CPU stays comparable: every model of the table is trained and attacked in the
same arithmetic.

Timings: every piece (base, each sweep run and its score, each model's training, each
attack of each evaluation, each AutoAttack stage, each study) records in
``<out>/timings.json`` its wall seconds (``wall_s``) and the process' CPU seconds
(``cpu_s``, :func:`time.process_time`: all threads), the CPU model, the 1-minute load
average at its start and end, the niceness and when it started and finished, so numbers
measured under contention are readable (``cpu_s / wall_s`` well below the core count and a
high load mean the piece shared the CPU).

Run (``--quick`` is the tiny budget the test runs):

    nice -n 19 .venv/bin/python experiments/reproduce.py --out runs/reproduce --results docs/results
    .venv/bin/python experiments/reproduce.py --out runs/reproduce --results docs/results --stages report
    .venv/bin/python experiments/reproduce.py --quick --out /tmp/q --results /tmp/q/results
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402
from keras_sns.config import DEFAULT_BETA, default_train_attack  # noqa: E402
from keras_sns.evaluation import evaluate, generate_adversarial  # noqa: E402
from keras_sns.files import atomic_save_model, atomic_write_json, atomic_write_text  # noqa: E402
from keras_sns.precision import read_cpu  # noqa: E402
from keras_sns.studies import AnalysisConfig, AttackSpec, run_analysis  # noqa: E402
from keras_sns.training import RobustModel  # noqa: E402

from experiments.claims import PAIRED, claims_markdown, summarise_claims  # noqa: E402
from experiments.report import (  # noqa: E402
    cpus_seen,
    draw_figures,
    paired_difference,
    seed_interval,
    summarise_method,
    table_markdown,
    wilson,
)

logger = logging.getLogger("reproduce")

EPS = 0.1  # Fashion-MNIST's L-inf radius
L2_EPS = 1.5  # PGD-L2 / the C&W success radius on 28x28 images (stated, not tuned)
PRECISION = "float32"  # every model, whatever the CPU (see the module docstring)


#: The values of :attr:`Budget.black_box_scope`.
BLACK_BOX_SCOPES = ("all", "seed0", "full_autoattack")


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
    #: TRADES' beta, chosen on validation like SNS' lambda (6 is the TRADES paper's).
    trades_betas: tuple[float, ...] = (1.0, 2.0, 3.0, 6.0)
    layer_sets: tuple[str, ...] = ("conv3,conv4", "conv4", "conv2..conv4")
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 128
    #: Which models SPSA and NAttack evaluate: "all" (every model and seed), "seed0"
    #: (seed 0 of every method) or "full_autoattack" (seed 0 of the four models that
    #: get the full AutoAttack). The others show "—" in the table.
    black_box_scope: str = "all"
    #: SPSA and NAttack run (and are cached, and committed) this many images at a time:
    #: on 200 images each is an hour or more per model, longer than a session may last.
    black_box_chunk: int = 50

    def __post_init__(self) -> None:
        if self.black_box_scope not in BLACK_BOX_SCOPES:
            raise ValueError(f"Expected black_box_scope in {BLACK_BOX_SCOPES}. "
                             f"Received: black_box_scope={self.black_box_scope!r}")


#: The full budget (see the module docstring for its size and why): 100 steps of 128 per
#: fine-tuning epoch, 2 epochs, PGD-10; the base model trains 3 epochs on the whole fit split.
FULL = Budget(train_limit=12800, vanilla_epochs=3, epochs=2, steps=10, sweep_limit=12800,
              sweep_epochs=2, val_limit=2000, test_limit=2000, cw_limit=500,
              autoattack_limit=500, black_box_limit=200, black_box_scope="full_autoattack")
#: The ``--quick`` budget: every stage on a tiny subset, one epoch (about a minute).
QUICK = Budget(train_limit=256, vanilla_epochs=1, epochs=1, steps=2, sweep_limit=128,
               sweep_epochs=1, val_limit=64, test_limit=64, cw_limit=16, autoattack_limit=16,
               black_box_limit=8, autoattack_steps=3, eval_steps=3, square_queries=10,
               cw_steps=3, spsa_iterations=1, nattack_iterations=1, lambdas=(0.2, 1.0),
               trades_betas=(1.0, 6.0), layer_sets=("conv3,conv4",), seeds=(0, 1),
               black_box_chunk=4)


@dataclass(frozen=True)
class Method:
    """One row of the table: RobustModel settings (``sns`` filled from the sweep)."""

    name: str
    method: str
    attack: str | None = None  # training attack; None: the method's own (trades_kl for TRADES)
    selection: str | None = None  # SNS selection; None: no SNS term
    seeds: str = "one"  # "one" or "all"
    sns_on: str | None = None  # the base method the SNS term is added to (composed)
    full_autoattack: bool = False  # standard AutoAttack on seed 0 (else APGD-CE + APGD-T)
    #: Epochs as a multiple of the budget's: only the equal-cost single-step row differs.
    epochs_factor: int = 1
    params: dict = field(default_factory=dict)

    @property
    def train_attack(self) -> str:
        """The training attack's registry name."""
        return self.attack or default_train_attack(self.method)


#: The grid of the reproduction issue, in the table's order.
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
    # The same for 3x the epochs: a single-step SNS step costs about a third of a PGD-10
    # step, so this row costs about what PAT's does (the single-step question's
    # equal-cost point; ``timings.json`` has the measured CPU seconds: 1.2x PAT's on
    # seed 0).
    Method("single-step+sns-3x", "sns", attack="fgsm_rs", selection="sen", epochs_factor=3),
)

#: Trained and evaluated first (seed 0), in this order: a partial run has their rows.
PRIORITY = ("pat", "sns-sen", "trades", "trades+sns", "vanilla")

#: The fine-tuned models (seed 0) the claims' studies compare with the base model.
CLAIM_MODELS = ("pat", "trades", "sns-sen")

# ------------------------------------------------------------------ helpers


#: The vector extensions that set the speed of this grid, fastest first.
ISAS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_description() -> dict[str, Any]:
    """The CPU as recorded with every timing: model name, best vector extension, CPUs.

    The model name alone does not tell two machines of this project apart (both read
    "AMD EPYC"; one has AVX512, the other only AVX2 and is about 3x slower), hence the
    extension (the best of :data:`ISAS` in the CPU flags) and the CPUs this process may use.

    Returns:
        ``{"cpu_model", "cpu_isa", "cpus"}``.

    Example:
        >>> cpu_description()  # doctest: +SKIP
        {'cpu_model': 'AMD EPYC', 'cpu_isa': 'avx512_bf16', 'cpus': 2}
    """
    model, flags = read_cpu()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count()
    return {"cpu_model": model, "cpu_isa": next((f for f in ISAS if f in flags), "other"),
            "cpus": cpus}


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def run_order(methods: Sequence[Method] = METHODS, seeds: Sequence[int] = (0, 1, 2),
              priority: Sequence[str] = PRIORITY) -> list[tuple[Method, int]]:
    """The order models are trained and evaluated in: ``(method, seed)`` pairs.

    Seed 0 of the ``priority`` methods (in that order), then seed 0 of the others (in
    ``methods`` order), then each further seed of the methods run over every seed.
    """
    by_name = {m.name: m for m in methods}
    ranked = [by_name[n] for n in priority if n in by_name]
    ranked += [m for m in methods if m.name not in priority]
    order = [(m, seeds[0]) for m in ranked]
    for s in seeds[1:]:
        order += [(m, s) for m in ranked if m.seeds == "all"]
    return order


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _compile(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _row(accuracy: float, n: int, clean_accuracy: float, **extra) -> dict[str, Any]:
    return {"accuracy": accuracy, "ci95": list(wilson(round(accuracy * n), n)), "n": n,
            "clean_accuracy": clean_accuracy, **extra}


@dataclass(frozen=True)
class Planned:
    """One model of the grid: where it goes, its RobustModel settings, seed and row."""

    key: str
    spec: dict | None  # None until the sweep has chosen the SNS settings
    seed: int
    method: Method


def _check_budget(path: Path, budget: Budget) -> None:
    """Record the budget of a cache on first use; refuse to resume it with another one.

    A field the record lacks (one added to :class:`Budget` after the cache was made, such
    as ``trades_betas``) is added to it: it governs pieces the cache does not hold yet.
    """
    wanted = json.loads(json.dumps(dataclasses.asdict(budget)))  # tuples as lists
    recorded = _load_json(path)
    if recorded is not None and set(recorded) < set(wanted):
        added = sorted(set(wanted) - set(recorded))
        logger.info("budget fields added to %s: %s", path, ", ".join(added))
        recorded = {**recorded, **{k: wanted[k] for k in added}}
        if recorded == wanted:
            atomic_write_json(path, wanted)
    if recorded is None:
        atomic_write_json(path, wanted)
    elif recorded != wanted:
        changed = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
        raise SystemExit(
            f"{path.parent} holds pieces made with another budget ({', '.join(changed)} "
            "differ): resuming would mix them. Use another --out, or delete the folder.")


def _best(runs: Sequence[dict]) -> dict:
    """The sweeps' rule: the run of highest validation PGD-20 accuracy, then clean."""
    return max(runs, key=lambda r: (r["pgd20"], r["clean"]))


def _same_spec(recorded: dict, planned: dict) -> bool:
    """Whether a model made with RobustModel settings ``recorded`` is the one ``planned``
    asks for; a beta left out means the method's default (caches made before the TRADES
    sweep record none)."""
    def resolved(spec: dict) -> dict:
        spec = json.loads(json.dumps(spec))
        if spec["method"] in DEFAULT_BETA:
            spec.setdefault("beta", DEFAULT_BETA[spec["method"]])
        return spec
    return resolved(recorded) == resolved(planned)


def encode_mask(mask: np.ndarray) -> str:
    """Per-image booleans as a hex string (4 images per digit; :func:`decode_mask`).

    Example:
        >>> encode_mask(np.array([True, False, False, False, False, False, False, True, True]))
        '8180'
    """
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes().hex()


def decode_mask(text: str, n: int) -> np.ndarray:
    """The ``n`` booleans :func:`encode_mask` wrote as ``text``."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))
    if len(bits) < n:
        raise ValueError(f"Expected at least {n} bits. Received: {len(bits)} in {text!r}")
    return bits[:n].astype(bool)


def merge_claims(restored: dict | None, live: dict) -> dict:
    """The studies' numbers: ``live`` (from this cache's studies) where they ran, else the
    ``restored`` ones (from the committed report); per-model tables are merged model by
    model, ``live`` winning."""
    def empty(value: Any) -> bool:  # a study not run: None, 0, {} or only such values
        return not value or isinstance(value, dict) and all(empty(v) for v in value.values())

    if not restored:
        return live
    out = {}
    for key in set(restored) | set(live):
        r, v = restored.get(key), live.get(key)
        if key == "C4_C8_mean_sigma" and isinstance(r, dict):
            out[key] = {**r, **(v or {})}
        else:
            out[key] = r if empty(v) else v
    return out


def _judge_reproduction(key: str, check: dict) -> None:
    """Set ``check["same"]``: every recomputed number of a retrained model equals the
    committed one (else a warning)."""
    check["same"] = all(v["committed"] == v["recomputed"]
                        for v in check.values() if isinstance(v, dict))
    if not check["same"]:
        logger.warning("%s trained again does not give its committed numbers: %s", key, check)


class Runner:
    """The stages, each cached under ``out``; see the module docstring."""

    def __init__(self, out: Path, results: Path, budget: Budget, quick: bool,
                 command: str = "experiments/reproduce.py"):
        self.out, self.results, self.budget, self.quick = out, results, budget, quick
        self.command = command  # recorded in the report
        self.out.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        _check_budget(self.out / "budget.json", budget)
        # float32 whatever the CPU: a grid resumed on another CPU stays comparable.
        keras.config.set_dtype_policy(PRECISION)
        self.cpu = cpu_description()
        b = budget
        self.fit = data.load_arrays("fashion_mnist", "fit", limit=b.train_limit)[:2]
        self.val = data.load_arrays("fashion_mnist", "validation", limit=b.val_limit)[:2]
        self.test = data.load_arrays("fashion_mnist", "test", limit=b.test_limit)[:2]

    # ---------------------------------------------------------------- timings

    @property
    def timings_path(self) -> Path:
        """``<out>/timings.json``: the one place every piece's cost is recorded."""
        return self.out / "timings.json"

    def timings(self) -> dict[str, dict]:
        """Every finished piece's timing (``<out>/timings.json``)."""
        return _load_json(self.timings_path) or {}

    def _timed(self, key: str, fn: Callable[[], Any], **info) -> Any:
        """Run ``fn`` and record its wall and CPU seconds as piece ``key``."""
        entry: dict[str, Any] = {**info, **self.cpu, "nice": os.nice(0),
                                 "load1_start": load_average(), "started": time.time()}
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        if key in self._restored_timings:  # done again after a restore: the first timing stays
            key, entry["kind"] = f"rerun:{key}", f"rerun-{entry.get('kind', 'piece')}"
        entry.update(wall_s=round(time.perf_counter() - wall, 2),
                     cpu_s=round(time.process_time() - cpu, 2), load1_end=load_average(),
                     finished=time.time(),
                     finished_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        log = self.timings()  # re-read: another process may have added pieces
        log[key] = entry
        atomic_write_json(self.timings_path, log)
        logger.info("%s: %.1f s wall, %.1f s CPU", key, entry["wall_s"], entry["cpu_s"])
        return result

    # ---------------------------------------------------------------- restoring

    def restore(self) -> dict | None:
        """Seed an empty cache from the committed report (``<results>/reproduce.json``).

        Models are never committed (they are retrained, seeded, when a piece needs them),
        and a fresh checkout has no cache: this puts back what the report holds, so
        that finished work is not redone. Written into ``out``: the sweeps' choices;
        for every finished model, its ``evaluation.json`` (marked ``restored``) and the
        attack pieces it was made of, so only what is still pending runs; the paired
        comparisons per seed (``restored_paired.json``), the studies' numbers
        (``claims/restored.json``) and the timings. Done once per cache
        (``restored.json``); skipped for a report of another budget.

        Returns:
            What was restored (``{"from", "models"}``), or None.
        """
        marker = self.out / "restored.json"
        if marker.is_file():
            return _load_json(marker)
        source = self.results / "reproduce.json"
        report = _load_json(source)
        if not report or report.get("quick") != self.quick:
            return None
        budget = json.loads(json.dumps(dataclasses.asdict(self.budget)))
        recorded = report.get("budget") or {}
        # A field the report lacks (added to Budget later) governs pieces it does not hold.
        if not recorded or any(recorded[k] != budget[k] for k in recorded if k in budget) or (
                set(recorded) - set(budget)):
            logger.warning("Not restoring from %s: it was made with another budget", source)
            return None
        def write(path: Path, obj: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, obj)

        sweep = self.out / "sweep"
        for name, file in (("sweep", "chosen.json"), ("trades_sweep", "trades_chosen.json")):
            if report.get(name) and not (sweep / file).is_file():
                write(sweep / file, report[name])
        restored = []
        for method, entry in (report.get("table") or {}).items():
            for seed, ev in entry["seeds"].items():
                folder = self.out / "grid" / method / seed
                if (folder / "evaluation.json").is_file() or (folder / "model.keras").is_file():
                    continue
                attacks_ = dict(ev["attacks"])
                cascade = "autoattack" if ev.get("autoattack") == "standard" else "apgd_ce+apgd_t"
                rows = {k: attacks_.pop(k) for k in ("apgd_ce+apgd_t", "autoattack")
                        if k in attacks_}
                if rows:
                    write(folder / "eval" / f"{cascade}.json", rows)
                for name, row in attacks_.items():
                    write(folder / "eval" / f"{name}.json", row)
                for name, state in (ev.get("partial") or {}).items():  # chunks done so far
                    write(folder / "eval" / f"{name}.chunks.json", state)
                atomic_write_json(folder / "evaluation.json", {**ev, "restored": True})
                restored.append(f"grid/{method}/{seed}")
        log = self.timings()
        for key, entry in (_load_json(self.results / "timings.json") or {}).items():
            log.setdefault(key, entry)
        atomic_write_json(self.timings_path, log)
        atomic_write_json(self.out / "restored_paired.json", report.get("paired") or {})
        write(self.out / "claims" / "restored.json", report.get("claims") or {})
        record = {"from": str(source), "models": restored, "timings": sorted(log)}
        atomic_write_json(marker, record)
        for name in ("_restored_timings", "_restored_paired"):  # read again from the new files
            self.__dict__.pop(name, None)
        logger.info("Restored %d finished models' evaluations from %s", len(restored), source)
        return record

    @functools.cached_property
    def _restored_timings(self) -> frozenset[str]:
        """The timing keys :meth:`restore` put back (read once; empty before a restore)."""
        return frozenset((_load_json(self.out / "restored.json") or {}).get("timings", ()))

    @functools.cached_property
    def _restored_paired(self) -> dict:
        return _load_json(self.out / "restored_paired.json") or {}

    def _restored_pair_seeds(self, pair: str, which: str) -> dict[str, dict]:
        """The committed report's paired comparison ``pair`` per seed (restored)."""
        restored = self._restored_paired
        return ((restored.get(pair) or {}).get(which) or {}).get("seeds") or {}

    def _needs_flags(self, p: Planned, plan: Sequence[Planned]) -> bool:
        """Whether a model whose evaluation was restored must be trained again to pair
        it image by image with a model of the same seed that the report does not pair it
        with yet (its per-image results were not committed)."""
        planned = {(q.method.name, q.seed) for q in plan}
        for a, b in PAIRED:
            if p.method.name not in (a, b):
                continue
            other = b if a == p.method.name else a
            if (other, p.seed) in planned and f"seed{p.seed}" not in self._restored_pair_seeds(
                    f"{a} vs. {b}", "apgd_ce+apgd_t"):
                if self._robust_images(p.key, "apgd_ce+apgd_t") is None:
                    return True
        return False

    def _check_restored(self, p: Planned, path: Path) -> dict:
        """A model trained again for a restored evaluation: does it give the committed
        numbers? Its clean and FGSM accuracy on the test subset (seconds) are recomputed
        and compared; recorded as ``reproduction`` in its ``evaluation.json`` (beside
        :meth:`_regenerate_flags`' check)."""
        cache = path.parent / "evaluation.json"
        ev = json.loads(cache.read_text())
        check = dict(ev.get("reproduction") or {})
        loaded: list[keras.Model] = []

        def model() -> keras.Model:
            if not loaded:
                loaded.append(models.load(path))
            return loaded[0]

        folder = path.parent / "eval"
        if "fgsm" not in check:
            row = self._attack_piece(p.key, folder, model, "full", "fgsm-reproduced",
                                     attacks.get("fgsm", eps=EPS), self.budget.test_limit,
                                     checks=False)
            was = ev["attacks"]["fgsm"]
            check["fgsm"] = {"committed": [was["clean_accuracy"], was["accuracy"]],
                             "recomputed": [row["clean_accuracy"], row["accuracy"]]}
        _judge_reproduction(p.key, check)
        atomic_write_json(cache, {**ev, "reproduction": check})
        return check

    def _regenerate_flags(self, p: Planned, path: Path) -> None:
        """Run the APGD-CE+T cascade again on a retrained model whose evaluation was
        restored, for its per-image results; compare its accuracy with the committed one."""
        cache = path.parent / "evaluation.json"
        ev = json.loads(cache.read_text())
        stages = next(attack for group, _, _, attack in self._eval_plan(p.method, p.seed)
                      if group == "autoattack")[:2]  # APGD-CE, APGD-T
        model = models.load(path)
        state, _ = self._run_stages(p.key, path.parent / "eval", lambda: model,
                                    "apgd_ce+apgd_t", stages, self.budget.autoattack_limit)
        check = dict(ev.get("reproduction") or {})
        check["apgd_ce+apgd_t"] = {
            "committed": [ev["attacks"]["apgd_ce+apgd_t"]["accuracy"]],
            "recomputed": [state["apgd_t"]["accuracy"]]}
        _judge_reproduction(p.key, check)
        robust = self._robust_images(p.key, "apgd_ce+apgd_t")
        atomic_write_json(cache, {**ev, "reproduction": check, "robust_images": {
            **ev.get("robust_images", {}), "apgd_ce+apgd_t": encode_mask(robust)}})

    # ---------------------------------------------------------------- base

    def base(self) -> Path:
        """The vanilla model every method fine-tunes from (trained once, then cached)."""
        path = self.out / "base" / "model.keras"
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        x, y = data.load_arrays("fashion_mnist", "fit")[:2]
        if self.quick:
            x, y = x[: self.budget.train_limit], y[: self.budget.train_limit]

        def train():
            keras.utils.set_random_seed(0)
            model = _compile(models.build("small_cnn"))
            model.fit(x, y, epochs=self.budget.vanilla_epochs, batch_size=self.budget.batch_size,
                      verbose=0)
            atomic_save_model(model, path)

        self._timed("base", train, kind="train", model="base", examples=len(x),
                    epochs=self.budget.vanilla_epochs)
        return path

    # ---------------------------------------------------------------- fine-tuning

    def _fine_tune(self, key: str, spec: dict, x, y, epochs: int, seed: int) -> Path:
        """Fine-tune the base model with RobustModel settings ``spec``; cached by key."""
        path = self.out / key / "model.keras"
        if path.is_file():
            recorded = _load_json(path.parent / "spec.json")
            if recorded is None or _same_spec(recorded["spec"], spec):
                return path
            self._supersede(path.parent, recorded["spec"], spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        base_path = self.base()

        def train():
            keras.utils.set_random_seed(seed)
            base = models.load(base_path)
            if spec["method"] == "vanilla":
                model = _compile(base)
                model.fit(x, y, epochs=epochs, batch_size=self.budget.batch_size, verbose=0)
            else:
                kwargs = {k: v for k, v in spec.items() if k != "attack"}
                attack = {"name": spec.get("attack") or default_train_attack(spec["method"]),
                          "eps": EPS, "seed": seed}
                if attack["name"] in ("pgd_linf", "trades_kl"):
                    attack["steps"] = self.budget.steps
                robust = _compile(RobustModel(base, attack=attack, seed=seed, **kwargs))
                robust.fit(x, y, epochs=epochs, batch_size=self.budget.batch_size, verbose=0)
            for layer in base.layers:  # a plain, fully trainable model goes to disk
                layer.trainable = True
            atomic_save_model(base, path)
            atomic_write_json(path.parent / "spec.json", {"spec": spec, "seed": seed,
                                                          "epochs": epochs, "examples": len(x),
                                                          "precision": PRECISION})

        self._timed(f"train:{key}", train, kind="train", model=key, examples=len(x),
                    epochs=epochs, steps_per_epoch=math.ceil(len(x) / self.budget.batch_size))
        return path

    @staticmethod
    def _supersede(folder: Path, old: dict, new: dict) -> Path:
        """Move a model made with settings ``old`` (and its evaluations) aside.

        The folder becomes ``<folder>.superseded<N>``: nothing is deleted, and the old
        numbers stay readable there (for instance TRADES at the default beta, before the
        sweep chose another).
        """
        n = 1
        while folder.with_name(f"{folder.name}.superseded{n}").exists():
            n += 1
        target = folder.with_name(f"{folder.name}.superseded{n}")
        folder.rename(target)
        logger.warning("%s was made with %s, the plan now says %s: moved to %s and trained "
                       "again", folder, old, new, target.name)
        return target

    # ---------------------------------------------------------------- sweep

    def _score(self, key: str, path: Path) -> dict:
        """Validation clean and PGD-20 accuracy (the sweep's score)."""
        cache = path.parent / "validation.json"
        if cache.is_file():
            return json.loads(cache.read_text())

        def score():
            model = models.load(path)
            pgd = attacks.get("pgd_linf", eps=EPS, steps=self.budget.eval_steps, seed=0)
            return evaluate(model, self.val, [pgd], cascade=False, checks=False,
                            batch_size=self.budget.batch_size)

        result = self._timed(f"score:{key}", score, kind="score", model=key,
                             n=len(self.val[0]))
        out = {"clean": result.clean_accuracy, "pgd20": result.rows[0].accuracy,
               "n": result.num_examples}
        atomic_write_json(cache, out)
        return out

    def _sweep_run(self, lam: float, layers: str, freeze: bool) -> dict:
        key = f"sweep/lam{lam:g}_{layers.replace(',', '+').replace('..', '-')}_{'frozen' if freeze else 'all'}"
        b = self.budget
        spec = {"method": "sns", "selection": "sen", "layers": layers, "lam": lam, "k": 0.1,
                "freeze_below": freeze}
        x, y = self.fit[0][: b.sweep_limit], self.fit[1][: b.sweep_limit]
        path = self._fine_tune(key, spec, x, y, b.sweep_epochs, seed=0)
        return {"lam": lam, "layers": layers, "freeze_below": freeze, **self._score(key, path)}

    def sweep(self) -> dict:
        """Coordinate search on validation PGD-20 accuracy: lambda, then layers, then freezing."""
        cache = self.out / "sweep" / "chosen.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        b = self.budget
        runs = [self._sweep_run(lam, b.layer_sets[0], False) for lam in b.lambdas]
        best = _best(runs)
        runs += [self._sweep_run(best["lam"], layers, False) for layers in b.layer_sets[1:]]
        best = _best(runs)
        runs.append(self._sweep_run(best["lam"], best["layers"], True))
        best = _best(runs)
        # The PAT reference at the same sweep budget, for the doc's comparison.
        pat_path = self._fine_tune("sweep/pat", {"method": "pat"}, self.fit[0][: b.sweep_limit],
                                   self.fit[1][: b.sweep_limit], b.sweep_epochs, seed=0)
        pat = self._score("sweep/pat", pat_path)
        chosen = {"chosen": {k: best[k] for k in ("lam", "layers", "freeze_below")},
                  "score": {k: best[k] for k in ("clean", "pgd20")}, "runs": runs,
                  "pat_reference": pat, "criterion": "validation PGD-20 accuracy, then clean"}
        atomic_write_json(cache, chosen)
        return chosen

    def trades_sweep(self) -> dict:
        """TRADES' beta chosen on validation PGD-20 accuracy (then clean), at the grid's
        budget: the baseline gets the tuning SNS gets (``sweep/trades_chosen.json``).

        Where the best of :attr:`Budget.trades_betas` is the smallest (largest), half
        (twice) that value is tried as well, once.
        """
        cache = self.out / "sweep" / "trades_chosen.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        b = self.budget
        x, y = self.fit[0][: b.sweep_limit], self.fit[1][: b.sweep_limit]

        def run(beta: float) -> dict:
            key = f"sweep/trades_beta{beta:g}"
            spec = {"method": "trades", "attack": "trades_kl", "beta": beta}
            path = self._fine_tune(key, spec, x, y, b.sweep_epochs, seed=0)
            return {"beta": beta, **self._score(key, path)}

        runs = [run(beta) for beta in b.trades_betas]
        best = _best(runs)
        # A best value at the edge of the grid may not be the best there is: one step
        # further out (half the smallest beta, or twice the largest) is tried too.
        edge = {min(b.trades_betas): 0.5, max(b.trades_betas): 2.0}.get(best["beta"])
        if edge is not None and len(runs) > 1:
            runs.append(run(best["beta"] * edge))
            best = _best(runs)
        chosen = {"chosen": {"beta": best["beta"]},
                  "score": {k: best[k] for k in ("clean", "pgd20")}, "runs": runs,
                  "criterion": "validation PGD-20 accuracy, then clean"}
        atomic_write_json(cache, chosen)
        return chosen

    # ---------------------------------------------------------------- grid

    def plan(self, chosen: dict | None, trades: dict | None = None) -> list[Planned]:
        """Every model of the grid in the order it is trained (:func:`run_order`).

        ``chosen`` and ``trades`` are the sweeps' choices (:meth:`sweep`,
        :meth:`trades_sweep`); a model whose settings are not chosen yet has spec None.
        """
        sns = chosen["chosen"] if chosen else None
        out = []
        for m, seed in run_order(METHODS, self.budget.seeds):
            spec: dict[str, Any] | None = {"method": m.method, "attack": m.train_attack,
                                           **m.params}
            if m.method == "trades":
                spec = {**spec, "beta": trades["chosen"]["beta"]} if trades else None
            if m.selection is not None and spec is not None:
                if sns is None:
                    spec = None
                else:
                    term = {"layers": sns["layers"], "lam": sns["lam"], "k": 0.1,
                            "selection": m.selection}
                    if m.sns_on:  # the SNS term composed with another adversarial loss
                        spec["sns"] = term
                    else:
                        spec.update(term, freeze_below=sns["freeze_below"])
            out.append(Planned(f"grid/{m.name}/seed{seed}", spec, seed, m))
        return out

    # ---------------------------------------------------------------- evaluation

    def _eval_plan(self, m: Method, seed: int) -> list[tuple[str, str, int, Any]]:
        """``(group, name, subset size, attack or AutoAttack stages)`` of one evaluation."""
        b = self.budget
        full_aa = m.full_autoattack and seed == b.seeds[0]
        black_box = (b.black_box_scope == "all" or seed == b.seeds[0] and (
            b.black_box_scope == "seed0" or full_aa))
        if full_aa:
            stages = attacks.get("autoattack", eps=EPS, steps=b.autoattack_steps,
                                 n_queries=b.square_queries, seed=0).stages()
        else:  # AutoAttack's first two stages, the same attacks with the same seed
            stages = [("apgd_ce", attacks.get("apgd_ce", eps=EPS, steps=b.autoattack_steps,
                                              seed=0)),
                      ("apgd_t", attacks.get("apgd_t", eps=EPS, steps=b.autoattack_steps,
                                             seed=0))]
        return [
            ("full", "fgsm", b.test_limit, attacks.get("fgsm", eps=EPS)),
            ("full", "pgd20", b.test_limit,
             attacks.get("pgd_linf", eps=EPS, steps=b.eval_steps, seed=0)),
            ("full", "pgd_l2", b.test_limit,
             attacks.get("pgd_l2", eps=L2_EPS, steps=b.eval_steps, seed=0)),
            *[("full", f"noise{s}", b.test_limit,
               attacks.get("gaussian_noise", severity=s, seed=0)) for s in range(1, 6)],
            ("cw", "cw_l2", b.cw_limit,
             attacks.get("cw_l2", iterations=b.cw_steps,
                         binary_search_steps=1 if self.quick else 3)),
            ("autoattack", "autoattack" if full_aa else "apgd_ce+apgd_t", b.autoattack_limit,
             stages),
            *([("black_box", "spsa", b.black_box_limit,
                attacks.get("spsa", eps=EPS, iterations=b.spsa_iterations, seed=0)),
               ("black_box", "nattack", b.black_box_limit,
                attacks.get("nattack", eps=EPS, iterations=b.nattack_iterations, seed=0))]
              if black_box else []),
        ]

    def _attack_piece(self, key: str, folder: Path, model: Callable[[], keras.Model],
                      group: str, name: str, attack, n: int, checks: bool) -> dict:
        """One attack on the first ``n`` test images, on its own; cached."""
        cache = folder / f"{name}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        x, y = self.test[0][:n], self.test[1][:n]
        result = self._timed(
            f"eval:{key}:{name}",
            lambda: evaluate(model(), (x, y), [attack], cascade=False, checks=checks,
                             batch_size=self.budget.batch_size),
            kind="eval", model=key, group=group, attack=name, n=len(x))
        r = result.rows[0]
        row = _row(r.accuracy, result.num_examples, result.clean_accuracy, ran_on=r.ran_on,
                   fooled=r.fooled, warnings=result.warnings)
        atomic_write_json(cache, row)
        return row

    def _chunked_piece(self, key: str, folder: Path, model: Callable[[], keras.Model],
                       name: str, attack, n: int,
                       on_chunk: Callable[[str, dict], None] | None = None) -> dict:
        """A black-box attack on the first ``n`` test images, :attr:`Budget.black_box_chunk`
        at a time: each chunk is timed and cached in ``<name>.chunks.json`` and handed to
        ``on_chunk`` (which commits it with the report), so a kill loses one chunk."""
        cache = folder / f"{name}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        state_path = folder / f"{name}.chunks.json"
        state = _load_json(state_path) or {"chunk": self.budget.black_box_chunk, "done": []}
        step = state["chunk"]  # a resumed piece keeps the chunks it started with
        for start in range(len(state["done"]) * step, n, step):
            x = self.test[0][start:min(start + step, n)]
            y = self.test[1][start:min(start + step, n)]
            result = self._timed(
                f"eval:{key}:{name}/{start}",
                lambda x=x, y=y: evaluate(model(), (x, y), [attack], cascade=False,
                                          checks=False, batch_size=self.budget.batch_size),
                kind="eval", model=key, group="black_box", attack=name, n=len(x))
            r, m = result.rows[0], result.num_examples
            state["done"].append({"start": start, "n": m,
                                  "correct": round(result.clean_accuracy * m),
                                  "robust": round(r.accuracy * m), "ran_on": r.ran_on,
                                  "fooled": r.fooled, "warnings": result.warnings})
            atomic_write_json(state_path, state)
            if on_chunk is not None:
                on_chunk(name, state)
        done = state["done"]
        total = sum(d["n"] for d in done)
        row = _row(sum(d["robust"] for d in done) / total, total,
                   sum(d["correct"] for d in done) / total,
                   ran_on=sum(d["ran_on"] for d in done), fooled=sum(d["fooled"] for d in done),
                   warnings=sorted({w for d in done for w in d["warnings"]}), chunks=len(done))
        atomic_write_json(cache, row)
        return row

    def _run_stages(self, key: str, folder: Path, model: Callable[[], keras.Model],
                    name: str, stages: list, n: int) -> tuple[dict, float]:
        """Run the worst-case cascade ``stages`` on the first ``n`` test images.

        Each stage attacks only the images every earlier stage left correct; each is
        timed and cached on its own in ``<name>.stages.json`` (with the images still
        standing), so a kill loses one stage. Returns that state and the clean accuracy.
        """
        x, y = self.test[0][:n], self.test[1][:n]
        state_path = folder / f"{name}.stages.json"
        state = _load_json(state_path) or {}
        logits = model().predict(x, batch_size=self.budget.batch_size, verbose=0)
        correct = np.argmax(logits, axis=1) == y
        standing = correct.copy()
        for stage_name, stage in stages:
            if stage_name not in state:
                idx = np.flatnonzero(standing)

                def run(stage=stage, idx=idx):
                    if not len(idx):
                        return np.zeros(0, dtype=bool)
                    arrays = generate_adversarial(model(), (x[idx], y[idx]), stage,
                                                  batch_size=self.budget.batch_size)
                    return arrays["pred_adv"] != y[idx]

                fooled = self._timed(f"eval:{key}:{name}/{stage_name}", run, kind="eval",
                                     model=key, group="autoattack",
                                     attack=f"{name}/{stage_name}", n=int(len(idx)))
                standing[idx[fooled]] = False
                state[stage_name] = {"accuracy": float(standing.mean()), "ran_on": int(len(idx)),
                                     "fooled": int(fooled.sum()),
                                     "standing": np.flatnonzero(standing).tolist()}
                atomic_write_json(state_path, state)
            standing = np.zeros(len(y), dtype=bool)
            standing[state[stage_name]["standing"]] = True
        return state, float(correct.mean())

    def _cascade_piece(self, key: str, folder: Path, model: Callable[[], keras.Model],
                       name: str, stages: list, n: int) -> dict[str, dict]:
        """A worst-case cascade of ``stages`` on the first ``n`` test images
        (:meth:`_run_stages`). Returns the ``apgd_ce+apgd_t`` row (after the first two
        stages) and, for the full AutoAttack, the ``autoattack`` row (after all of them).
        """
        cache = folder / f"{name}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        state, clean = self._run_stages(key, folder, model, name, stages, n)
        n = len(self.test[1][:n])
        accuracy = {s: state[s]["accuracy"] for s, _ in stages}
        names = [s for s, _ in stages]
        rows = {"apgd_ce+apgd_t": _row(accuracy["apgd_t"], n, clean,
                                       stages={s: accuracy[s] for s in names[:2]})}
        if name == "autoattack":
            rows["autoattack"] = _row(accuracy[names[-1]], n, clean, stages=accuracy)
        atomic_write_json(cache, rows)
        return rows

    def evaluate_model(self, key: str, path: Path, m: Method, seed: int,
                       black_box: bool = True) -> dict:
        """Every attack of the table on one model, each piece cached; the whole as
        ``evaluation.json`` beside the model.

        With ``black_box=False`` SPSA and NAttack (hours per model) are left for a later
        pass and listed under ``"pending"``, so that every row gets its white-box numbers
        first.
        """
        cache = path.parent / "evaluation.json"
        cached = _load_json(cache)
        if cached is not None and not (black_box and cached.get("pending")):
            return cached
        loaded: list[keras.Model] = []

        def model() -> keras.Model:  # loaded only if some piece still has to run
            if not loaded:
                loaded.append(models.load(path))
            return loaded[0]

        folder = path.parent / "eval"
        folder.mkdir(exist_ok=True)
        rows: dict[str, dict] = {}
        version = None
        pending = []
        plan = self._eval_plan(m, seed)
        kept = {k: cached[k] for k in ("restored", "reproduction") if cached and k in cached}

        def write(rows: dict, pending: list, **extra) -> dict:
            first = rows["fgsm"]
            n = first["n"]
            clean = {"accuracy": first["clean_accuracy"], "n": n,
                     "ci95": list(wilson(round(first["clean_accuracy"] * n), n))}
            # Per image of the AutoAttack subset, whether the model withstood it:
            # committed with the report, so the paired comparisons survive a fresh checkout.
            robust = {which: encode_mask(mask) for which in ("apgd_ce+apgd_t", "autoattack")
                      if (mask := self._robust_images(key, which)) is not None}
            evaluation = {"model": key, "seed": seed, "clean": clean, "attacks": dict(rows),
                          "autoattack": version, "pending": pending,
                          "robust_images": {**(cached or {}).get("robust_images", {}),
                                            **robust}, **kept, **extra}
            atomic_write_json(cache, evaluation)
            return evaluation

        def on_chunk(name: str, state: dict) -> None:  # a black-box chunk: commit it
            rest = [p[1] for p in plan if p[0] == "black_box" and p[1] not in rows]
            write(rows, rest, partial={name: state})
            self.report(figures=False)

        for group, name, n, attack in plan:
            if group == "black_box" and not black_box:
                pending.append(name)
            elif group == "black_box":
                rows[name] = self._chunked_piece(key, folder, model, name, attack, n, on_chunk)
            elif group == "autoattack":
                version = "standard" if name == "autoattack" else "apgd_ce+apgd_t"
                rows.update(self._cascade_piece(key, folder, model, name, attack, n))
            else:
                rows[name] = self._attack_piece(key, folder, model, group, name, attack, n,
                                                checks=name == "fgsm")
        return write(rows, pending)

    # ---------------------------------------------------------------- claims

    def claims(self) -> dict:
        """The section IV studies on the base (vanilla) model and PAT, TRADES and SNS-sen
        (seed 0, those trained so far), summarised in ``claims/claims.json``.

        ``all`` (profiles, ratios; C4, C8) reruns when a model joins; ``vanilla``
        (targeted, suppression, eps-sweep; C1-C3, C5) runs once.
        """
        out = self.out / "claims"
        paths = {"vanilla": self.base()}
        for name in CLAIM_MODELS:
            p = self.out / "grid" / name / "seed0" / "model.keras"
            if p.is_file():
                paths[name] = p
        n = self.budget.autoattack_limit
        x, y = self.test[0][:n], self.test[1][:n]
        layers = ("conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "conv4", "relu4", "fc1",
                  "fc1_relu")
        attack = AttackSpec("pgd_linf", {"eps": EPS, "steps": self.budget.eval_steps, "seed": 0})
        # A model trained again (another spec) has another file: the studies rerun.
        stamps = {label: p.stat().st_mtime_ns for label, p in paths.items()}
        done = _load_json(out / "all" / "done.json")
        # After a restore, the restored numbers cover every model: rerun only with all.
        partial = (out / "restored.json").is_file() and len(paths) < 1 + len(CLAIM_MODELS)
        if not partial and (done is None or done["labels"] != list(paths)
                            or done.get("models") != stamps):
            loaded = {label: models.load(p) for label, p in paths.items()}
            self._timed("claims:all", lambda: run_analysis(
                loaded, x, y, AnalysisConfig(attack=attack, layers=layers,
                                             studies=("profile", "ratio")), out / "all"),
                kind="claims", model="claims/all", models=list(paths), n=len(x))
            atomic_write_json(out / "all" / "done.json", {"labels": list(paths),
                                                          "models": stamps})
        if not (out / "vanilla" / "done.json").is_file():
            fractions = (0.5, 1.0) if self.quick else (0.25, 0.5, 1.0, 1.5, 2.0)
            quick = {"classes": (0, 1), "betas": (1.0, 0.5), "repeats": 1} if self.quick else {}
            vanilla = models.load(paths["vanilla"])
            self._timed("claims:vanilla", lambda: run_analysis(
                {"vanilla": vanilla}, x, y,
                AnalysisConfig(attack=attack, layers=layers,
                               sweep_values=tuple(EPS * f for f in fractions),
                               studies=("targeted", "suppression", "eps-sweep"),
                               suppress_layer="relu4", **quick),
                out / "vanilla"), kind="claims", model="claims/vanilla", n=len(x))
            atomic_write_json(out / "vanilla" / "done.json", {"labels": ["vanilla"]})
        summary = summarise_claims(out)
        atomic_write_json(out / "claims.json", summary)
        return summary

    # ---------------------------------------------------------------- report

    def _robust_images(self, key: str, which: str) -> np.ndarray | None:
        """Per test image of the AutoAttack subset, whether model ``key`` withstood
        ``which`` (``"autoattack"`` or ``"apgd_ce+apgd_t"``), from its cascade's cache."""
        folder = self.out / key / "eval"
        if which == "autoattack":
            state, stage = _load_json(folder / "autoattack.stages.json"), None
        else:  # AutoAttack's first two stages, wherever they ran
            state = (_load_json(folder / "apgd_ce+apgd_t.stages.json")
                     or _load_json(folder / "autoattack.stages.json"))
            stage = "apgd_t"
        if not state:  # a restored evaluation carries them (from a report that had them)
            ev = _load_json(self.out / key / "evaluation.json") or {}
            text = (ev.get("robust_images") or {}).get(which)
            return None if text is None else decode_mask(text, self.budget.autoattack_limit)
        stage = stage or list(state)[-1]
        if stage not in state or (which == "autoattack" and len(state) < 4):
            return None  # a cascade killed before its end
        robust = np.zeros(self.budget.autoattack_limit, dtype=bool)
        robust[state[stage]["standing"]] = True
        return robust

    def paired(self, finished: dict[str, dict[str, dict]]) -> dict[str, dict]:
        """The claims' comparisons (:data:`experiments.claims.PAIRED`) on the same images.

        For each pair and attack (AutoAttack where both models have it, APGD-CE+T), per
        seed both models finished: :func:`experiments.report.paired_difference`; over two
        or more seeds, the mean difference and its t-interval.
        """
        out: dict[str, dict] = {}
        for a, b in PAIRED:
            shared = sorted(set(finished.get(a, {})) & set(finished.get(b, {})))
            for which in ("autoattack", "apgd_ce+apgd_t"):
                seeds = {}
                restored = self._restored_pair_seeds(f"{a} vs. {b}", which)
                for seed in shared:
                    ra = self._robust_images(f"grid/{a}/{seed}", which)
                    rb = self._robust_images(f"grid/{b}/{seed}", which)
                    if ra is not None and rb is not None:
                        seeds[seed] = paired_difference(ra, rb)
                    elif seed in restored:  # from the committed report
                        seeds[seed] = restored[seed]
                if not seeds:
                    continue
                entry = {"n": self.budget.autoattack_limit, "seeds": seeds}
                if len(seeds) >= 2:
                    entry["over_seeds"] = seed_interval([d["diff"] for d in seeds.values()])
                out.setdefault(f"{a} vs. {b}", {})[which] = entry
        return out

    def report(self, figures: bool = True) -> dict:
        """Write reproduce.json, table.md and claims.md (and, with ``figures``, the PNGs
        and a copy of timings.json) under ``results`` from whatever is finished.

        Per method of :data:`METHODS` with a finished evaluation: every seed's numbers
        and a summary cell per attack (:func:`experiments.report.summarise_method`);
        the others are listed as ``pending``. The studies' numbers
        (:func:`experiments.claims.summarise_claims`) are judged into claims.md by
        :func:`experiments.claims.claims_markdown`.
        """
        chosen = _load_json(self.out / "sweep" / "chosen.json")
        trades = _load_json(self.out / "sweep" / "trades_chosen.json")
        finished: dict[str, dict[str, dict]] = {m.name: {} for m in METHODS}
        for p in self.plan(chosen, trades):
            ev = _load_json(self.out / p.key / "evaluation.json")
            if ev is not None:
                finished[p.method.name][f"seed{p.seed}"] = ev
        expected = {m.name: len(self.budget.seeds) if m.seeds == "all" else 1 for m in METHODS}
        table = {name: {"seeds": evs, "summary": summarise_method(evs),
                        "seeds_expected": expected[name]}
                 for name, evs in finished.items() if evs}
        timings = self.timings()
        result = {"budget": dataclasses.asdict(self.budget), "quick": self.quick,
                  "precision": PRECISION, "cpu": self.cpu,
                  "cpus_seen": cpus_seen(timings),
                  "eps": EPS, "l2_eps": L2_EPS,
                  "methods": [{"name": m.name, "seeds_expected": expected[m.name],
                               "epochs": self.budget.epochs * m.epochs_factor}
                              for m in METHODS],
                  "sweep": chosen, "trades_sweep": trades, "table": table,
                  "pending": [m.name for m in METHODS if m.name not in table],
                  # Read afresh from the studies' files (cheap), not claims.json:
                  # a study finished by another process shows at once.
                  "claims": merge_claims(_load_json(self.out / "claims" / "restored.json"),
                                         summarise_claims(self.out / "claims")),
                  "paired": self.paired(finished),
                  # Models trained again for a restored evaluation: same numbers?
                  "reproduction": {f"{name}/{seed}": ev["reproduction"]
                                   for name, evs in finished.items()
                                   for seed, ev in evs.items() if ev.get("reproduction")},
                  "timings": "timings.json",
                  "command": self.command}
        if figures:
            single_step = [m.name for m in METHODS if m.train_attack == "fgsm_rs"]
            previous = (_load_json(self.results / "reproduce.json") or {}).get("figures") or {}
            result["figures"] = draw_figures(result, self.out / "claims",
                                             self.results / "figures", timings, single_step)
            for name, file in previous.items():  # a study not rerun since a restore
                if result["figures"].get(name) == "pending" and file != "pending" and (
                        self.results / "figures" / file).is_file():
                    result["figures"][name] = file
        else:  # between models: keep the figures of the last full report
            previous = _load_json(self.results / "reproduce.json") or {}
            result["figures"] = previous.get("figures", {})
        # After every model, not only with the figures: a fresh checkout restores from it.
        atomic_write_json(self.results / "timings.json", timings)
        atomic_write_json(self.results / "reproduce.json", result)
        atomic_write_text(self.results / "table.md", table_markdown(result, timings))
        atomic_write_text(self.results / "claims.md", claims_markdown(result, timings))
        return result


    # ---------------------------------------------------------------- the whole run

    def run(self, stages: tuple[str, ...], methods: tuple[str, ...] | None = None,
            seeds: tuple[int, ...] | None = None) -> dict:
        """Run ``stages`` (see :data:`STAGES`) on the grid rows ``methods`` and ``seeds``
        (None: all). An empty cache is first seeded from the committed report
        (:meth:`restore`)."""
        self.restore()
        if any(s in stages for s in ("base", "sweep", "grid", "claims")):
            self.base()
        if "sweep" in stages:
            chosen, trades = self.sweep(), self.trades_sweep()
        else:
            chosen = _load_json(self.out / "sweep" / "chosen.json")
            trades = _load_json(self.out / "sweep" / "trades_chosen.json")
        if (chosen is None or trades is None) and ("grid" in stages or "eval" in stages):
            raise SystemExit("The sweep has not run yet: run the 'sweep' stage first.")
        plan = [p for p in self.plan(chosen, trades)
                if (methods is None or p.method.name in methods)
                and (seeds is None or p.seed in seeds)]
        first_seed = self.budget.seeds[0]
        priority = [i for i, p in enumerate(plan)
                    if p.seed == first_seed and p.method.name in PRIORITY]
        claims_after = priority[-1] if priority else None
        def train(p: Planned) -> Path:
            logger.info("training %s", p.key)
            return self._fine_tune(p.key, p.spec, self.fit[0], self.fit[1],
                                   self.budget.epochs * p.method.epochs_factor, p.seed)

        for i, p in enumerate(plan):
            path = self.out / p.key / "model.keras"
            restored = (_load_json(path.parent / "evaluation.json") or {}).get("restored")
            flags = bool(restored) and self._needs_flags(p, plan)
            if "grid" in stages and (not restored or flags or path.is_file()):
                path = train(p)
            if "eval" in stages and path.is_file():
                logger.info("evaluating %s", p.key)
                self.evaluate_model(p.key, path, p.method, p.seed, black_box=False)
                if restored:
                    self._check_restored(p, path)
                    if flags:
                        self._regenerate_flags(p, path)
                self.report(figures=False)  # a killed run still leaves its table
            if i == claims_after and "claims" in stages:
                self.claims()
        # The black-box attacks come last. A restored evaluation's model is trained again
        # first (all of them before the first attack, so the studies can use them).
        black_box = [p for p in plan if "eval" in stages]
        retrained = False
        for p in black_box:
            path = self.out / p.key / "model.keras"
            pending = (_load_json(path.parent / "evaluation.json") or {}).get("pending")
            if pending and not path.is_file() and "grid" in stages:
                self._check_restored(p, train(p))
                retrained = True
        if retrained and "claims" in stages:
            self.claims()
        for p in black_box:
            path = self.out / p.key / "model.keras"
            if path.is_file():
                self.evaluate_model(p.key, path, p.method, p.seed)
                self.report(figures=False)
        if "claims" in stages:
            self.claims()
        return self.report(figures="report" in stages)


STAGES = ("base", "sweep", "grid", "eval", "claims", "report")


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (None: the command line), run the stages and return the report.

    Example:
        >>> main(["--quick", "--out", "/tmp/q", "--results", "/tmp/q/results",
        ...       "--methods", "pat"])["pending"][:2]  # doctest: +SKIP
        ['vanilla', 'alp']
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/reproduce", help="Cache of models and results.")
    p.add_argument("--results", default="docs/results",
                   help="Where reproduce.json, table.md, timings.json and figures/ go.")
    p.add_argument("--quick", action="store_true", help="The tiny budget (about a minute).")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"Comma-separated stages to run, of {', '.join(STAGES)} "
                        "('report' alone redraws the report from the cache).")
    p.add_argument("--methods", default=None,
                   help="Comma-separated grid rows to train and evaluate (default: all of "
                        f"{', '.join(m.name for m in METHODS)}).")
    p.add_argument("--seeds", default=None,
                   help="Comma-separated seeds of the grid rows to train and evaluate "
                        "(default: every seed of the budget).")
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
    budget = QUICK if args.quick else FULL
    seeds = None
    if args.seeds:
        try:
            seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
        except ValueError:
            p.error(f"--seeds expects comma-separated integers. Received: {args.seeds!r}")
        bad = [x for x in seeds if x not in budget.seeds]
        if bad:
            p.error(f"unknown seed(s) {bad}; the budget's seeds are {list(budget.seeds)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    command = " ".join(["experiments/reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    runner = Runner(Path(args.out), Path(args.results), budget, args.quick, command)
    return runner.run(stages, methods, seeds)


if __name__ == "__main__":
    main()
