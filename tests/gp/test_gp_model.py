"""The GP regression with the closed-form marginal-likelihood gradient against GPflow's own."""

from __future__ import annotations

import json

import numpy as np
import pytest


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



def test_pinned_brownian_is_a_walk_from_the_last_day_each_way():
    import tfos_lib

    tfos_lib.import_tensorflow()
    from tfos_lib.gp.models import PinnedBrownian

    x = np.array([[-2.0], [-0.5], [0.0], [0.5], [2.0]])
    K = PinnedBrownian(variance=3.0)(x).numpy()
    expected = 3.0 * np.array([[2.0, 0.5, 0, 0, 0], [0.5, 0.5, 0, 0, 0], [0, 0, 0, 0, 0],
                               [0, 0, 0, 0.5, 0.5], [0, 0, 0, 0.5, 2.0]])
    np.testing.assert_allclose(K, expected)
    np.testing.assert_allclose(PinnedBrownian(variance=3.0)(x, full_cov=False).numpy(), np.diag(expected))


def test_two_regime_brownian_by_hand():
    """Backward: variance 4/year over the last half year, 1/year before; forward: their even mix, 2.5/year."""
    import tfos_lib

    tfos_lib.import_tensorflow()
    from tfos_lib.gp.models import TwoRegimeBrownian

    kernel = TwoRegimeBrownian(recent=0.5, forward_weight=0.5)
    kernel.recent_variance.assign(4.0)
    kernel.old_variance.assign(1.0)
    x = np.array([[-2.0], [-0.25], [0.0], [0.5], [2.0]])
    old = 4.0 * 0.5 + 1.0 * 1.5  # accumulated from 0 back to -2
    expected = np.array([[old, 1.0, 0, 0, 0], [1.0, 1.0, 0, 0, 0], [0, 0, 0, 0, 0],
                         [0, 0, 0, 1.25, 1.25], [0, 0, 0, 1.25, 5.0]])
    np.testing.assert_allclose(kernel(x).numpy(), expected)
    np.testing.assert_allclose(kernel(x, full_cov=False).numpy(), np.diag(expected))


def test_walk_regime_learns_recent_and_old_volatility():
    """A walk whose volatility triples in its last half year: the fit tells the regimes apart, the band mixes them."""
    import pandas as pd

    import tfos_lib

    tfos_lib.import_tensorflow()
    from tfos_lib.gp.models import fit_learned

    rng = np.random.default_rng(5)
    returns = np.concatenate([rng.normal(0.0, 0.01, 882), rng.normal(0.0, 0.03, 126)])
    prices = 50 * np.exp(np.cumsum(returns))
    predictive, info = fit_learned(("walk-regime", "gaussian", "log"), pd.DataFrame({"price": prices}),
                                   np.array([63]), 100, 3)
    values = json.loads(info["hyperparameters"])
    recent, old = values[".kernel.kernels[0].recent_variance"], values[".kernel.kernels[0].old_variance"]
    assert recent > 4 * old, values
    mixed = np.sqrt(0.5 * 0.03**2 + 0.5 * 0.01**2) * np.sqrt(63)  # the forecast's sd at a quarter
    assert 0.7 < predictive["sd"][0] / mixed < 1.4, (predictive["sd"], mixed)


def test_walk_model_learns_a_random_walks_volatility():
    """On a simulated log-price random walk, the GP walk's band at a quarter widens like sigma * sqrt(h)."""
    import pandas as pd

    import tfos_lib

    tfos_lib.import_tensorflow()
    from tfos_lib.gp.models import fit_learned

    sigma = 0.02
    prices = 50 * np.exp(np.cumsum(np.random.default_rng(3).normal(0.0, sigma, 504)))
    horizons = np.array([1, 21, 63])
    predictive, info = fit_learned(("walk", "gaussian", "log"), pd.DataFrame({"price": prices}), horizons, 100, 3)
    assert info["train_points"] == 168
    assert predictive["loc"][0] == pytest.approx(np.log(prices[-1]), abs=0.02)  # starts at the last price
    ratio = predictive["sd"][1:] / (sigma * np.sqrt(horizons[1:]))
    assert np.all((ratio > 0.8) & (ratio < 1.3)), ratio


@pytest.mark.parametrize("name", ["sum", "periodic", "ou", "walk", "walk-fixed-drift", "walk-ou", "walk-regime", "student-t"])
def test_every_learned_model_fits_and_predicts_a_widening_band(name):
    import pandas as pd

    import tfos_lib

    tfos_lib.import_tensorflow()
    from tfos_lib.gp.backtest import LEARNED_MODELS
    from tfos_lib.gp.models import fit_learned

    prices = 50 * np.exp(np.cumsum(np.random.default_rng(4).normal(0.0, 0.015, 252)))
    predictive, info = fit_learned(LEARNED_MODELS[name], pd.DataFrame({"price": prices}), np.array([1, 63]), 30, 3)
    assert info["train_points"] == 84 and np.all(np.isfinite(predictive["loc"]))
    assert 0 < predictive["sd"][0] < predictive["sd"][1], predictive["sd"]
