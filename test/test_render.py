"""Colouring, blending and naming of the node's outputs."""

from __future__ import annotations

import numpy as np
import pytest

from moe_perception.render import (
    IMAGE_OUTPUTS,
    blend,
    colorize_labels,
    colorize_map,
    colormap_lut,
    confidence_image,
    frame_outputs,
    output_topic,
    palette_lut,
)
from moe_perception.segmenter import Segmentation
from moe_perception.uncertainty import MAP_NAMES


def _segmentation(height: int = 4, width: int = 5) -> Segmentation:
    rng = np.random.default_rng(0)
    return Segmentation(
        labels=rng.integers(0, 3, (height, width)).astype(np.uint8),
        maps={name: rng.random((height, width), dtype=np.float32) for name in MAP_NAMES},
        gate_entropy=0.5,
        gate_weights=np.array([0.25, 0.75], np.float32),
    )


def test_confidence_is_255_times_one_minus_u() -> None:
    u = np.array([[0.0, 1.0, 0.5, 0.2]], np.float32)
    np.testing.assert_array_equal(confidence_image(u), [[255, 0, 128, 204]])


def test_turbo_runs_from_dark_through_blue_green_to_red() -> None:
    lut = colormap_lut("turbo")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0].astype(int).sum() < 100 and lut[255].astype(int).sum() < 200  # dark ends
    assert lut[40].argmax() == 2 and lut[128].argmax() == 1 and lut[230].argmax() == 0
    np.testing.assert_array_equal(colorize_map(np.array([[0.0, 1.0]])), lut[[0, 255]][None])
    with pytest.raises(ValueError, match="unknown colour map"):
        colormap_lut("jet")


def test_palette_marks_no_label_black() -> None:
    palette = palette_lut([(10, 20, 30), (40, 50, 60)])
    labels = np.array([[0, 1, 255]], np.uint8)
    np.testing.assert_array_equal(
        colorize_labels(labels, palette), [[[10, 20, 30], [40, 50, 60], [0, 0, 0]]]
    )


def test_blend_weights() -> None:
    image = np.full((1, 1, 3), 100, np.uint8)
    color = np.full((1, 1, 3), 200, np.uint8)
    np.testing.assert_array_equal(blend(image, color, 0.25), np.full((1, 1, 3), 125))
    with pytest.raises(ValueError, match="alpha"):
        blend(image, color, 1.5)


def test_integer_blend_is_the_float_formula_to_one_level() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    color = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for alpha in (0.0, 0.3, 0.5, 0.77, 1.0):
        exact = image * (1.0 - alpha) + color * alpha
        error = np.abs(blend(image, color, alpha) - exact)
        # Rounding (0.5) plus alpha in steps of 1/256 (at most 255 / 512).
        assert error.max() <= 1.0, alpha
        if alpha in (0.0, 0.5, 1.0):
            assert error.max() <= 0.5, alpha


def test_frame_outputs_compute_only_what_is_wanted() -> None:
    segmentation = _segmentation()
    image = np.zeros((4, 5, 3), np.uint8)
    palette = palette_lut([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    everything = frame_outputs(image, segmentation, palette)
    assert set(everything) == set(IMAGE_OUTPUTS)
    assert everything["labels"] is segmentation.labels
    assert everything["overlay"].shape == (4, 5, 3)
    driving = segmentation.maps["mutual_information"]
    some = frame_outputs(
        image, segmentation, palette, wanted={"confidence"}, confidence_map="mutual_information"
    )
    assert list(some) == ["confidence"]
    np.testing.assert_array_equal(some["confidence"], confidence_image(driving))
    with pytest.raises(ValueError, match="unknown outputs"):
        frame_outputs(image, segmentation, palette, wanted={"depth"})
    with pytest.raises(ValueError, match="differ in size"):
        frame_outputs(np.zeros((2, 2, 3), np.uint8), segmentation, palette)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("/cam_front/image_raw", "/cam_front/segmentation/overlay"),
        ("/cam_front/image_raw/compressed", "/cam_front/segmentation/overlay"),
        ("/car/cam_left/image", "/car/cam_left/segmentation/overlay"),
        ("/image", "/segmentation/overlay"),
    ],
)
def test_output_topics(topic: str, expected: str) -> None:
    assert output_topic(topic, "overlay") == expected
