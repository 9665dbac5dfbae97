"""Plots drawn with PIL only (no matplotlib): line charts, reliability diagrams, frames."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
)


@dataclass(frozen=True)
class Series:
    """One line: label, x and y values (``None`` for gaps)."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def line_chart(
    series: Sequence[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    size: tuple[int, int] = (420, 320),
    ylim: tuple[float, float] = (0.0, 1.0),
    xlim: tuple[float, float] = (0.0, 1.0),
    diagonal: bool = False,
):
    """A line chart with axes, ticks at tenths and a legend; returns a PIL image."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 48, 12, 26, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(13), _font(11)
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x: float, y: float) -> tuple[float, float]:
        fx = (x - xlim[0]) / (xlim[1] - xlim[0])
        fy = (y - ylim[0]) / (ylim[1] - ylim[0])
        return left + fx * plot_w, top + (1 - fy) * plot_h

    draw.text((left, 5), title, fill="black", font=font)
    for i in range(11):
        fx = xlim[0] + i * (xlim[1] - xlim[0]) / 10
        fy = ylim[0] + i * (ylim[1] - ylim[0]) / 10
        x_px, _ = to_px(fx, ylim[0])
        _, y_px = to_px(xlim[0], fy)
        draw.line([(x_px, top), (x_px, top + plot_h)], fill=(235, 235, 235))
        draw.line([(left, y_px), (left + plot_w, y_px)], fill=(235, 235, 235))
        if i % 2 == 0:
            draw.text((x_px - 8, top + plot_h + 4), f"{fx:.1f}", fill="black", font=small)
            draw.text((6, y_px - 6), f"{fy:.1f}", fill="black", font=small)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    draw.text((left + plot_w // 2 - 30, height - 16), xlabel, fill="black", font=small)
    draw.text((left + 4, top + 2), ylabel, fill=(90, 90, 90), font=small)
    if diagonal:
        draw.line([to_px(xlim[0], ylim[0]), to_px(xlim[1], ylim[1])], fill=(160, 160, 160))
    for index, line in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        segment: list[tuple[float, float]] = []
        for x, y in zip(line.x, line.y):
            if y is None or (isinstance(y, float) and math.isnan(y)):
                if len(segment) > 1:
                    draw.line(segment, fill=color, width=2)
                segment = []
                continue
            y = min(max(y, ylim[0]), ylim[1])
            segment.append(to_px(x, y))
        if len(segment) > 1:
            draw.line(segment, fill=color, width=2)
        elif len(segment) == 1:
            x, y = segment[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        legend_y = top + plot_h - 16 * (len(series) - index)
        draw.line(
            [(left + plot_w - 150, legend_y + 7), (left + plot_w - 134, legend_y + 7)],
            fill=color,
            width=3,
        )
        draw.text((left + plot_w - 130, legend_y), line.label[:22], fill="black", font=small)
    return image


def reliability_diagram(
    accuracy: Sequence[float | None],
    confidence: Sequence[float | None],
    share: Sequence[float],
    title: str,
    size: tuple[int, int] = (320, 320),
):
    """Bars of accuracy per confidence bin against the diagonal; pixel share as grey bars
    along the bottom."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 40, 10, 26, 36
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(13), _font(11)
    plot_w, plot_h = width - left - right, height - top - bottom
    bins = len(accuracy)
    draw.text((left, 5), title, fill="black", font=font)
    peak = max(max(share), 1e-9)
    for b in range(bins):
        x0 = left + b * plot_w / bins
        x1 = left + (b + 1) * plot_w / bins
        acc = accuracy[b]
        if acc is not None and not math.isnan(acc):
            draw.rectangle(
                [x0, top + (1 - acc) * plot_h, x1, top + plot_h],
                fill=(31, 119, 180),
                outline="white",
            )
            conf = confidence[b]
            if conf is not None and not math.isnan(conf) and conf > acc:
                draw.rectangle(
                    [x0, top + (1 - conf) * plot_h, x1, top + (1 - acc) * plot_h],
                    fill=(255, 190, 190),
                    outline="white",
                )
        bar = 0.2 * share[b] / peak * plot_h
        draw.rectangle([x0 + 2, top + plot_h - bar, x1 - 2, top + plot_h], fill=(120, 120, 120))
    draw.line([(left, top + plot_h), (left + plot_w, top)], fill=(200, 0, 0), width=1)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for i in range(0, 11, 2):
        v = i / 10
        draw.text((left + v * plot_w - 8, top + plot_h + 4), f"{v:.1f}", fill="black", font=small)
        draw.text((6, top + (1 - v) * plot_h - 6), f"{v:.1f}", fill="black", font=small)
    draw.text((left + plot_w // 2 - 30, height - 14), "confidence", fill="black", font=small)
    return image


def hstack(images: Sequence, gap: int = 6):
    """Place PIL images side by side on white."""
    from PIL import Image

    width = sum(im.width for im in images) + gap * (len(images) - 1)
    height = max(im.height for im in images)
    canvas = Image.new("RGB", (width, height), "white")
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    return canvas


def vstack(images: Sequence, gap: int = 6):
    """Place PIL images one below the other on white."""
    from PIL import Image

    width = max(im.width for im in images)
    height = sum(im.height for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + gap
    return canvas


def frame_panel(
    image: np.ndarray,
    label: np.ndarray,
    predicted: np.ndarray,
    maps: dict[str, np.ndarray],
    colors: Sequence[Sequence[int]],
    title: str,
    tile_width: int = 240,
):
    """One example frame: input, ground truth, prediction, errors and the maps (turbo)."""
    from PIL import Image, ImageDraw

    from moe_perception.render import colorize_map, palette_lut

    palette = palette_lut(colors)
    error = np.full(label.shape + (3,), 255, dtype=np.uint8)
    error[(predicted == label)] = 0
    error[label == 255] = 96
    tiles = [
        ("input", image),
        ("ground truth", palette[label]),
        ("prediction", palette[predicted]),
        ("errors (white)", error),
    ] + [(name.replace("_", " "), colorize_map(values)) for name, values in maps.items()]
    rendered = []
    for name, array in tiles:
        tile = Image.fromarray(np.ascontiguousarray(array))
        tile = tile.resize((tile_width, round(tile.height * tile_width / tile.width)))
        canvas = Image.new("RGB", (tile.width, tile.height + 18), "white")
        canvas.paste(tile, (0, 18))
        ImageDraw.Draw(canvas).text((2, 2), name, fill="black", font=_font(12))
        rendered.append(canvas)
    rows = [hstack(rendered[:4], 4), hstack(rendered[4:], 4)]
    header = Image.new("RGB", (rows[0].width, 20), "white")
    ImageDraw.Draw(header).text((2, 3), title, fill="black", font=_font(13))
    return vstack([header, *rows], 4)
