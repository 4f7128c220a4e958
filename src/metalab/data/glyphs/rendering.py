"""Rendering glyph drawings: stroke points are sampled along the curves, splatted (bilinear) onto
a supersampled grid, widened by a per-drawing soft disc pen (one grouped convolution) and
average-pooled down."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SAMPLES = 56  # samples per segment
SUPERSAMPLING = 2  # factor of the rendering grid
CHUNK = 2048  # drawings rendered at once


def render(
    ctrl: np.ndarray,
    nseg: np.ndarray,
    affine: np.ndarray,
    shift: np.ndarray,
    t_ext: np.ndarray,
    radius: np.ndarray,
    image_size: int,
) -> torch.Tensor:
    """Render drawings to ``float32 [B, 1, image_size, image_size]`` in [0, 1].

    ctrl ``[B, K, 7, 2]`` (unit box), nseg ``[B, K]``, affine ``[B, 2, 2]``, shift ``[B, 2]``
    (unit box), t_ext ``[B, K, 2]`` (start/end extension of each stroke's parameter range),
    radius ``[B]`` (pen radius in output pixels).
    """
    out = []
    for i in range(0, len(ctrl), CHUNK):
        sl = slice(i, i + CHUNK)
        out.append(
            _render_chunk(
                ctrl[sl], nseg[sl], affine[sl], shift[sl], t_ext[sl], radius[sl], image_size
            )
        )
    return torch.cat(out)


def _render_chunk(ctrl, nseg, affine, shift, t_ext, radius, image_size) -> torch.Tensor:
    """One chunk of ``render``; shapes below: B drawings, K strokes, T samples per segment."""
    n_drawings, n_strokes = nseg.shape
    side = image_size * SUPERSAMPLING
    # parameter ranges per segment: the first starts at -ext0, the last ends at 1 + ext1
    start = np.zeros((n_drawings, n_strokes, 2))
    stop = np.ones((n_drawings, n_strokes, 2))
    start[:, :, 0] = -t_ext[:, :, 0]
    stop[:, :, 0] = np.where(nseg == 1, 1.0 + t_ext[:, :, 1], 1.0)
    stop[:, :, 1] = 1.0 + t_ext[:, :, 1]
    unit = np.linspace(0.0, 1.0, SAMPLES)
    param = start[..., None] + (stop - start)[..., None] * unit  # [B, K, 2, T]
    rest = 1.0 - param
    weights = np.stack(
        [rest**3, 3 * rest * rest * param, 3 * rest * param * param, param**3], axis=-1
    )  # [B, K, 2, T, 4]
    segments = np.stack([ctrl[:, :, 0:4], ctrl[:, :, 3:7]], axis=2)  # [B, K, 2, 4, 2]
    points = weights @ segments  # [B, K, 2, T, 2]
    points = np.einsum("bij,bkstj->bksti", affine, points) + shift[:, None, None, None, :]
    points = side / 2 + points * (0.4 * side)  # pixel units; pixel i covers [i, i + 1)
    # ink per point = its share of the curve length, so density does not depend on speed
    step = np.linalg.norm(np.diff(points, axis=3), axis=-1)  # [B, K, 2, T-1]
    mass = np.zeros(points.shape[:-1])
    mass[..., :-1] += step / 2
    mass[..., 1:] += step / 2
    present = np.arange(2)[None, None, :] < nseg[:, :, None]  # [B, K, 2]
    mass = mass * present[..., None]
    # dots and tiny strokes still leave a mark
    mass[..., SAMPLES // 2] += 0.5 * present
    # bilinear splat on the supersampled grid
    px = points[..., 0] - 0.5
    py = points[..., 1] - 0.5
    left, top = np.floor(px), np.floor(py)
    frac_x, frac_y = px - left, py - top
    left, top = left.astype(np.int64), top.astype(np.int64)
    offset = np.arange(n_drawings).reshape(n_drawings, 1, 1, 1) * (side * side)
    cells, inks = [], []
    for dx, dy, share in (
        (0, 0, (1 - frac_x) * (1 - frac_y)),
        (1, 0, frac_x * (1 - frac_y)),
        (0, 1, (1 - frac_x) * frac_y),
        (1, 1, frac_x * frac_y),
    ):
        col, row = left + dx, top + dy
        inside = (col >= 0) & (col < side) & (row >= 0) & (row < side)
        cells.append((offset + row * side + col)[inside])
        inks.append((share * mass)[inside])
    grid = np.bincount(
        np.concatenate(cells), np.concatenate(inks), minlength=n_drawings * side * side
    )
    grid = torch.from_numpy(grid.astype(np.float32)).view(1, n_drawings, side, side)
    # per-drawing soft disc pen
    pen_radius = radius * SUPERSAMPLING
    reach = int(math.ceil(pen_radius.max() + 1.0))
    distance = np.hypot(*np.meshgrid(np.arange(-reach, reach + 1), np.arange(-reach, reach + 1)))
    pen = np.clip(pen_radius[:, None, None] + 0.5 - distance[None], 0.0, 1.0).astype(np.float32)
    pen = torch.from_numpy(pen).unsqueeze(1)  # [B, 1, k, k]
    ink = F.conv2d(grid, pen, padding=reach, groups=n_drawings).view(n_drawings, 1, side, side)
    ink = ink.clamp_(0.0, 1.0)
    return F.avg_pool2d(ink, SUPERSAMPLING)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
