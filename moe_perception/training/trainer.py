"""Two-stage training: each expert on its domain, then the gate on frozen experts.

Stage 2 keeps the experts frozen *and in eval mode*, so their batch-norm statistics and
dropout stay as trained (the paper's code left them in train mode). Every epoch writes a
resumable state file; ``torchrun --nproc_per_node N`` runs data-parallel (gloo or NCCL).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_perception.checkpoint import CheckpointMetadata, save_checkpoint
from moe_perception.data import CAMVID_CLASSES, CAMVID_COLORS, IGNORE_INDEX
from moe_perception.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize,
    random_scale_crop_flip,
    resize_pair,
    to_tensors,
)
from moe_perception.metrics import ConfusionMatrix
from moe_perception.model import ArchConfig, Expert, MixtureOfExperts, build_model
from moe_perception.training.config import DataConfig, Subset, TrainConfig


@dataclass(frozen=True)
class Frames:
    """Frames held in memory: images (N, 3, H, W), float in [0, 1] or uint8 (see
    :func:`as_float`), labels long (N, H, W)."""

    images: Tensor
    labels: Tensor
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def as_float(images: Tensor) -> Tensor:
    """Images as float in [0, 1], whether held as float or as uint8."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def load_frames(root: str | Path, subset: Subset, data: DataConfig | None = None) -> Frames:
    """Read a subset into memory (701 CamVid frames at 480x360 is about 1.4 GB as float).

    Args:
        root: the dataset folder.
        subset: which frames.
        data: dataset name, label mapping and ``cache_size``; ``None``: CamVid, full size.
            With a ``cache_size`` the frames are scaled to it and held as uint8.
    """
    from moe_perception.data import open_dataset

    data = data or DataConfig(root=str(root))
    dataset = open_dataset(
        data.dataset,
        root,
        subset.splits,
        subset.sequences,
        subset.files,
        subset.fraction,
        data.a2d2_mapping,
    )
    images, labels, names = [], [], []
    for sample in dataset:
        image, label = to_tensors(sample.image, sample.label)
        if data.cache_size is not None:
            image, label = resize_pair(image, label, data.cache_size)
            image = (image * 255.0).round().clamp(0, 255).to(torch.uint8)
        images.append(image)
        labels.append(label)
        names.append(sample.name)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise ValueError(
            f"frames of {subset.describe()} in {root} differ in size {sorted(sizes)}: set "
            "data.cache_size to hold them at one size"
        )
    return Frames(torch.stack(images), torch.stack(labels), tuple(names))


def dataset_classes(data: DataConfig) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """Class names and colours of the configured dataset (A2D2 reads its class list)."""
    if data.dataset == "camvid":
        return CAMVID_CLASSES, CAMVID_COLORS
    if data.dataset == "cityscapes":
        from moe_perception.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_COLORS

        return CITYSCAPES_CLASSES, CITYSCAPES_COLORS
    from moe_perception.data.a2d2 import (
        A2D2_CATEGORIES,
        A2D2_COARSE_CLASSES,
        A2D2_COARSE_COLORS,
        A2D2_MAPPINGS,
        color_table,
        read_class_list,
    )

    if data.a2d2_mapping not in A2D2_MAPPINGS:
        raise ValueError(
            f"unknown A2D2 mapping {data.a2d2_mapping!r}; choose from {A2D2_MAPPINGS}"
        )
    if data.a2d2_mapping == "coarse":
        return A2D2_COARSE_CLASSES, A2D2_COARSE_COLORS
    table = color_table(read_class_list(Path(data.root) / "class_list.json"), "paper38")
    first: dict[int, tuple[int, int, int]] = {}
    for code, class_id in sorted(table.items()):
        first.setdefault(class_id, ((code >> 16) & 255, (code >> 8) & 255, code & 255))
    return A2D2_CATEGORIES, tuple(first.get(i, (0, 0, 0)) for i in range(len(A2D2_CATEGORIES)))


@dataclass(frozen=True)
class _Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> _Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return _Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _Distributed(dist.get_rank(), world_size)


