"""AutoAttack, the parameter-free ensemble of Croce & Hein (2020), L-inf."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import tensorflow as tf

from keras_sns.attacks.auto_projected_gradient_descent import (
    AutoProjectedGradientDescentCE,
    AutoProjectedGradientDescentDLR,
)
from keras_sns.attacks.auto_projected_gradient_descent_targeted import (
    AutoProjectedGradientDescentTargeted,
)
from keras_sns.attacks.base import Attack, check_choice, check_eps, check_int
from keras_sns.attacks.fast_adaptive_boundary import FastAdaptiveBoundary
from keras_sns.attacks.fast_adaptive_boundary_targeted import FastAdaptiveBoundaryTargeted
from keras_sns.attacks.losses import is_adversarial, predict_logits
from keras_sns.attacks.registry import register
from keras_sns.attacks.square_attack import SquareAttack
from keras_sns.attacks.survivors import attack_survivors

__all__ = ["AUTOATTACK_VERSIONS", "AutoAttack"]

logger = logging.getLogger(__name__)

#: The versions of the original AutoAttack.
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")


@register("autoattack")
class AutoAttack(Attack):
    """AutoAttack: a fixed cascade of complementary attacks, worst case per example.

    Runs its stages (:meth:`stages`) in order; each stage attacks only the examples
    that every earlier stage left correctly classified, and an example counts as robust
    only if it survives all of them. The result holds, per example, the adversarial
    image of the first stage that fooled it, and the input where none did (examples
    misclassified from the start are returned unchanged). ``__call__`` runs the stages
    one compiled attack at a time and logs each stage's success, the robust accuracy so
    far and the time (logger ``keras_sns.attacks.auto_attack``, level INFO).

    Versions, as the original AutoAttack defines them:

    - ``"standard"``: APGD-CE (no restarts), APGD-T (``n_target_classes`` targets),
      FAB-T (``n_target_classes`` targets), Square (``n_queries`` queries).
    - ``"plus"``: APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square,
      APGD-T, FAB-T.
    - ``"rand"``: APGD-CE and APGD-DLR with Expectation over Transformation (20
      gradients per step), for models that are random at inference.

    Paper: "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", Croce and Hein, ICML 2020. Distance: L-inf.

    Defaults (AutoAttack's): ``version="standard"``, ``steps=100`` (APGD and FAB
    iterations), ``n_target_classes=9``, ``n_queries=5000``; ``eps=8/255``. Lower
    ``steps``, ``n_queries`` or ``n_target_classes`` only for quick checks: the result
    is then no longer "AutoAttack". For Fashion-MNIST the usual radius is ``eps=0.1``.

    Args:
        eps: L-inf radius in [0, 1] image units.
        version: "standard", "plus" or "rand".
        steps: Iterations of every APGD and FAB run.
        n_queries: Square Attack iterations.
        n_target_classes: Target classes of APGD-T and FAB-T.
        seed: Seed of every stage (None: non-deterministic).

    Example:
        >>> aa = AutoAttack(eps=0.1, seed=0)  # doctest: +SKIP
        >>> [name for name, _ in aa.stages()]  # doctest: +SKIP
        ['apgd_ce', 'apgd_t', 'fab_t', 'square']
        >>> x_adv = aa(model, x, y)  # doctest: +SKIP
    """

    norm = "linf"
    supports_targeted = False

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        version: str = "standard",
        steps: int = 100,
        n_queries: int = 5000,
        n_target_classes: int = 9,
        seed: int | None = None,
    ) -> None:
        self.eps = check_eps(eps, norm=self.norm)
        self.version = check_choice("version", version, AUTOATTACK_VERSIONS)
        self.steps = check_int("steps", steps)
        self.n_queries = check_int("n_queries", n_queries)
        self.n_target_classes = check_int("n_target_classes", n_target_classes)
        self._set_seed(seed)
        self._stages = self._build_stages()

    def stages(self) -> list[tuple[str, Attack]]:
        """The ``(name, attack)`` pairs this ensemble runs, in order.

        The attacks are the ones ``__call__`` uses (same instances, same random
        streams), so that a harness can run them itself, one at a time, and report
        accuracy and time per stage.
        """
        return list(self._stages)

    def _build_stages(self) -> list[tuple[str, Attack]]:
        common = {"eps": self.eps, "steps": self.steps, "seed": self.seed}
        targeted = {**common, "n_target_classes": self.n_target_classes}
        square = SquareAttack(eps=self.eps, n_queries=self.n_queries, seed=self.seed)
        if self.version == "standard":
            attacks = [AutoProjectedGradientDescentCE(**common),
                       AutoProjectedGradientDescentTargeted(**targeted),
                       FastAdaptiveBoundaryTargeted(**targeted), square]
        elif self.version == "plus":
            attacks = [AutoProjectedGradientDescentCE(**common, restarts=5),
                       AutoProjectedGradientDescentDLR(**common, restarts=5),
                       FastAdaptiveBoundary(**common, restarts=5), square,
                       AutoProjectedGradientDescentTargeted(**targeted),
                       FastAdaptiveBoundaryTargeted(**targeted)]
        else:  # "rand"
            attacks = [AutoProjectedGradientDescentCE(**common, eot_iter=20),
                       AutoProjectedGradientDescentDLR(**common, eot_iter=20)]
        return [(attack.name, attack) for attack in attacks]

    def _check_num_classes(self, num_classes: int, targeted: bool) -> None:
        for _, attack in self._stages:
            attack._check_num_classes(num_classes, targeted)

    def _attack(self, model, x, y, target):
        return self._cascade(model, x, y)

    def _run(self, model, x, y, target):
        n = int(x.shape[0])
        start = time.perf_counter()

        def report(name, before, robust):
            left = int(tf.reduce_sum(tf.cast(robust, tf.int32)))
            logger.info("%s: %s fooled %d of %d; robust accuracy %.2f %% (%.1f s)", self.name,
                        name, before - left, before, 100.0 * left / n, time.perf_counter() - start)

        return self._cascade(model, x, y, report)

    def _cascade(self, model, x, y, report: Callable | None = None) -> tf.Tensor:
        """The stages in turn, each on the survivors of the ones before.

        With ``report`` (eager runs only), ``report(name, robust_before, robust)`` is
        called after each stage.
        """
        robust = ~is_adversarial(predict_logits(model, x), y, None)
        if report is not None:
            logger.info("%s (%s, eps=%g): clean accuracy %.2f %% of %d", self.name, self.version,
                        self.eps, 100.0 * float(tf.reduce_mean(tf.cast(robust, tf.float32))),
                        int(x.shape[0]))
        x_adv = x
        for name, attack in self._stages:

            def run(idx, attack=attack):
                xs, ys = tf.gather(x, idx), tf.gather(y, idx)
                found = attack.perturb(model, xs, ys)
                return found, is_adversarial(predict_logits(model, found), ys, None)

            before = None if report is None else int(tf.reduce_sum(tf.cast(robust, tf.int32)))
            x_adv, robust = attack_survivors(run, x_adv, robust)
            if report is not None:
                report(name, before, robust)
        return x_adv
