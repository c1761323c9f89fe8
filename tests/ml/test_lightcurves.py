"""Light-curve features against values computed by hand on synthetic curves."""

from __future__ import annotations

import numpy as np
import pytest

from tfos_lib.datasets.kepler import CADENCE_DAYS
from tfos_lib.ml import lightcurves

N = 3197
T = np.arange(N) * CADENCE_DAYS


def box_transit(period=3.0, duration=0.2, depth=2.0, epoch=1.0):
    return -depth * (np.abs((T - epoch + period / 2) % period - period / 2) < duration / 2)


def test_detrend_removes_a_slow_trend_and_clips_flares():
    rng = np.random.default_rng(0)
    flux = 500 + 40 * T + 10 * rng.standard_normal(N)  # a steep drift under white noise of sigma 10
    flux[1000:1004] += 1000  # a flare
    normalised, detrended = lightcurves.detrend(flux)
    assert abs(np.median(normalised)) < 1e-9
    assert 1.4826 * np.median(np.abs(detrended - np.median(detrended))) == pytest.approx(1.0, abs=0.02)
    assert detrended.max() <= 3.0 and abs(np.mean(detrended)) < 0.1
    assert abs(np.corrcoef(detrended, T)[0, 1]) < 0.05  # no trend left


def test_fft_bands_of_a_sine_match_the_hand_computed_magnitude():
    # 200 whole cycles: all power in rfft bin 200, magnitude 3 * N/2, scaled by 1/sqrt(N).
    bands = lightcurves.fft_bands(3.0 * np.sin(2 * np.pi * 200 * np.arange(N) / N), 8)
    # 8 log-spaced bands over bins 1..1598: edges 1599**(i/8) -> 1, 2, 6, 15, 39, 100, 252, 635, 1599.
    # Bin 200 falls in band 5 (bins 100..251, 152 of them), whose mean is the one bin's magnitude / 152.
    assert bands.argmax() == 5
    assert bands[5] == pytest.approx(3.0 * N / 2 / np.sqrt(N) / 152, rel=1e-6)
    assert np.delete(bands, 5).max() < 1e-9


def test_bls_finds_the_period_depth_and_duration_of_a_box_transit():
    found = lightcurves.bls_search(box_transit(period=3.0, duration=0.2, depth=2.0) + 0.0)
    assert found["bls_period"] == pytest.approx(3.0, rel=0.002)
    assert found["bls_duration"] == pytest.approx(0.2)
    assert found["bls_depth"] == pytest.approx(2.0, rel=0.1)  # the period grid's step smears it a little
    assert found["bls_transits"] == pytest.approx(N * CADENCE_DAYS / 3.0, rel=0.01)


def test_transit_features_separate_a_host_from_noise():
    rng = np.random.default_rng(1)
    noise = 50 * rng.standard_normal(N) + 1000
    names = lightcurves.feature_names("transit", 16, N)
    host = dict(zip(names, lightcurves.star_features(noise + 50 * box_transit(depth=1.5), "transit", 16)))
    quiet = dict(zip(names, lightcurves.star_features(noise, "transit", 16)))
    assert host["bls_period"] == pytest.approx(3.0, rel=0.01)
    assert host["bls_depth_snr"] > 2 * quiet["bls_depth_snr"] and host["bls_sde"] > quiet["bls_sde"]
    assert len(lightcurves.star_features(noise, "raw", 16)) == len(lightcurves.feature_names("raw", 16, N)) == N
