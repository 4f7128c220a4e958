"""Generating the glyphs set from a seed: distinct characters per alphabet (a character rendered
too much like an earlier one of its alphabet is re-drawn), each drawn by simulated drawers with
their own slant, size and pen, plus per-drawing jitter; the split by alphabet."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from metalab.data.glyphs.rendering import render, to_uint8
from metalab.data.glyphs.strokes import MAX_STROKES, N_CTRL, AlphabetStyle, make_character

GENERATOR_VERSION = 2  # 1: an early draft (its cache files are stale); bump on any change


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    n_val = int(n * val_fraction + 0.5)
    n_test = int(n * test_fraction + 0.5)
    return n - n_val - n_test, n_val, n_test


def canonical_renders(ctrl: np.ndarray, nseg: np.ndarray, size: int) -> np.ndarray:
    """Blurred, undistorted renders ``[n_chars, size*size]``: near-duplicate characters show."""
    n_chars = len(ctrl)
    img = render(
        ctrl,
        nseg,
        np.tile(np.eye(2), (n_chars, 1, 1)),
        np.zeros((n_chars, 2)),
        np.zeros((n_chars, MAX_STROKES, 2)),
        np.full(n_chars, 0.9),
        size,
    )
    img = F.avg_pool2d(img, 3, stride=1, padding=1)
    flat = img.flatten(1).double().numpy()
    return flat


def render_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised distance between rows of ``a`` and ``b`` (0 = identical, ~1 = disjoint)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    n2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None]
    return np.sqrt(np.maximum(d2, 0) / np.maximum(n2, 1e-9))


MIN_DISTANCE = 0.45  # normalised canonical distance below which a character is re-drawn


def distinct_characters(seed: int, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """All alphabets' characters: control points, segment counts, dot flags, alphabet ids.

    Each alphabet draws from its own random stream. A character whose canonical render is too
    close to an earlier character of its alphabet is re-drawn (up to 8 rounds, all alphabets
    rendered in one batch per round).
    """
    streams = np.random.SeedSequence([GENERATOR_VERSION, seed]).spawn(len(counts))
    rngs = [np.random.default_rng(s) for s in streams]
    styles = [AlphabetStyle(r) for r in rngs]
    chars = [[make_character(st, r) for _ in range(n)] for st, r, n in zip(styles, rngs, counts)]
    for _ in range(8):
        flat = [c for alphabet in chars for c in alphabet]
        canon = canonical_renders(
            np.stack([c[0] for c in flat]), np.stack([c[1] for c in flat]), 20
        )
        start, redone = 0, False
        for a, alphabet in enumerate(chars):
            n = len(alphabet)
            dist = render_distance(canon[start : start + n], canon[start : start + n])
            start += n
            for j in range(1, n):
                if dist[j, :j].min() < MIN_DISTANCE:
                    alphabet[j] = make_character(styles[a], rngs[a])
                    redone = True
        if not redone:
            break
    flat = [c for alphabet in chars for c in alphabet]
    alpha = np.repeat(np.arange(len(counts)), counts)
    return (
        np.stack([c[0] for c in flat]),
        np.stack([c[1] for c in flat]),
        np.stack([c[2] for c in flat]),
        alpha,
    )


def generate(
    seed: int,
    image_size: int,
    n_alphabets: int,
    drawers: int,
    min_chars: int,
    max_chars: int,
    val_fraction: float,
    test_fraction: float,
    jitter: float,
) -> dict:
    rng_counts = np.random.default_rng(np.random.SeedSequence([GENERATOR_VERSION, seed, 2]))
    counts = rng_counts.integers(min_chars, max_chars + 1, size=n_alphabets)
    ctrl, nseg, dots, alpha = distinct_characters(seed, counts)
    index = np.concatenate([np.arange(n) for n in counts])
    n_chars, n_drawers, n_strokes = len(ctrl), drawers, MAX_STROKES

    rng = np.random.default_rng(np.random.SeedSequence([GENERATOR_VERSION, seed, 1]))
    # drawers: personal slant, size, pen width and stroke-end habit
    d_slant = rng.normal(0.0, 0.12 * jitter, n_drawers)
    d_scale = np.exp(rng.normal(0.0, 0.06 * jitter, n_drawers))
    d_pen = np.exp(rng.normal(0.0, 0.15 * jitter, n_drawers))
    d_over = rng.normal(0.03, 0.04 * jitter, n_drawers)
    # every drawing: control point and stroke position jitter
    noise = rng.normal(0.0, 0.07 * jitter, (n_chars, n_drawers, n_strokes, N_CTRL, 2))
    noise += rng.normal(0.0, 0.08 * jitter, (n_chars, n_drawers, n_strokes, 1, 2))
    # tie the shared joint so two-segment strokes stay continuous (shared point already is)
    dctrl = ctrl[:, None] + noise
    # dots do not deform, they only move
    dctrl = np.where(dots[:, None, :, None, None], ctrl[:, None] + noise[:, :, :, :1], dctrl)
    t_ext = d_over[None, :, None, None] + rng.normal(
        0.0, 0.05 * jitter, (n_chars, n_drawers, n_strokes, 2)
    )
    t_ext = np.clip(t_ext, -0.12, 0.2)
    t_ext = np.where(dots[:, None, :, None], 0.0, t_ext)
    rot = rng.normal(0.0, 0.12 * jitter, (n_chars, n_drawers))
    scale = d_scale[None] * np.exp(rng.normal(0.0, 0.07 * jitter, (n_chars, n_drawers)))
    aspect = np.exp(rng.normal(0.0, 0.06 * jitter, (n_chars, n_drawers)))
    shear = d_slant[None] + rng.normal(0.0, 0.08 * jitter, (n_chars, n_drawers))
    cos, sin = np.cos(rot), np.sin(rot)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    stretch = np.zeros((n_chars, n_drawers, 2, 2))
    stretch[..., 0, 0] = scale * aspect
    stretch[..., 0, 1] = shear * scale / aspect
    stretch[..., 1, 1] = scale / aspect
    affine = rotation @ stretch
    shift = rng.normal(0.0, 0.05 * jitter, (n_chars, n_drawers, 2))
    radius = 0.6 * d_pen[None] * np.exp(rng.normal(0.0, 0.12 * jitter, (n_chars, n_drawers)))
    radius = np.clip(radius, 0.45, None) * image_size / 28.0

    imgs = render(
        dctrl.reshape(n_chars * n_drawers, n_strokes, N_CTRL, 2),
        np.repeat(nseg, n_drawers, axis=0),
        affine.reshape(n_chars * n_drawers, 2, 2),
        shift.reshape(n_chars * n_drawers, 2),
        t_ext.reshape(n_chars * n_drawers, n_strokes, 2),
        radius.reshape(n_chars * n_drawers),
        image_size,
    )
    n_train, n_val, _ = split_counts(n_alphabets, val_fraction, test_fraction)
    split = np.where(alpha < n_train, 0, np.where(alpha < n_train + n_val, 1, 2))
    return {
        "images": to_uint8(imgs),
        "char_alphabet": torch.from_numpy(alpha.astype(np.int64)),
        "char_index": torch.from_numpy(index.astype(np.int64)),
        "char_split": torch.from_numpy(split.astype(np.int64)),
    }
