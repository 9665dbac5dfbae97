"""Benchmarks: speed, FLOPs, memory and ONNX export of the MoE against its alternatives.

The modules import torch (and onnx/onnxruntime) inside their functions, so importing
this package, or registering ``moe-perception benchmark``, costs nothing.

- :mod:`~moe_perception.benchmark.timing`: interleaved wall-clock timing of callables.
- :mod:`~moe_perception.benchmark.flops`: FLOPs with torch's flop counter, the machine's
  matrix-multiply FLOP/s, and peak tensor memory.
- :mod:`~moe_perception.benchmark.onnx_export`: export a model *with* its uncertainty
  outputs to ONNX and run it with onnxruntime.
- :mod:`~moe_perception.benchmark.runner`: the suite behind ``moe-perception benchmark``.
"""
