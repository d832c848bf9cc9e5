"""AutoAttack for Keras vs IBM ART: agreement and time, side by side in one run.

On one model and the same test images it runs, at the same budget:

- our ``apgd_ce`` vs ART's ``AutoProjectedGradientDescent`` (cross-entropy);
- our ``apgd_t`` vs ART's APGD with the targeted DLR loss, run for each of the top
  ``--targets`` classes and kept per example as the worst case (what APGD-T does);
- our ``square`` vs ART's ``SquareAttack`` (L-inf, ``--queries`` queries);
- our ``autoattack`` (standard: APGD-CE, APGD-T, FAB-T, Square, per-example cascade)
  vs ART's ``AutoAttack`` with its default list (APGD-CE, APGD-DLR, DeepFool, Square).
  ``--art-autoattack default`` runs it as ART builds it, with ART's own budgets (100
  iterations and 5 restarts for each APGD, 5,000 queries and 5 restarts for Square;
  ``--steps`` and ``--queries`` do not reach it): about 5x the work of ours, hours on
  1,000 images. ``--art-autoattack same-budget`` (the piece ``art autoattack_same``)
  runs the same list at our budget (one restart each, ``--steps`` iterations for the
  APGDs and DeepFool, one run of ``--queries`` for Square), so the time ratio compares
  equal work; ``none`` skips it.

It reports robust accuracy of each, the time each took, and the checks of the
evaluation issue: ours within 2 points of ART's (or lower) for each attack, our
AutoAttack never above any single attack of ours and at most 1 point above ART's
AutoAttack, and the time ratio of the two AutoAttacks (target: ours at least 2x faster).

Needs the bench extra (``pip install -e '.[bench]'``; ART's AutoAttack imports the
``multiprocess`` package, which the extra declares). Run:

    .venv/bin/python benchmarks/bench_autoattack.py --n 1000 --batch-size 500 \\
        --part-size 100 --json runs/bench/bench_autoattack_n1000.json

(and the same command again after a kill: it resumes from ``runs/bench/bench_autoattack_n1000``).

Without ``--model`` it first trains a small PGD-trained ``small_cnn`` (a vanilla epoch,
then one PGD-5 epoch on 20,000 images), so the comparison is made on a model with
non-trivial robust accuracy; that model is saved in the cache and reused on restart.

Resumable: every finished piece (``ours apgd_ce``, ``art apgd_ce``, ...) is written to
``--cache`` as soon as it finishes (its adversarial examples as ``.npy``, and a JSON
with its accuracy, seconds, CPU model, 1-minute load average at start and end and the
wall-clock dates), atomically, so a kill never leaves half a piece. The same command
run again loads the finished pieces, runs only the missing ones, and builds the report
and ``--json`` from all of them. A cache made with other settings (model, images, eps,
budgets, batch size, parts) is refused. Each piece is seeded on its own (seed 0), so it
does not depend on which pieces ran before it in the same process.

``--part-size`` cuts every attack into parts of that many images, each a piece of its
own, ours and ART's alternating part by part (``ours autoattack`` part 1, ``art
autoattack`` part 1, ``ours autoattack`` part 2, ...): a kill then loses at most one
part, and each pair of parts runs side by side. An attack's accuracy and seconds are
those of its parts together. Use it when one attack takes longer than a session lives:
ART's AutoAttack on 1,000 images takes hours.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402
from keras_sns.files import atomic_save_model, atomic_write_bytes, atomic_write_json  # noqa: E402
from keras_sns.training import RobustModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The settings a finished piece depends on: a cache made with other values is refused.
SETTING_KEYS = ("model_sha256", "dataset", "n", "eps", "steps", "targets", "queries",
                "batch_size", "part_size")
# Ours and ART's on the same attack, in the order they run.
PAIRS = [("ours apgd_ce", "art apgd_ce"), ("ours apgd_t", "art apgd_t"),
         ("ours square", "art square"), ("ours autoattack", "art autoattack"),
         ("ours autoattack", "art autoattack_same")]
# --art-autoattack: which ART AutoAttack runs (the piece's name), None for none.
ART_AUTOATTACKS = {"default": "art autoattack", "same-budget": "art autoattack_same",
                   "none": None}


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _load_1min() -> float:
    return round(os.getloadavg()[0], 2)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache(n: int, json_path: str | None) -> Path:
    """The default ``--cache``: ``runs/bench/<stem>_n<n>``.

    ``<stem>`` is the name of the ``--json`` file without its suffix (and without an
    ``_n<n>`` it already ends with), else ``autoattack``. The cache lives under ``runs/``
    (ignored by git) even when the JSON goes to ``docs/``.

    Args:
        n: Number of test images.
        json_path: The ``--json`` file, or ``None``.

    Returns:
        The folder (not created).

    Example:
        >>> default_cache(1000, "docs/bench_autoattack.json").name
        'bench_autoattack_n1000'
    """
    stem = Path(json_path).stem if json_path else "autoattack"
    stem = stem.removesuffix(f"_n{n}")
    return ROOT / "runs" / "bench" / f"{stem}_n{n}"


def _model(path: str | None, eps: float, cache: Path) -> tuple[keras.Model, Path]:
    if path:
        return models.load(path), Path(path)
    saved = cache / "model.keras"
    if saved.is_file():
        print(f"model: reusing {saved}", flush=True)
        return models.load(saved), saved
    print(f"model: training a PGD-5 small_cnn into {saved}", flush=True)
    x, y, _ = data.load_arrays("fashion_mnist", "fit")
    keras.utils.set_random_seed(0)
    base = models.build("small_cnn")
    base.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    base.fit(x, y, epochs=1, batch_size=128, verbose=0)
    robust = RobustModel(base, method="pat", attack={"name": "pgd_linf", "eps": eps, "steps": 5,
                                                     "seed": 0})
    robust.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    robust.fit(x[:20000], y[:20000], epochs=1, batch_size=128, verbose=0)
    atomic_save_model(base, saved)
    # Use the saved model, so a first run and a restarted one attack the same thing.
    return models.load(saved), saved


def check_settings(cache: Path, settings: dict) -> None:
    """Refuse a cache made with other settings; write ``settings.json`` into a new one.

    Only the keys of ``SETTING_KEYS`` present in ``settings`` are compared, so the
    settings can be checked before the model exists (without ``model_sha256``) and
    again after; ``settings.json`` is written once they are complete.

    Args:
        cache: The cache folder (it exists).
        settings: This run's settings.

    Raises:
        ValueError: naming each setting that differs.

    Example:
        >>> check_settings(Path("runs/bench/x"), {"n": 16, "eps": 0.1})  # doctest: +SKIP
    """
    path = cache / "settings.json"
    if not path.is_file():
        if all(k in settings for k in SETTING_KEYS):
            atomic_write_json(path, settings)
        return
    saved = json.loads(path.read_text())
    diff = [k for k in SETTING_KEYS if k in settings and saved.get(k) != settings[k]]
    if diff:
        got = ", ".join(f"{k}={settings.get(k)!r} (cache: {saved.get(k)!r})" for k in diff)
        raise ValueError(f"Expected the settings of the cache {cache}. Received: {got}. "
                         "Use another --cache (or delete this one) for new settings.")


def piece_stem(name: str, part: int = 0, parts: int = 1) -> str:
    """The file name (without suffix) of part ``part`` (from 0) of ``parts`` of an attack.

    Args:
        name: The attack, e.g. ``"ours apgd_ce"``.
        part: Which part, from 0.
        parts: How many parts the attack has.

    Returns:
        ``"ours_apgd_ce"`` for a single part, else e.g. ``"ours_apgd_ce_part02of10"``.

    Example:
        >>> piece_stem("art autoattack", 1, 10)
        'art_autoattack_part02of10'
    """
    stem = name.replace(" ", "_")
    return stem if parts == 1 else f"{stem}_part{part + 1:02d}of{parts:02d}"


def _check_adversarial(x_adv: np.ndarray, x: np.ndarray, eps: float, name: str) -> None:
    # ART's AutoAttack keeps an example when (1 - 1e-4) * ||delta|| <= eps: allow that.
    tol = 1e-4 * eps + 1e-5
    if x_adv.shape != x.shape:
        raise RuntimeError(f"{name}: adversarial examples of shape {x_adv.shape}, "
                           f"images of shape {x.shape}")
    linf = float(np.abs(x_adv - x).max())
    if linf > eps + tol or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"{name}: outside the eps-ball or [0, 1] (L-inf {linf:.6f}, "
                           f"eps {eps}, range [{x_adv.min()}, {x_adv.max()}])")


def save_piece(cache: Path, stem: str, x_adv: np.ndarray, record: dict) -> dict:
    """Write a finished piece: its ``.npy`` first, then its JSON (the mark that it is done).

    Both are written atomically; a kill between the two leaves an ``.npy`` without
    JSON, which :func:`load_piece` ignores (the piece runs again).

    Args:
        cache: The cache folder.
        stem: The piece's file name without suffix (:func:`piece_stem`).
        x_adv: Its adversarial examples.
        record: Its figures (accuracy, seconds, CPU, load, dates, session, settings).

    Returns:
        ``record`` with the file name and SHA-256 of the ``.npy`` added.

    Example:
        >>> save_piece(cache, "ours_apgd_ce", x_adv, {"accuracy": 0.62})  # doctest: +SKIP
    """
    buf = io.BytesIO()
    np.save(buf, np.asarray(x_adv, np.float32))
    npy = cache / f"{stem}.npy"
    atomic_write_bytes(npy, buf.getvalue())
    record = dict(record, adv_file=npy.name, adv_sha256=_sha256(npy))
    atomic_write_json(cache / f"{stem}.json", record)
    return record


def load_piece(cache: Path, stem: str, settings: dict, x: np.ndarray,
               eps: float) -> tuple[dict, np.ndarray] | None:
    """A finished piece ``(record, x_adv)`` from the cache, or ``None`` when it must run.

    A piece whose ``.npy`` is missing or does not match the SHA-256 in its JSON runs
    again (with a warning on stderr).

    Args:
        cache: The cache folder.
        stem: The piece's file name without suffix (:func:`piece_stem`).
        settings: This run's settings (see :func:`check_settings`).
        x: The piece's clean images, to check the examples' shape, eps-ball and box.
        eps: L-inf radius.

    Returns:
        ``(record, x_adv)``, or ``None``.

    Raises:
        ValueError: the piece was made with other settings.
        RuntimeError: its examples leave the eps-ball or [0, 1].

    Example:
        >>> found = load_piece(cache, "art_square", settings, x, 0.1)  # doctest: +SKIP
    """
    path = cache / f"{stem}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    npy = cache / record["adv_file"]
    if not npy.is_file() or _sha256(npy) != record["adv_sha256"]:
        print(f"warning: {npy} is missing or changed: {stem} runs again", file=sys.stderr)
        return None
    if any(record["settings"].get(k) != settings.get(k) for k in SETTING_KEYS):
        raise ValueError(f"Expected {path} to be made with the settings of this run. "
                         f"Received: {record['settings']}")
    x_adv = np.load(npy)
    _check_adversarial(x_adv, x, eps, stem)
    return record, x_adv


def _accuracy(model, x_adv, y) -> float:
    logits = model.predict(np.asarray(x_adv, np.float32), batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, 1) == y))


def _timed(fn):
    start = time.perf_counter()
    out = np.asarray(fn(), np.float32)
    return out, time.perf_counter() - start


def build_runs(model: keras.Model, num_classes: int, *, eps: float, steps: int, targets: int,
               queries: int, batch_size: int, art_autoattack: str = "default",
               ) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """The benchmark's attacks, ours and ART's on each: ``{name: (x, y) -> x_adv}``.

    In the order of :data:`PAIRS`: each ART attack follows ours on the same attack, and
    the two AutoAttacks come last, so that each pair runs side by side.

    Args:
        model: The Keras model (logits out) under attack.
        num_classes: Number of classes.
        eps: L-inf radius.
        steps: APGD / FAB iterations (ours and ART's single attacks).
        targets: Target classes of APGD-T / FAB-T.
        queries: Square Attack queries.
        batch_size: Batch size of every attack.
        art_autoattack: Which ART AutoAttack to include (:data:`ART_AUTOATTACKS`):
            ``"default"`` (its default list and budgets, ``art autoattack``),
            ``"same-budget"`` (its default list at our budget, ``art
            autoattack_same``) or ``"none"``.

    Returns:
        The attacks, each a function of images in [0, 1] (NHWC) and integer labels,
        returning the adversarial examples.

    Example:
        >>> runs = build_runs(model, 10, eps=0.1, steps=100, targets=9, queries=5000,
        ...                   batch_size=500)  # doctest: +SKIP
        >>> x_adv = runs["ours apgd_ce"](x, y)  # doctest: +SKIP
    """
    if art_autoattack not in ART_AUTOATTACKS:
        raise ValueError(f"Expected art_autoattack in {sorted(ART_AUTOATTACKS)}. "
                         f"Received: art_autoattack={art_autoattack!r}")
    from art.attacks.evasion import AutoAttack as ArtAutoAttack
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    bs = batch_size
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    clf = TensorFlowV2Classifier(model, nb_classes=num_classes,
                                 input_shape=tuple(model.input_shape[1:]),
                                 loss_object=loss, clip_values=(0.0, 1.0))

    def ours(name, **params):
        def run(x, y):
            # A new attack each time: its seed generator starts from seed 0 for every
            # piece, whichever pieces ran before it in this process.
            attack = attacks.get(name, eps=eps, seed=0, **params)
            return np.concatenate([np.asarray(attack(model, x[i:i + bs], y[i:i + bs]))
                                   for i in range(0, len(x), bs)])
        return run

    def art_apgd_ce(x, y):
        return AutoProjectedGradientDescent(
            clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps, nb_random_init=1,
            batch_size=bs, loss_type="cross_entropy", verbose=False).generate(x, y)

    def art_apgd_t(x, y):
        # APGD-T: the targeted DLR loss towards each of the top `targets` other classes,
        # worst case per example (an example stays robust only if every target failed).
        logits = model.predict(x, batch_size=256, verbose=0)
        order = np.argsort(-logits, axis=1)
        best = x.copy()
        robust = np.argmax(logits, 1) == y
        for t in range(1, targets + 1):
            idx = np.flatnonzero(robust)
            if not len(idx):
                break
            target = order[idx, t]
            apgd = AutoProjectedGradientDescent(
                clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps, targeted=True,
                nb_random_init=1, batch_size=bs, loss_type="difference_logits_ratio", verbose=False)
            found = apgd.generate(x[idx], target)
            fooled = np.argmax(model.predict(found, batch_size=256, verbose=0), 1) != y[idx]
            best[idx[fooled]] = found[fooled]
            robust[idx[fooled]] = False
        return best

    def art_square(x, y):
        return SquareAttack(clf, norm=np.inf, eps=eps, max_iter=queries, p_init=0.8,
                            nb_restarts=1, batch_size=bs, verbose=False).generate(x, y)

    def art_autoattack_run(x, y):
        attack = ArtAutoAttack(clf, norm=np.inf, eps=eps, eps_step=2 * eps, batch_size=bs)
        # ART's default list, unchanged, but without its tqdm bars (25,000 Square
        # iterations of progress bars would swamp the log); no effect on the result.
        for a in attack.attacks:
            a.set_params(verbose=False)
        return attack.generate(x, y)

    def art_autoattack_same_run(x, y):
        attack_list = art_same_budget_attacks(clf, eps=eps, steps=steps, queries=queries,
                                              batch_size=bs)
        return ArtAutoAttack(clf, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=attack_list,
                             batch_size=bs).generate(x, y)

    runs = {
        "ours apgd_ce": ours("apgd_ce", steps=steps),
        "art apgd_ce": art_apgd_ce,
        "ours apgd_t": ours("apgd_t", steps=steps, n_target_classes=targets),
        "art apgd_t": art_apgd_t,
        "ours square": ours("square", n_queries=queries),
        "art square": art_square,
        "ours autoattack": ours("autoattack", steps=steps, n_queries=queries,
                                n_target_classes=targets),
    }
    if art_autoattack == "default":
        runs["art autoattack"] = art_autoattack_run
    elif art_autoattack == "same-budget":
        runs["art autoattack_same"] = art_autoattack_same_run
    return runs


def art_same_budget_attacks(classifier, *, eps: float, steps: int, queries: int,
                            batch_size: int) -> list:
    """ART's default AutoAttack list at our budget, for ``--art-autoattack same-budget``.

    The list ART builds when ``AutoAttack(attacks=None)`` (APGD-CE and APGD-DLR, both
    untargeted; DeepFool with overshoot 1e-3 over 10 classes' gradients; Square with
    ``p_init`` 0.8), with one random start per APGD instead of 5, ``steps`` iterations
    for the APGDs and DeepFool, and one Square run of ``queries`` queries instead of 5.

    Args:
        classifier: An ART classifier (``TensorFlowV2Classifier``).
        eps: L-inf radius.
        steps: Iterations of the APGDs and of DeepFool.
        queries: Square Attack queries.
        batch_size: Batch size of every attack.

    Returns:
        The four ART attacks, in ART's order.

    Example:
        >>> attack_list = art_same_budget_attacks(clf, eps=0.1, steps=100, queries=5000,
        ...                                       batch_size=500)  # doctest: +SKIP
    """
    from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack

    common = dict(norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps, targeted=False,
                  nb_random_init=1, batch_size=batch_size, verbose=False)
    return [
        AutoProjectedGradientDescent(classifier, loss_type="cross_entropy", **common),
        AutoProjectedGradientDescent(classifier, loss_type="difference_logits_ratio", **common),
        DeepFool(classifier, max_iter=steps, epsilon=1e-3, nb_grads=10, batch_size=batch_size,
                 verbose=False),
        SquareAttack(classifier, norm=np.inf, max_iter=queries, eps=eps, p_init=0.8,
                     nb_restarts=1, batch_size=batch_size, verbose=False),
    ]


def _parts(n: int, part_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + part_size, n)) for start in range(0, n, part_size)]


def main(argv: list[str] | None = None) -> dict:
    """Run (or resume) the benchmark: print one line per piece, then the checks.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The result, as written to ``<cache>/result.json`` and ``--json``.

    Example:
        >>> main(["--n", "16", "--model", "runs/x/model.keras"])  # doctest: +SKIP
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--n", type=int, default=1000, help="Test images (the first n).")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=100, help="APGD / FAB iterations.")
    p.add_argument("--targets", type=int, default=9, help="Target classes of APGD-T / FAB-T.")
    p.add_argument("--queries", type=int, default=5000, help="Square Attack queries.")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--art-autoattack", choices=list(ART_AUTOATTACKS), default="default",
                   help="ART's AutoAttack with its own budgets (default), its list at our "
                        "budget (same-budget), or none.")
    p.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    p.add_argument("--part-size", type=int, default=None,
                   help="Run and save every attack in parts of this many images, ours and "
                        "ART's alternating part by part (default: all n in one part).")
    p.add_argument("--cache", default=None,
                   help="Folder of the finished pieces (and of the trained model without "
                        "--model); a rerun resumes from it. Default: runs/bench/<--json "
                        "stem>_n<n>, or runs/bench/autoattack_n<n> without --json.")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"Expected n >= 1. Received: n={args.n}")
    if args.eps <= 0:
        p.error(f"Expected eps > 0. Received: eps={args.eps}")
    if args.part_size is not None and args.part_size < 1:
        p.error(f"Expected part_size >= 1. Received: part_size={args.part_size}")
    part_size = min(args.part_size or args.n, args.n)

    eps = args.eps
    cache = Path(args.cache) if args.cache else default_cache(args.n, args.json)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"cache: {cache}", flush=True)
    settings = {"model": str(args.model or "trained by this script: model.keras in the cache"),
                "dataset": "fashion_mnist test, the first n", "n": args.n, "eps": eps,
                "steps": args.steps, "targets": args.targets, "queries": args.queries,
                "batch_size": args.batch_size, "part_size": part_size}
    try:
        check_settings(cache, settings)  # before a model is trained for nothing
        model, model_file = _model(args.model, eps, cache)
        settings["model_sha256"] = (_sha256(model_file) if model_file.is_file()
                                    else str(model_file))
        check_settings(cache, settings)
    except ValueError as e:
        p.error(str(e))
    x, y, info = data.load_arrays("fashion_mnist", "test", limit=args.n)
    runs = build_runs(model, info.num_classes, eps=eps, steps=args.steps, targets=args.targets,
                      queries=args.queries, batch_size=args.batch_size,
                      art_autoattack=args.art_autoattack)
    bounds = _parts(args.n, part_size)
    # Ours and ART's on one attack alternate part by part, so each pair runs side by side.
    pairs = [pair for pair in PAIRS if pair[1] in runs]
    pairs += [(ours,) for ours in dict.fromkeys(o for o, _ in PAIRS)
              if not any(pair[0] == ours for pair in pairs)]  # ours without ART's
    units = [(name, j) for pair in pairs for j in range(len(bounds)) for name in pair]

    session = f"{socket.gethostname()}:{os.getpid()}:{_now()}"
    acc = {"clean": _accuracy(model, x, y)}
    done: dict[str, list[tuple[dict, np.ndarray]]] = {name: [] for name in runs}
    for k, (name, j) in enumerate(units, 1):
        start, stop = bounds[j]
        xs, ys = x[start:stop], y[start:stop]
        stem = piece_stem(name, j, len(bounds))
        found = load_piece(cache, stem, settings, xs, eps)
        if found is None:
            keras.utils.set_random_seed(0)  # ART draws from NumPy's global generator
            record = {"cpu": _cpu_model(), "load_1min_start": _load_1min(), "started": _now()}
            x_adv, secs = _timed(lambda: runs[name](xs, ys))
            record.update(load_1min_end=_load_1min(), finished=_now())
            _check_adversarial(x_adv, xs, eps, stem)
            record.update(name=name, part=j + 1, parts=len(bounds), images=[start, stop],
                          accuracy=_accuracy(model, x_adv, ys), seconds=secs, session=session,
                          settings=settings)
            record = save_piece(cache, stem, x_adv, record)
            how = "ran"
        else:
            record, x_adv = found
            how = f"cached, finished {record['finished']}"
        done[name].append((record, x_adv))
        left = units[k:]
        label = name if len(bounds) == 1 else f"{name} part {j + 1}/{len(bounds)}"
        print(f"[{k}/{len(units)}] {label:<28} {100 * record['accuracy']:6.2f} %  "
              f"{record['seconds']:8.1f} s  ({how}; {_left(left, done, len(bounds))})",
              flush=True)

    seconds, pieces = {}, {}
    for name, parts in done.items():
        records = [r for r, _ in parts]
        x_adv = np.concatenate([a for _, a in parts])
        acc[name] = _accuracy(model, x_adv, y)
        weighted = sum(r["accuracy"] * (r["images"][1] - r["images"][0]) for r in records)
        if abs(weighted / args.n - acc[name]) > 1e-9:
            print(f"warning: {name}: its parts' accuracies give {weighted / args.n}, the "
                  f"whole {acc[name]}", file=sys.stderr)
        seconds[name] = sum(r["seconds"] for r in records)
        pieces[name] = [{k: v for k, v in r.items() if k != "settings"} for r in records]

    checks = {f"{a}: ours <= art + 2 points": acc[f"ours {a}"] <= acc[f"art {a}"] + 0.02
              for a in ("apgd_ce", "apgd_t", "square")}
    singles = [acc[f"ours {a}"] for a in ("apgd_ce", "apgd_t", "square")]
    checks["our autoattack <= each single attack of ours"] = acc["ours autoattack"] <= min(singles)
    side_by_side = None
    art_aa = next((name for name in ART_AUTOATTACKS.values() if name in acc), None)
    if art_aa is not None:
        checks[f"our autoattack <= {art_aa} + 1 point"] = (
            acc["ours autoattack"] <= acc[art_aa] + 0.01)
        ratio = seconds[art_aa] / seconds["ours autoattack"]
        checks[f"our autoattack >= 2x faster than {art_aa}"] = ratio >= 2.0
        apart = [j for j, (a, b) in enumerate(zip(pieces["ours autoattack"], pieces[art_aa]))
                 if a["session"] != b["session"]]
        side_by_side = not apart
        if apart:
            stems = [piece_stem(nm, j, len(bounds)) for j in apart
                     for nm in ("ours autoattack", art_aa)]
            print("note: ours and ART's AutoAttack ran in different sessions (a restart "
                  f"between them) on {len(apart)} part(s), so their time ratio compares "
                  "different loads; to time them side by side, delete these files from "
                  f"{cache} and rerun: {', '.join(s + '.json' for s in stems)}")
    for key, ok in checks.items():
        print(f"  {'OK  ' if ok else 'FAIL'} {key}")
    cpus = sorted({r["cpu"] for records in pieces.values() for r in records})
    result = {"cpu": _cpu_model(), "cpu_models": cpus, "same_cpu_model": len(cpus) == 1,
              "autoattacks_side_by_side": side_by_side, "cache": str(cache), "args": vars(args),
              "settings": settings, "accuracy": acc, "seconds": seconds,
              "checks": {key: bool(v) for key, v in checks.items()}, "pieces": pieces}
    print(json.dumps({"cpu": result["cpu"], "same_cpu_model": result["same_cpu_model"]}))
    atomic_write_json(cache / "result.json", result)
    table = markdown_table(result)
    print(table)
    if args.json:
        atomic_write_json(args.json, result)
        atomic_write_bytes(Path(args.json).with_suffix(".md"), table.encode())
    return result


