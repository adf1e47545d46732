"""Built-in losses (declarations only; implementations are imported lazily).

``mse``: the KIP loss ``½·mean((y − f)²)`` over all entries of the target batch.
``platt``: RFAD's Platt-scaled cross-entropy ``CE(softmax(e^k·f), argmax y)`` with the scalar
``k`` (log-scale) learned jointly with the support set by the objective's optimizer at the
objective's ``loss_lr`` (RFAD: the images' AdaBelief, as the reference does).
"""

from distillbench import Component, Param

COMPONENTS = [
    Component(
        kind="loss",
        name="mse",
        summary="squared error ½·mean((y − f(X_T))²) of the KRR predictions (KIP)",
        build="distillbench_builtin.losses.mse:build_mse",
        default=True,  # used when a run names no loss
    ),
    Component(
        kind="loss",
        name="platt",
        summary="cross-entropy of Platt-scaled KRR outputs softmax(e^k·f), k learned (RFAD)",
        build="distillbench_builtin.losses.platt:build_platt",
        params=(
            Param("init_log_scale", float, 0.0, "initial log of the logit scale k (e^k multiplies the KRR outputs; "
                  "k is learned at objective.loss_lr)"),
        ),
    ),
]
