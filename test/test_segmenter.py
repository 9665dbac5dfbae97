"""The offline Segmenter on images of any size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moe_perception.checkpoint import CheckpointError
from moe_perception.segmenter import Segmenter, resolve_device
from moe_perception.uncertainty import MAP_NAMES, uncertainty_maps


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_single_image_at_input_resolution(segmenter: Segmenter) -> None:
    result = segmenter(_image(50, 70))
    assert result.labels.shape == (50, 70) and result.labels.dtype == np.uint8
    assert result.labels.max() < 11
    assert set(result.maps) == set(MAP_NAMES)
    for name, values in result.maps.items():
        assert values.shape == (50, 70) and values.dtype == np.float32, name
        assert 0.0 <= values.min() and values.max() <= 1.0, name
    assert 0.0 <= result.gate_entropy <= 1.0
    assert result.gate_weights.shape == (2,)
    assert result.gate_weights.sum() == pytest.approx(1.0, abs=1e-5)


def test_batch_of_different_sizes_matches_one_by_one(segmenter: Segmenter) -> None:
    images = [_image(64, 96, 1), _image(120, 90, 2), _image(33, 200, 3)]
    batch = segmenter(images, maps=("mutual_information",))
    for image, together in zip(images, batch):
        alone = segmenter(image, maps=("mutual_information",))
        assert together.labels.shape == image.shape[:2]
        np.testing.assert_array_equal(together.labels, alone.labels)
        np.testing.assert_allclose(
            together.maps["mutual_information"], alone.maps["mutual_information"], atol=1e-5
        )
        assert list(together.maps) == ["mutual_information"]


def test_network_size_input_equals_the_model(segmenter: Segmenter) -> None:
    image = _image(64, 96, 4)
    result = segmenter(image)
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    mean = torch.tensor(segmenter.metadata.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(segmenter.metadata.std).view(1, 3, 1, 1) * 255
    with torch.inference_mode():
        output = segmenter.model((x - mean) / std)
    np.testing.assert_array_equal(result.labels, output.logits.argmax(1)[0].numpy())
    maps = uncertainty_maps(output)
    np.testing.assert_allclose(
        result.maps["predictive_entropy"], maps.predictive_entropy[0].numpy(), atol=1e-6
    )


def test_network_resolution_output(segmenter: Segmenter) -> None:
    result = segmenter(_image(128, 192), resolution="network")
    assert result.labels.shape == (64, 96)
    wide = segmenter(_image(100, 300), resolution="network")
    assert wide.labels.shape == (32, 96)  # aspect kept, padding cropped


def test_stacked_array_is_a_batch(segmenter: Segmenter) -> None:
    results = segmenter(np.stack([_image(40, 60, 5), _image(40, 60, 6)]))
    assert len(results) == 2


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10, 3), np.float32), "expected uint8 RGB"),
        (np.zeros((10, 10), np.uint8), r"expected shape \(H, W, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), r"expected shape \(H, W, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), "zero size"),
    ],
)
def test_bad_images_are_refused(segmenter: Segmenter, image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segmenter([image])


def test_unknown_map_is_refused(segmenter: Segmenter) -> None:
    with pytest.raises(ValueError, match="unknown uncertainty maps"):
        segmenter(_image(10, 10), maps=("entropy",))


def test_devices() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unknown device|unsupported device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_bad_checkpoint_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Segmenter.from_checkpoint(tmp_path / "missing.pt")
