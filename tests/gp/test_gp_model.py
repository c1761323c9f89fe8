"""The GP regression with the closed-form marginal-likelihood gradient against GPflow's own."""

from __future__ import annotations

import numpy as np


def test_fast_gradient_gpr_matches_gpflow():
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    import gpflow

    from tfos_lib.gp.model import FastGradientGPR

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(2008, 2012, 40), rng.integers(0, 252, 40)]).astype(np.float64)
    y = np.sin(x[:, 1:] / 30) + 0.1 * rng.standard_normal((40, 1))
    values = []
    for cls in (FastGradientGPR, gpflow.models.GPR):
        kernel = gpflow.kernels.SquaredExponential(variance=63.0, lengthscales=[3.0, 20.0]) + gpflow.kernels.White(1e-3)
        model = cls((x, y), kernel=kernel, noise_variance=0.5)
        with tf.GradientTape() as tape:
            loss = model.training_loss()
        values.append([loss.numpy()] + [g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    for fast, reference in zip(*values):
        np.testing.assert_allclose(fast, reference, rtol=1e-8)

