"""FLOP counting, traced peak memory and interleaved timing: exact values, no speed limits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from moe_perception.benchmark.flops import (
    conv2d_flops,
    matmul_flops_per_second,
    trace_cost,
)
from moe_perception.benchmark.timing import time_interleaved


def test_a_known_convolution_has_its_exact_flops() -> None:
    # 2 images, 8 -> 16 channels, 3x3 kernel, 10x12 output: 2*16*10*12 outputs, each
    # 8*3*3 multiply-adds of 2 FLOPs.
    expected = 2 * (2 * 16 * 10 * 12) * (8 * 3 * 3)
    assert conv2d_flops(2, 8, 16, (10, 12), (3, 3)) == expected == 552_960
    conv = nn.Conv2d(8, 16, 3, padding=1)
    assert trace_cost(conv, [(2, 8, 10, 12)]).flops == expected


def test_depthwise_and_strided_convolutions() -> None:
    depthwise = nn.Conv2d(32, 32, 5, stride=2, padding=2, groups=32, bias=False)
    # 32x20 input, stride 2 -> 16x10 output; each output: 1 * 5 * 5 multiply-adds.
    assert trace_cost(depthwise, [(1, 32, 32, 20)]).flops == 2 * 32 * 16 * 10 * 25
    assert conv2d_flops(1, 32, 32, (16, 10), (5, 5), groups=32) == 2 * 32 * 16 * 10 * 25


def test_linear_and_elementwise_work() -> None:
    linear = nn.Linear(64, 10)
    assert trace_cost(linear, [(4, 64)]).flops == 2 * 4 * 64 * 10
    # torch's counter counts matrix multiplies and convolutions only.
    assert trace_cost(lambda x: (x.exp() * 2).softmax(dim=1), [(3, 100)]).flops == 0


def test_traced_flops_equal_flops_counted_on_real_tensors() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)
    ).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.randn(2, 3, 16, 20))
    assert trace_cost(net, [(2, 3, 16, 20)]).flops == counter.get_total_flops() > 0


def test_moe_flops_are_its_experts_plus_its_gate() -> None:
    from moe_perception.model import ArchConfig, build_model

    torch.manual_seed(0)
    moe = build_model(ArchConfig(kind="moe", num_experts=2, gate="simple")).eval()
    single = build_model(ArchConfig(kind="single", num_experts=1)).eval()
    shape = (1, 3, 64, 96)
    moe_flops = trace_cost(moe, [shape]).flops
    expert_flops = trace_cost(single, [shape]).flops
    # The gate at a quarter of the input: a 1x1 conv from the two experts' 256-channel
    # features to 64 channels, a 3x3 conv 64 -> 64, then a 64 -> 2 linear layer.
    size = (16, 24)
    gate = conv2d_flops(1, 512, 64, size, (1, 1)) + conv2d_flops(1, 64, 64, size, (3, 3))
    assert moe_flops == 2 * expert_flops + gate + 2 * 64 * 2
    full = build_model(ArchConfig(kind="moe", gate_bottleneck=False)).eval()
    full_gate = conv2d_flops(1, 512, 64, size, (3, 3))
    assert trace_cost(full, [shape]).flops == 2 * expert_flops + full_gate + 2 * 64 * 2


def test_peak_memory_counts_live_tensors_only() -> None:
    def allocate(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.empty(1000, 1000)  # 4 MB
        b = torch.empty(500, 1000)  # 2 MB, while a is alive: peak 6 MB
        del a
        c = torch.empty(250, 1000)  # 1 MB after a was freed
        return b, c

    assert trace_cost(allocate, [(1,)]).peak_bytes == 6_000_000

    def views_and_in_place(x: torch.Tensor) -> torch.Tensor:
        y = x * 2  # the only new storage: 400 bytes
        y.add_(1)
        return y.view(-1)[:10]

    assert trace_cost(views_and_in_place, [(10, 10)]).peak_bytes == 400


def test_matmul_flops_per_second_is_a_positive_rate() -> None:
    rate = matmul_flops_per_second(size=64, repeats=2)
    assert math.isfinite(rate) and rate > 0


def test_time_interleaved_runs_in_rounds_and_respects_the_budget() -> None:
    order: list[str] = []
    ticks = iter(range(1000))

    def clock() -> float:
        return float(next(ticks))  # every call to the clock advances one "second"

    def call(name: str, cost: int) -> None:
        order.append(name)
        for _ in range(cost - 1):
            next(ticks)  # a call of cost c spans c seconds

    timings = time_interleaved(
        {"fast": lambda: call("fast", 1), "slow": lambda: call("slow", 4)},
        repeats=3,
        budget_s=5.0,
        clock=clock,
    )
    # Warm-ups first, then rounds; the slow one fits its 5 s budget once (4 s a call).
    assert order == ["fast", "slow", "fast", "slow", "fast", "fast"]
    assert timings["fast"].samples == (1.0, 1.0, 1.0)
    assert timings["slow"].samples == (4.0,) and timings["slow"].warmup == 4.0
    assert timings["slow"].best == timings["slow"].median == 4.0


def test_time_interleaved_times_a_very_slow_call_once() -> None:
    calls: list[int] = []
    ticks = iter(range(0, 10_000, 30))  # every clock reading 30 s after the previous one
    timings = time_interleaved(
        {"huge": lambda: calls.append(1)},
        repeats=5,
        single_call_s=20.0,
        clock=lambda: float(next(ticks)),
    )
    assert len(calls) == 1
    assert timings["huge"].samples == (30.0,)


def test_time_interleaved_needs_a_repeat() -> None:
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"a": lambda: None}, repeats=0)
