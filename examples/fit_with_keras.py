"""SNS training with plain Keras: compile, fit with the standard callbacks, save, reload.

    .venv/bin/python examples/fit_with_keras.py --limit 2000 --epochs 1 --test-limit 500 \
        --val-limit 500
    .venv/bin/python examples/fit_with_keras.py                           # the full recipe

It trains a vanilla small_cnn, selects the sensitive channels of conv3 and conv4 on
adversarial training examples (the paper's `sen` selection), fine-tunes with SNS
(lambda 0.5, PGD-10 at eps 0.1), and reports clean and PGD-20 accuracy on the test split.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_sns import attacks, data, models  # noqa: E402
from keras_sns.training.callbacks import SensitivityMonitor  # noqa: E402
from keras_sns.evaluation import evaluate  # noqa: E402
from keras_sns.training import RobustModel, select_masks  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--val-limit", type=int, default=1000,
                   help="Validation examples scored after every epoch.")
    p.add_argument("--out", default="runs/example")
    args = p.parse_args()
    keras.utils.set_random_seed(0)
    train_ds, info = data.load_dataset("fashion_mnist", "fit", limit=args.limit, batch_size=128)
    val_ds, _ = data.load_dataset("fashion_mnist", "validation", limit=args.val_limit,
                                  batch_size=256)
    # The sensitive channels are selected on (at most) 2,000 of the training examples.
    select = 2000 if args.limit is None else min(2000, args.limit)
    x_train, y_train, _ = data.load_arrays("fashion_mnist", "fit", limit=select)

    # 1. A vanilla model, trained with plain Keras.
    base = models.build("small_cnn", input_shape=info.input_shape, num_classes=info.num_classes)
    base.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
    base.fit(train_ds, epochs=args.epochs, validation_data=val_ds)

    # 2. SNS: the sensitive channels of the vanilla model, then the fine-tune.
    attack = {"name": "pgd_linf", "eps": 0.1, "steps": 10, "seed": 0}
    model = RobustModel(base, method="sns", layers="conv3,conv4", lam=0.5, k=0.1, attack=attack)
    model.set_masks(select_masks(base, x_train, "conv3,conv4", k=0.1, attack=attack, y=y_train))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_val, y_val, _ = data.load_arrays("fashion_mnist", "validation",
                                       limit=min(256, args.val_limit))
    model.fit(train_ds, epochs=args.epochs, validation_data=val_ds, callbacks=[
        keras.callbacks.BackupAndRestore(f"{args.out}/backup"),        # resumable
        keras.callbacks.ModelCheckpoint(f"{args.out}/best.keras", monitor="val_adv_acc",
                                        mode="max", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_adv_acc", mode="max", patience=2),
        keras.callbacks.TensorBoard(f"{args.out}/logs"),
        SensitivityMonitor(x_val, ["conv3", "conv4"], attack=attack, y=y_val,
                           log_dir=f"{args.out}/logs"),
    ])
    model.save(f"{args.out}/robust_model.keras")      # masks and settings included
    base.save(f"{args.out}/model.keras")              # plain functional model, logits out

    # 3. Robust accuracy on the test split.
    test_ds, _ = data.load_dataset("fashion_mnist", "test", limit=args.test_limit, batch_size=256)
    result = evaluate(base, test_ds, [attacks.get("fgsm", eps=0.1),
                                      attacks.get("pgd_linf", eps=0.1, steps=20, seed=0)],
                      cascade=False, progress=True)
    print(result.to_markdown())


if __name__ == "__main__":
    main()
