"""Temperature scaling fitted on validation with fixed memory.

The mixture's probabilities at the labels' resolution are those of the decoder's
resolution, upsampled bilinearly (see :mod:`moe_perception.uncertainty`): at each pixel
``p = sum_j a_j sum_k w_jk softmax(z_jk / T)``, with ``a_j`` the bilinear weights of its
four decoder pixels ``j``. That is itself a mixture, of 4K components with weights
``a_j w_jk``, which is how the pixels are sampled and scored here.

A :class:`LogitReservoir` keeps a uniform random sample of at most ``capacity`` valid
pixels over the whole validation set (priority sampling: every pixel draws a random
key and the largest keys stay), holding each pixel's 4K component logits and weights
and its label. :func:`fit_temperature` then minimises the mixture's NLL over the
sample, ``-ln sum_j,k a_j w_jk softmax(z_jk / T)_y``, in ln T: a grid, then
golden-section refinement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moe_perception.data.common import IGNORE_INDEX
from moe_perception.model import ModelOutput, bilinear_taps, upsample
from moe_perception.training.config import DataConfig, Subset

View = Callable[[ModelOutput], ModelOutput]


def mixture_log_probs(output: ModelOutput, temperature: float = 1.0) -> Tensor:
    """ln p of the gate-weighted mixture of the experts' softmax at a temperature, at the
    experts' resolution.

    Exact in log space (a weight of 0 drops its expert).

    Shape:
        - output.expert_logits: (B, K, C, h, w); gate weights broadcastable to (B, K, h, w).
        - Output: (B, C, h, w).
    """
    log_probs = (output.expert_logits.float() / temperature).log_softmax(dim=2)
    log_weights = output.gate_weights.float().log().unsqueeze(2)
    return torch.logsumexp(log_weights + log_probs, dim=1)


def mixture_probs(output: ModelOutput, temperature: float = 1.0) -> Tensor:
    """p = sum_k w_k softmax(z_k / T), upsampled to the resolution of ``output.logits``.

    The same probabilities as :func:`moe_perception.uncertainty.uncertainty_maps` returns.

    Shape:
        - output.expert_logits: (B, K, C, h, w); gate weights broadcastable to (B, K, h, w);
          output.logits: (B, C, H, W).
        - Output: (B, C, H, W).
    """
    probs = (output.expert_logits.float() / temperature).softmax(dim=2)
    mixture = (output.gate_weights.float().unsqueeze(2) * probs).sum(dim=1)
    return upsample(mixture, (output.logits.shape[-2], output.logits.shape[-1]))


def pixel_components(
    output: ModelOutput, images: Tensor, rows: Tensor, cols: Tensor
) -> tuple[Tensor, Tensor]:
    """The mixture at some pixels of the output resolution as 4K weighted components.

    Args:
        output: a model result.
        images, rows, cols: the pixels, as indices into (B, H, W) of ``output.logits``.

    Returns:
        Each pixel's component logits (its four decoder pixels' expert logits) and
        component weights (bilinear weight times gate weight, summing to 1).

    Shape:
        - images, rows, cols: (n,).
        - Output: (n, 4K, C) and (n, 4K).
    """
    batch, k, c, height, width = output.expert_logits.shape
    size = (output.logits.shape[-2], output.logits.shape[-1])
    tap_rows, tap_cols, taps = bilinear_taps((height, width), size, rows, cols)
    b = images[:, None].expand_as(tap_rows)
    logits = output.expert_logits.detach().float().permute(0, 3, 4, 1, 2)  # (B, h, w, K, C)
    weights = output.gate_weights.detach().float().expand(batch, k, height, width)
    weights = weights.permute(0, 2, 3, 1)[b, tap_rows, tap_cols]  # (n, 4, K)
    components = logits[b, tap_rows, tap_cols].reshape(len(rows), 4 * k, c)
    return components, (taps.to(weights.device)[:, :, None] * weights).reshape(len(rows), 4 * k)


# Below this a float32 mixture probability may have lost precision (or underflowed).
_TINY_PROB = 1e-30


def mixture_true_class_log_probs(
    output: ModelOutput, target: Tensor, probs: Tensor, temperature: float = 1.0
) -> Tensor:
    """ln p_y of the mixture at each pixel's label, without a full log-space pass.

    Read off the mixture probabilities where p_y >= 1e-30, and recomputed exactly in log
    space (from the pixel's 4K components, see :func:`pixel_components`) at the few
    pixels below, so that confident mistakes keep their true, large NLL. Labels out of
    range (void) are clamped: mask them afterwards.

    Args:
        output: the model result, logits at the labels' resolution.
        target: class ids.
        probs: :func:`mixture_probs` of ``output`` at ``temperature``.
        temperature: divides the logits.

    Shape:
        - output.logits: (B, C, H, W); target: (B, H, W); probs: (B, C, H, W).
        - Output: (B, H, W).
    """
    c = probs.shape[1]
    index = target.long().clamp(0, c - 1)
    true_prob = probs.gather(1, index.unsqueeze(1)).squeeze(1)
    log_prob = true_prob.clamp_min(_TINY_PROB).log()
    tiny = true_prob < _TINY_PROB
    if bool(tiny.any()):
        b, h, w = tiny.nonzero(as_tuple=True)
        logits, weights = pixel_components(output, b, h, w)  # (n, 4K, C), (n, 4K)
        component_log_probs = (logits / temperature).log_softmax(dim=2)
        label = index[b, h, w].view(-1, 1, 1).expand(-1, logits.shape[1], 1)
        at_label = component_log_probs.gather(2, label).squeeze(2)
        log_prob[b, h, w] = torch.logsumexp(weights.log() + at_label, dim=1)
    return log_prob


class LogitReservoir:
    """A bounded uniform sample of valid pixels' mixture components and labels.

    Memory: 4K x (C + 1) floats per pixel kept (70 MB for 200,000 pixels, K = 2, C = 11).

    Args:
        capacity: most pixels kept.
        seed: seed of the sampling keys.
    """

    def __init__(self, capacity: int = 200_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.generator = torch.Generator().manual_seed(seed)
        self.keys = torch.empty(0)
        self.logits: Tensor | None = None  # (N, 4K, C)
        self.weights: Tensor | None = None  # (N, 4K)
        self.labels = torch.empty(0, dtype=torch.long)
        self.seen = 0

    def __len__(self) -> int:
        return int(self.labels.numel())

    def update(self, output: ModelOutput, labels: Tensor) -> None:
        """Offer a batch: its output, logits at the labels' resolution, and labels (B, H, W)."""
        valid = (labels != IGNORE_INDEX).reshape(-1).cpu()
        count = int(valid.sum())
        if count == 0:
            return
        self.seen += count
        keys = torch.rand(count, generator=self.generator)
        keep = min(count, self.capacity)
        top = torch.topk(keys, keep).indices
        index = valid.nonzero().flatten()[top]
        height, width = labels.shape[-2:]
        cpu = ModelOutput(output.logits, output.expert_logits.cpu(), output.gate_weights.cpu())
        logits, weights = pixel_components(
            cpu, index // (height * width), index // width % height, index % width
        )
        all_keys = torch.cat([self.keys, keys[top]])
        all_logits = logits if self.logits is None else torch.cat([self.logits, logits])
        all_weights = weights if self.weights is None else torch.cat([self.weights, weights])
        all_labels = torch.cat([self.labels, labels.reshape(-1).cpu()[index].long()])
        if all_keys.numel() > self.capacity:
            best = torch.topk(all_keys, self.capacity).indices
            all_keys, all_logits = all_keys[best], all_logits[best]
            all_weights, all_labels = all_weights[best], all_labels[best]
        self.keys, self.logits, self.weights, self.labels = (
            all_keys,
            all_logits,
            all_weights,
            all_labels,
        )

    def as_output(self) -> tuple[ModelOutput, Tensor]:
        """The sample as a ModelOutput of N one-pixel images whose 4K "experts" are the
        components, and labels (N, 1, 1)."""
        if self.logits is None or self.weights is None:
            raise ValueError("the reservoir is empty: no valid pixel was offered")
        expert_logits = self.logits[:, :, :, None, None]
        weights = self.weights[:, :, None, None]
        fused = (weights.unsqueeze(2) * expert_logits).sum(dim=1)
        return ModelOutput(fused, expert_logits, weights), self.labels[:, None, None]


def mean_nll(output: ModelOutput, labels: Tensor, temperature: float) -> float:
    """Mean -ln p_y of the mixture at ``temperature`` over pixels (none ignored)."""
    log_probs = mixture_log_probs(output, temperature)
    return float(-log_probs.gather(1, labels[:, None]).mean())


def fit_temperature(
    output: ModelOutput,
    labels: Tensor,
    low: float = 0.05,
    high: float = 20.0,
    grid: int = 21,
    tolerance: float = 1e-3,
) -> tuple[float, float, float]:
    """Temperature minimising the NLL of the mixture on a sample of pixels.

    Args:
        output: pixels as a ModelOutput (see :meth:`LogitReservoir.as_output`).
        labels: their labels, (N, 1, 1).
        low, high: search range of T.
        grid: points of the initial log-spaced grid.
        tolerance: golden-section search around the best grid point until ln T is known
            to within this (1e-3: T to 0.1 %).

    Returns:
        (T, NLL at T = 1, NLL at T).
    """
    logs = torch.linspace(math.log(low), math.log(high), grid).tolist()
    values = [mean_nll(output, labels, math.exp(v)) for v in logs]
    best = min(range(grid), key=values.__getitem__)
    a, b = logs[max(best - 1, 0)], logs[min(best + 1, grid - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = mean_nll(output, labels, math.exp(c)), mean_nll(output, labels, math.exp(d))
    while b - a > tolerance:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = mean_nll(output, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = mean_nll(output, labels, math.exp(d))
    candidates = [(values[best], logs[best]), (fc, c), (fd, d)]
    nll, log_t = min(candidates)
    return math.exp(log_t), mean_nll(output, labels, 1.0), nll


def calibrate_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    data: DataConfig,
    subset: Subset,
    fp16: bool = False,
    limit: int = 0,
    device: str = "cpu",
    progress: bool = True,
    capacity: int = 200_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the checkpoint model's temperature on ``subset`` and write a new checkpoint.

    The model is run as it is (an MoE with its gate); the temperature goes into the
    metadata, and the fit into ``provenance["calibration"]``.

    Returns:
        ``temperature``, ``nll_before``, ``nll_after``, ``pixels``, ``frames``, ``subset``.
    """
    from tqdm import tqdm

    from moe_perception.checkpoint import load_checkpoint, save_checkpoint
    from moe_perception.segmenter import resolve_device
    from moe_perception.training.evaluate import Condition, iterate_batches, resize_output

    model, metadata = load_checkpoint(checkpoint)
    target = resolve_device(device)
    model = model.to(target).eval()
    condition = Condition("validation", subset, "validation")
    total, batches = iterate_batches(data, condition, metadata, 4, limit, seed)
    reservoir = LogitReservoir(capacity, seed)
    for batch in tqdm(batches, total=math.ceil(total / 4), disable=not progress, leave=False):
        with torch.inference_mode():
            output = model(batch.images.to(target))
        output = ModelOutput(
            output.logits.float().cpu(),
            output.expert_logits.float().cpu(),
            output.gate_weights.float().cpu(),
            None if output.class_gate_weights is None else output.class_gate_weights.cpu(),
        )
        reservoir.update(resize_output(output, tuple(batch.labels.shape[-2:])), batch.labels)
    sample, labels = reservoir.as_output()
    temperature, before, after = fit_temperature(sample, labels)
    report = {
        "temperature": temperature,
        "nll_before": before,
        "nll_after": after,
        "pixels": len(reservoir),
        "frames": total,
        "subset": subset.describe(),
        "dataset": data.dataset,
    }
    provenance = {**metadata.provenance, "calibration": report}
    calibrated = metadata.with_changes(temperature=temperature, provenance=provenance)
    save_checkpoint(out, model.cpu(), calibrated, fp16=fp16)
    return report
