"""Choose the SNS recipe for small_cnn on Fashion-MNIST on the VALIDATION split.

Fine-tunes one trained vanilla model with each candidate (PAT as the reference, SNS at
several lambdas / layer sets), all from the same weights and seed, then measures clean
and PGD-20 accuracy on the validation split (the last 10 % of train, never fitted on).
The test split is not touched. Writes a Markdown table (and JSON) to --out.

    .venv/bin/python benchmarks/select_hyperparameters.py \
        --init runs/fashion_mnist_small_cnn/model.keras --epochs 2 --out docs/hyperparameters
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402
from keras_sns.evaluation import evaluate  # noqa: E402
from keras_sns.training import RobustModel  # noqa: E402

CANDIDATES = [
    ("pat", None, 0.0),
    ("sns", "conv3,conv4", 0.1),
    ("sns", "conv3,conv4", 0.5),
    ("sns", "conv3,conv4", 2.0),
    ("sns", "conv4,fc1", 0.5),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--val-examples", type=int, default=2000)
    p.add_argument("--out", default="docs/hyperparameters")
    p.add_argument("--only", type=int, nargs="*", default=None, help="indices of CANDIDATES")
    args = p.parse_args()
    fit_ds, _ = data.load_dataset("fashion_mnist", "fit", batch_size=128, seed=0)
    x_val, y_val, _ = data.load_arrays("fashion_mnist", "validation", limit=args.val_examples)
    rows = []
    json_path = f"{args.out}.json"
    if os.path.exists(json_path):
        rows = json.load(open(json_path))
    done = {(r["method"], r["layers"], r["lam"]) for r in rows}
    for i, (method, layers, lam) in enumerate(CANDIDATES):
        if (args.only and i not in args.only) or (method, layers, lam) in done:
            continue
        keras.utils.set_random_seed(0)
        base = models.load(args.init)
        model = RobustModel(base, method=method, layers=layers, lam=lam,
                            attack={"name": "pgd_linf", "eps": args.eps, "steps": 10, "seed": 0},
                            eval_attack=False)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        start = time.perf_counter()
        model.fit(fit_ds, epochs=args.epochs, verbose=2, shuffle=False)
        seconds = time.perf_counter() - start
        result = evaluate(base, (x_val, y_val),
                          [attacks.get("pgd_linf", eps=args.eps, steps=20, seed=0)], cascade=False)
        rows.append({"method": method, "layers": layers, "lam": lam, "epochs": args.epochs,
                     "val_clean": result.clean_accuracy, "val_pgd20": result.rows[0].accuracy,
                     "train_seconds": round(seconds, 1)})
        print(rows[-1], flush=True)
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
    lines = ["| method | layers | lambda | epochs | val clean | val PGD-20 | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['layers'] or ''} | {r['lam']} | {r['epochs']} | "
                     f"{100 * r['val_clean']:.2f} % | {100 * r['val_pgd20']:.2f} % | "
                     f"{r['train_seconds']} |")
    with open(f"{args.out}.table.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