def _batches(
    frames: Frames,
    config: TrainConfig,
    generator: torch.Generator,
    dist: _Distributed,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Augmented, normalised training batches; each rank takes its share of an epoch."""
    order = torch.randperm(len(frames), generator=generator)
    per_step = config.batch_size * dist.world_size
    steps = max(len(frames) // per_step, 1)
    for step in range(steps):
        chosen = order[step * per_step : (step + 1) * per_step][dist.rank :: dist.world_size]
        pairs = [
            random_scale_crop_flip(
                as_float(frames.images[i]),
                frames.labels[i],
                config.data.input_size,
                config.data.crop_size,
                config.data.scale_range,
                generator,
            )
            for i in chosen.tolist()
        ]
        images = normalize(torch.stack([p[0] for p in pairs]), IMAGENET_MEAN, IMAGENET_STD)
        yield images, torch.stack([p[1] for p in pairs])


def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy at label resolution, ignoring void pixels."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(
            logits, size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


@torch.inference_mode()
def validate(
    model: nn.Module, frames: Frames, input_size: tuple[int, int], batch: int = 8
) -> float:
    """mIoU of ``model`` (an Expert or any full model) at the labels' full resolution."""
    was_training = model.training
    model.eval()
    matrix: ConfusionMatrix | None = None
    for start in range(0, len(frames), batch):
        images = as_float(frames.images[start : start + batch])
        labels = frames.labels[start : start + batch]
        small = F.interpolate(images, size=input_size, mode="bilinear", align_corners=False)
        output = model(normalize(small, IMAGENET_MEAN, IMAGENET_STD))
        logits = output[1] if isinstance(output, tuple) else output.logits
        logits = F.interpolate(
            logits, size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
        if matrix is None:
            matrix = ConfusionMatrix(logits.shape[1])
        matrix.update(logits.argmax(1), labels)
    model.train(was_training)
    return matrix.miou() if matrix is not None else float("nan")


def _poly_lr(base: float, step: int, total: int) -> float:
    return base * (1 - step / max(total, 1)) ** 0.9


class _Logger:
    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.path = out_dir / "log.jsonl"
        self.enabled = enabled

    def write(self, **record: object) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")


def _train_stage(
    *,
    stage: str,
    module: nn.Module,
    forward_loss,
    parameters: list[nn.Parameter],
    frames: Frames,
    val_frames: Frames | None,
    epochs: int,
    lr: float,
    config: TrainConfig,
    out_dir: Path,
    dist: _Distributed,
    logger: _Logger,
    prepare_train_mode=None,
) -> None:
    """Generic epoch loop with poly learning rate, per-epoch resumable state and logging."""
    from tqdm import tqdm

    state_path = out_dir / f"state_{stage}.pt"
    if len(frames) < dist.world_size:
        raise ValueError(
            f"{stage}: {len(frames)} training frames cannot feed {dist.world_size} processes"
        )
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    start_epoch = 0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        if "torch_rng" in state:  # dropout draws; absent in states of older runs
            torch.set_rng_state(state["torch_rng"])
        start_epoch = int(state["epoch"])
    trained = module
    if dist.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(module)
    steps_per_epoch = max(len(frames) // (config.batch_size * dist.world_size), 1)
    total = epochs * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        module.train()
        if prepare_train_mode is not None:
            prepare_train_mode()
        started, losses = time.perf_counter(), []
        batches = _batches(frames, config, generator, dist)
        progress = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"{stage} {epoch + 1}/{epochs}",
            disable=not dist.is_main,
            leave=False,
        )
        for step, (images, labels) in enumerate(progress):
            for group in optimizer.param_groups:
                group["lr"] = _poly_lr(lr, epoch * steps_per_epoch + step, total)
            loss = forward_loss(trained, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            progress.set_postfix(loss=f"{losses[-1]:.3f}")
        val_miou = None
        if val_frames is not None and dist.is_main:
            val_miou = validate(module, val_frames, config.data.input_size)
        if dist.is_main:
            torch.save(
                {
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch + 1,
                },
                state_path,
            )
            logger.write(
                stage=stage,
                epoch=epoch + 1,
                loss=sum(losses) / max(len(losses), 1),
                val_miou=val_miou,
                seconds=round(time.perf_counter() - started, 1),
                world_size=dist.world_size,
            )
            print(
                f"[{stage}] epoch {epoch + 1}/{epochs} loss {sum(losses) / len(losses):.4f}"
                + (f" val mIoU {val_miou:.4f}" if val_miou is not None else ""),
                flush=True,
            )


def _expert_loss(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    return segmentation_loss(model(images)[1], labels)


def _mixture_loss(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    return segmentation_loss(model(images).logits, labels)


def freeze_experts(model: MixtureOfExperts) -> None:
    """Freeze the experts' weights and put them in eval mode (BN statistics, dropout)."""
    for expert in model.experts:
        expert.eval()
        for parameter in expert.parameters():
            parameter.requires_grad_(False)


def train(config: TrainConfig, out_dir: str | Path, pretrained: bool | str = True) -> Path:
    """Run both stages and write ``<out_dir>/model.pt``; resumes where a run stopped.

    Args:
        config: the run.
        out_dir: folder for states, per-expert weights, the log and the final model.
        pretrained: encoder init (see :func:`moe_perception.model.build_model`).

    Returns:
        Path of the final checkpoint.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    dist = _setup_distributed()
    logger = _Logger(out_dir, dist.is_main)
    root = config.data.root
    val_frames = None
    if config.validation.splits:
        val_frames = load_frames(root, config.validation, config.data)
    arch = config.model
    expert_arch = ArchConfig(
        kind="single",
        encoder=arch.encoder,
        num_experts=1,
        num_classes=arch.num_classes,
        decoder_channels=arch.decoder_channels,
        dropout=arch.dropout,
    )
    experts: dict[str, Expert] = {}
    for stage in config.experts:
        expert = build_model(expert_arch, pretrained=pretrained).experts[0]
        weights = out_dir / f"expert_{stage.name}.pt"
        if not weights.is_file() and config.experts_from is not None:
            shared = Path(config.experts_from) / f"expert_{stage.name}.pt"
            if not shared.is_file():
                raise FileNotFoundError(
                    f"experts_from: {shared} not found; train the run that makes "
                    f"{config.experts_from} first"
                )
            weights = shared
        if weights.is_file():
            expert.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        else:
            if stage.init_from is not None:
                expert.load_state_dict(experts[stage.init_from].state_dict())
            _train_stage(
                stage=f"expert_{stage.name}",
                module=expert,
                forward_loss=_expert_loss,
                parameters=list(expert.parameters()),
                frames=load_frames(root, stage.subset, config.data),
                val_frames=val_frames,
                epochs=stage.epochs,
                lr=stage.lr or config.lr,
                config=config,
                out_dir=out_dir,
                dist=dist,
                logger=logger,
            )
            if dist.is_main:
                torch.save(expert.state_dict(), weights)
        experts[stage.name] = expert
    model = build_model(arch)
    for slot, stage in zip(model.experts, config.experts):
        slot.load_state_dict(experts[stage.name].state_dict())
    if isinstance(model, MixtureOfExperts) and config.gate is not None:
        freeze_experts(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        _train_stage(
            stage="gate",
            module=model,
            forward_loss=_mixture_loss,
            parameters=trainable,
            frames=load_frames(root, config.gate.subset, config.data),
            val_frames=val_frames,
            epochs=config.gate.epochs,
            lr=config.gate.lr,
            config=config,
            out_dir=out_dir,
            dist=dist,
            logger=logger,
            prepare_train_mode=lambda: freeze_experts(model),
        )
    final = out_dir / "model.pt"
    if dist.is_main:
        class_names, class_colors = dataset_classes(config.data)
        metadata = CheckpointMetadata(
            arch=arch,
            class_names=class_names,
            class_colors=class_colors,
            input_size=config.data.input_size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            expert_names=tuple(stage.name for stage in config.experts),
            provenance={
                "dataset": config.data.dataset,
                "run": config.name,
                "experts": {s.name: s.subset.describe() for s in config.experts},
                **config.provenance,
            },
        )
        save_checkpoint(final, model, metadata)
    if dist.world_size > 1:
        import torch.distributed as torch_dist

        torch_dist.barrier()
        torch_dist.destroy_process_group()
    return final