#: The rows of :func:`markdown_table`: (label, our piece, ART's piece).
TABLE_ROWS = (("APGD-CE", "ours apgd_ce", "art apgd_ce"),
              ("APGD-T (targeted DLR)", "ours apgd_t", "art apgd_t"),
              ("Square (L-inf)", "ours square", "art square"),
              ("AutoAttack (ART: its own budgets)", "ours autoattack", "art autoattack"),
              ("AutoAttack (ART: its list at our budget)", "ours autoattack",
               "art autoattack_same"))


def markdown_table(result: dict) -> str:
    """The benchmark's result as Markdown: accuracy and seconds side by side, the checks.

    Args:
        result: What :func:`main` returns (``accuracy``, ``seconds``, ``checks``,
            ``settings``, ``cpu_models``, ``pieces``).

    Returns:
        A table with one row per attack both sides ran (accuracy in percent, seconds,
        ART's seconds over ours), then the checks, the CPU model(s) and the range of
        the 1-minute load average over all pieces.

    Example:
        >>> print(markdown_table(result))  # doctest: +SKIP
    """
    acc, secs = result["accuracy"], result["seconds"]
    s = result["settings"]
    lines = [f"Robust accuracy on the first {s['n']} Fashion-MNIST test images, eps {s['eps']} "
             f"(clean {100 * acc['clean']:.1f} %); APGD {s['steps']} iterations, "
             f"{s['targets']} target classes, Square {s['queries']} queries.", "",
             "| attack | ours | ART | ours, s | ART, s | ART s / ours s |",
             "| --- | --- | --- | --- | --- | --- |"]
    shown = set()
    for label, ours, art in TABLE_ROWS:
        if ours in acc and art in acc:
            lines.append(f"| {label} | {100 * acc[ours]:.1f} % | {100 * acc[art]:.1f} % | "
                         f"{secs[ours]:.0f} | {secs[art]:.0f} | {secs[art] / secs[ours]:.1f} |")
            shown.add(ours)
    for label, ours, _ in TABLE_ROWS:  # ours alone where ART's did not run
        if ours in acc and ours not in shown:
            lines.append(f"| {label.split(' (')[0]} | {100 * acc[ours]:.1f} % | not run | "
                         f"{secs[ours]:.0f} | | |")
            shown.add(ours)
    lines += ["", "Checks:", ""]
    lines += [f"- {'OK' if ok else 'FAILED'}: {name}" for name, ok in result["checks"].items()]
    loads = [v for parts in result["pieces"].values() for r in parts
             for v in (r.get("load_1min_start"), r.get("load_1min_end")) if v is not None]
    lines += ["", f"CPU: {', '.join(result['cpu_models'])}"
              + (f"; 1-minute load average {min(loads):.1f}-{max(loads):.1f}" if loads else "")
              + "."]
    return "\n".join(lines) + "\n"


def _left(left: list[tuple[str, int]], done: dict, parts: int) -> str:
    """What is left: the pieces, and with parts, their time estimated from parts done."""
    if not left:
        return "0 left"
    if parts == 1:
        return f"{len(left)} left: {', '.join(name for name, _ in left)}"
    timed = {name: np.mean([r["seconds"] for r, _ in recs]) for name, recs in done.items() if recs}
    eta = sum(timed[name] for name, _ in left if name in timed)
    untimed = [name for name in done if name not in timed]
    text = f"{len(left)} parts left, ~{_duration(eta)} for those of timed attacks"
    return text + (f", untimed: {', '.join(untimed)}" if untimed else "")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
