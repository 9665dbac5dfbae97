"""Corruptions: deterministic by seed and key, uint8 in range, stronger with severity."""

from __future__ import annotations

import numpy as np
import pytest

from moe_perception.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruption_seed


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.float64)
    return np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_is_deterministic_and_in_range(image: np.ndarray, name: str) -> None:
    distances = []
    for severity in SEVERITIES:
        first = corrupt(image, name, severity, seed=3, key="frame_a")
        again = corrupt(image, name, severity, seed=3, key="frame_a")
        assert first.dtype == np.uint8 and first.shape == image.shape
        assert np.array_equal(first, again)
        distances.append(np.abs(first.astype(float) - image).mean())
    assert distances[0] > 0
    # Severity 5 changes the image more than severity 1.
    assert distances[-1] > distances[0]
    assert np.array_equal(corrupt(image, name, 0), image)


@pytest.mark.parametrize("name", ["gaussian_noise", "fog", "motion_blur"])
def test_random_corruptions_depend_on_seed_and_key(image: np.ndarray, name: str) -> None:
    base = corrupt(image, name, 3, seed=0, key="a")
    assert not np.array_equal(base, corrupt(image, name, 3, seed=1, key="a"))
    assert not np.array_equal(base, corrupt(image, name, 3, seed=0, key="b"))


def test_exact_values_of_deterministic_corruptions() -> None:
    flat = np.full((4, 4, 3), 200, dtype=np.uint8)
    flat[0, 0] = 0
    # Contrast severity 5 keeps 5 % of the deviation from the mean.
    mean = flat.astype(float).mean() / 255
    out = corrupt(flat, "contrast", 5)
    expected = np.clip(((flat / 255 - mean) * 0.05 + mean) * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(out, expected)
    # Darkening severity 3: 0.5 * x^1.6.
    out = corrupt(flat, "darken", 3)
    assert out[1, 1, 0] == int(0.5 * (200 / 255) ** 1.6 * 255 + 0.5)
    # Blurring a constant image leaves it constant (replicated edges).
    const = np.full((20, 30, 3), 77, dtype=np.uint8)
    for name in ("defocus_blur", "motion_blur"):
        assert np.array_equal(corrupt(const, name, 5), const)


def test_bad_arguments(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(image, "snow", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="severity"):
        corrupt(image, "fog", 6)
    with pytest.raises(ValueError, match="RGB uint8"):
        corrupt(image.astype(np.float32), "fog", 1)
    assert corruption_seed(0, "x") == corruption_seed(0, "x") != corruption_seed(1, "x")
