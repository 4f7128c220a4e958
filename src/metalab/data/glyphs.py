"""``glyphs``: a procedural, Omniglot-like set of handwritten-style characters (no download).

Structure (all drawn from ``seed``):

* ``n_alphabets`` alphabets, each with its own stroke *style*: preferred stroke kinds (lines,
  arcs, hooks, loops, dots, corners, waves), curvature, stroke length, number of strokes,
  whether strokes join each other and whether directions snap to multiples of 45 degrees;
* ``min_chars..max_chars`` characters per alphabet, each a set of 1-4 strokes (chains of one or
  two cubic Bezier segments) built from the alphabet's style; characters of one alphabet that
  render too much alike are re-drawn, so no two collapse into near-duplicates;
* every character is drawn by ``drawers`` simulated drawers (like Omniglot's 20): each drawer
  has a personal slant, size and pen width, and every drawing adds its own jitter of stroke
  control points and positions, stroke-end overshoot or undershoot, pen width and a small affine
  change (rotation, scale, shear, translation).

Images are ``uint8 [N, 1, image_size, image_size]`` with **bright strokes (255) on a dark
background (0)**, like MNIST. Rendering is vectorised: stroke points are sampled along the
curves, splatted (bilinear) onto a 2x supersampled grid, widened by a per-drawing soft disc
kernel (one grouped convolution) and average-pooled down.

Splits are disjoint by alphabet: the first ``1 - val_fraction - test_fraction`` of the
alphabets train, the next ``val_fraction`` validate, the last ``test_fraction`` test. Labels
are remapped to ``0..n_classes-1`` inside each split; class names read ``alphabet07/char12``.

The generated tensors are cached in ``cache_dir`` under a name keyed by ``GENERATOR_VERSION``
and every parameter: bump ``GENERATOR_VERSION`` on any change of the drawing code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metalab.data.cache import cache_key, cached
from metalab.data.tensors import ImageDataset, ImageSplit
from metalab.errors import ConfigError

GENERATOR_VERSION = 2  # 1: an early draft (its cache files are stale)

_KEY = "dataset.load"
_KINDS = ("line", "arc", "hook", "loop", "dot", "corner", "wave")
_MAX_STROKES = 4
_N_CTRL = 7  # two cubic segments sharing their middle point
_T = 56  # samples per segment
_SUPER = 2  # supersampling factor of the rendering grid
_CHUNK = 2048  # drawings rendered at once


# --------------------------------------------------------------------------------------------
# public entry point


def load_glyphs(
    cache_dir: str,
    seed: int = 0,
    image_size: int = 28,
    n_alphabets: int = 50,
    drawers: int = 20,
    min_chars: int = 20,
    max_chars: int = 35,
    val_fraction: float = 0.1,
    test_fraction: float = 0.3,
    jitter: float = 1.0,
) -> ImageDataset:
    """Generate (or load from the cache) the glyphs dataset, split by alphabet.

    ``jitter`` scales every per-drawing variation (0 draws each character identically 20 times;
    1 is the calibrated default).
    """
    params = _validate(
        seed=seed,
        image_size=image_size,
        n_alphabets=n_alphabets,
        drawers=drawers,
        min_chars=min_chars,
        max_chars=max_chars,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        jitter=jitter,
    )
    path = cache_path(cache_dir, **params)
    data = cached(path, lambda: _generate(**params))
    return _to_dataset(data, params["drawers"])


def cache_path(cache_dir: str | Path, **params) -> Path:
    """The cache file for ``params``: its name changes with ``GENERATOR_VERSION`` and each one."""
    items = tuple(sorted(params.items()))
    key = cache_key("glyphs", GENERATOR_VERSION, items)
    return Path(cache_dir) / f"glyphs-v{GENERATOR_VERSION}-{key}.pt"


def _validate(**p) -> dict:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    if not is_int(p["seed"]) or p["seed"] < 0:
        raise ConfigError(f"{_KEY}.seed", p["seed"], "must be a non-negative integer")
    # the config sets dataset.image_size and interpolates it into dataset.load.image_size
    if not is_int(p["image_size"]) or not 16 <= p["image_size"] <= 256:
        raise ConfigError(
            "dataset.image_size", p["image_size"], "must be an integer between 16 and 256"
        )
    if not is_int(p["drawers"]) or not 2 <= p["drawers"] <= 1000:
        raise ConfigError(f"{_KEY}.drawers", p["drawers"], "must be an integer between 2 and 1000")
    if not is_int(p["min_chars"]) or p["min_chars"] < 2:
        raise ConfigError(f"{_KEY}.min_chars", p["min_chars"], "must be an integer >= 2")
    if not is_int(p["max_chars"]) or not p["min_chars"] <= p["max_chars"] <= 1000:
        raise ConfigError(
            f"{_KEY}.max_chars",
            p["max_chars"],
            f"must be an integer between min_chars ({p['min_chars']}) and 1000",
        )
    for name in ("val_fraction", "test_fraction"):
        v = p[name]
        if not is_num(v) or not 0.0 < v < 1.0:
            raise ConfigError(f"{_KEY}.{name}", v, "must be a number strictly between 0 and 1")
    if p["val_fraction"] + p["test_fraction"] >= 1.0:
        raise ConfigError(
            f"{_KEY}.test_fraction",
            p["test_fraction"],
            f"val_fraction + test_fraction must be < 1 (val_fraction={p['val_fraction']})",
        )
    if not is_num(p["jitter"]) or not 0.0 <= p["jitter"] <= 3.0:
        raise ConfigError(f"{_KEY}.jitter", p["jitter"], "must be a number between 0 and 3")
    if not is_int(p["n_alphabets"]) or p["n_alphabets"] > 1000:
        raise ConfigError(f"{_KEY}.n_alphabets", p["n_alphabets"], "must be an integer <= 1000")
    counts = _split_counts(p["n_alphabets"], p["val_fraction"], p["test_fraction"])
    if min(counts) < 1:
        raise ConfigError(
            f"{_KEY}.n_alphabets",
            p["n_alphabets"],
            "too few alphabets for train/val/test splits of at least one alphabet each "
            f"(would be {counts[0]}/{counts[1]}/{counts[2]} with val_fraction="
            f"{p['val_fraction']}, test_fraction={p['test_fraction']})",
        )
    out = {k: int(v) for k, v in p.items() if k not in ("val_fraction", "test_fraction", "jitter")}
    out.update({k: float(p[k]) for k in ("val_fraction", "test_fraction", "jitter")})
    return out


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    n_val = int(n * val_fraction + 0.5)
    n_test = int(n * test_fraction + 0.5)
    return n - n_val - n_test, n_val, n_test


def _to_dataset(data: dict, drawers: int) -> ImageDataset:
    images, split = data["images"], data["char_split"]
    alphabet, index = data["char_alphabet"], data["char_index"]
    splits = []
    for s in range(3):
        chars = torch.nonzero(split == s).flatten()
        rows = (chars[:, None] * drawers + torch.arange(drawers)[None, :]).flatten()
        labels = torch.arange(len(chars), dtype=torch.int64).repeat_interleave(drawers)
        names = [f"alphabet{int(alphabet[c]):02d}/char{int(index[c]):02d}" for c in chars]
        split_images = images[rows].contiguous()
        splits.append(ImageSplit(images=split_images, labels=labels, class_names=names))
    train = splits[0].images.float().div_(255.0)
    mean, std = float(train.mean()), float(train.std())
    return ImageDataset(train=splits[0], val=splits[1], test=splits[2], mean=(mean,), std=(std,))


# --------------------------------------------------------------------------------------------
# characters: alphabet styles and strokes in the unit box [-1, 1]^2 (y points down)


def _bezier(ctrl: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points of a cubic Bezier ``ctrl [4, 2]`` at parameters ``t [T]``."""
    u = 1.0 - t
    w = np.stack([u**3, 3 * u * u * t, 3 * u * t * t, t**3], axis=-1)
    return w @ ctrl


def _stroke_points(ctrl: np.ndarray, nseg: int, n: int = 12) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    pts = [_bezier(ctrl[0:4], t)]
    if nseg == 2:
        pts.append(_bezier(ctrl[3:7], t))
    return np.concatenate(pts)


def _arc_segment(center, radius, aspect, a, b) -> np.ndarray:
    """Four control points of one cubic approximating an elliptic arc from angle a to b."""
    k = 4.0 / 3.0 * math.tan((b - a) / 4.0)
    scale = np.array([radius, radius * aspect])
    p0 = np.array([math.cos(a), math.sin(a)])
    p3 = np.array([math.cos(b), math.sin(b)])
    p1 = p0 + k * np.array([-math.sin(a), math.cos(a)])
    p2 = p3 - k * np.array([-math.sin(b), math.cos(b)])
    return np.stack([p0, p1, p2, p3]) * scale + np.asarray(center)


def _arc_ctrl(center, radius, aspect, a0, sweep) -> np.ndarray:
    """Seven control points of an elliptic arc from angle ``a0`` over ``sweep`` (two segments)."""
    first = _arc_segment(center, radius, aspect, a0, a0 + sweep / 2)
    second = _arc_segment(center, radius, aspect, a0 + sweep / 2, a0 + sweep)
    return np.concatenate([first, second[1:]])


def _line_ctrl(p0, p1, bend) -> np.ndarray:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    nrm = np.array([-d[1], d[0]])
    c1 = p0 + d / 3 + nrm * bend
    c2 = p0 + 2 * d / 3 + nrm * bend
    return np.stack([p0, c1, c2, p1, p1, p1, p1])


def _straight(p0, p1) -> np.ndarray:
    return np.stack([p0 + (p1 - p0) * f for f in (0.0, 1 / 3, 2 / 3, 1.0)])


class _Style:
    """One alphabet's stroke style."""

    def __init__(self, rng: np.random.Generator):
        self.kind_p = rng.dirichlet(np.full(len(_KINDS), 0.6))
        self.kind_p[_KINDS.index("dot")] *= 0.4
        self.kind_p /= self.kind_p.sum()
        mean_strokes = rng.uniform(1.6, 3.6)
        p = np.exp(-0.5 * ((np.arange(1, _MAX_STROKES + 1) - mean_strokes) / 0.8) ** 2)
        self.n_strokes_p = p / p.sum()
        self.curvature = rng.uniform(0.1, 0.9)
        self.length = rng.uniform(0.8, 1.4)
        self.connect = rng.uniform(0.2, 0.9)
        self.snap = rng.uniform(0.0, 1.0) ** 2  # probability of 45-degree snapped directions
        self.aspect = math.exp(rng.normal(0.0, 0.15))
        self.roundness = rng.uniform(0.6, 1.3)  # ellipse aspect of arcs and loops
        self.dot_size = rng.uniform(0.03, 0.08)

    def angle(self, rng) -> float:
        if rng.random() < self.snap:
            return rng.integers(8) * math.pi / 4 + rng.normal(0, 0.05)
        return rng.uniform(0, 2 * math.pi)


def _make_stroke(style: _Style, rng, kind: str, start: np.ndarray) -> tuple[np.ndarray, int]:
    L = style.length * rng.uniform(0.55, 1.3)
    if kind == "line":
        a = style.angle(rng)
        end = start + L * np.array([math.cos(a), math.sin(a)])
        return _line_ctrl(start, end, rng.normal(0, 0.25 * style.curvature)), 1
    if kind == "wave":
        a = style.angle(rng)
        d = L * np.array([math.cos(a), math.sin(a)])
        nrm = np.array([-d[1], d[0]]) * (0.35 + 0.5 * style.curvature) * rng.choice([-1, 1])
        c = np.stack([start, start + d / 3 + nrm, start + 2 * d / 3 - nrm, start + d])
        return np.concatenate([c, np.repeat(c[-1:], 3, 0)]), 1
    if kind == "corner":
        a = style.angle(rng)
        turn = rng.choice([-1, 1]) * rng.uniform(0.45, 0.8) * math.pi
        if rng.random() < style.snap:
            turn = rng.choice([-1, 1]) * rng.choice([0.5, 0.75]) * math.pi
        m = start + 0.7 * L * np.array([math.cos(a), math.sin(a)])
        e = m + 0.7 * L * rng.uniform(0.6, 1.2) * np.array([math.cos(a + turn), math.sin(a + turn)])
        return np.concatenate([_straight(start, m), _straight(m, e)[1:]]), 2
    if kind in ("arc", "loop"):
        r = 0.45 * L * (0.8 if kind == "loop" else 1.0)
        sweep = rng.uniform(1.7, 4.2) if kind == "arc" else rng.uniform(5.6, 6.5)
        sweep *= rng.choice([-1, 1])
        a0 = style.angle(rng)
        aspect = style.roundness * math.exp(rng.normal(0, 0.15))
        center = start - np.array([r * math.cos(a0), r * aspect * math.sin(a0)])
        return _arc_ctrl(center, r, aspect, a0, sweep), 2
    if kind == "hook":
        a = style.angle(rng)
        d = np.array([math.cos(a), math.sin(a)])
        m = start + 0.8 * L * d
        line = _straight(start, m)
        side = rng.choice([-1, 1])
        r = rng.uniform(0.15, 0.3) * style.length
        nrm = side * np.array([-d[1], d[0]])
        center = m + r * nrm
        a0 = math.atan2(m[1] - center[1], m[0] - center[0])
        sweep = side * rng.uniform(2.0, 3.4)  # turns towards the centre, tangent-continuous
        h = _arc_segment(center, r, 1.0, a0, a0 + sweep)
        return np.concatenate([line, h[1:]]), 2
    # dot: a very short straight stroke
    a = rng.uniform(0, 2 * math.pi)
    end = start + style.dot_size * np.array([math.cos(a), math.sin(a)])
    return _line_ctrl(start, end, 0.0), 1


def _make_character(style: _Style, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control points ``[K, 7, 2]``, segment counts ``[K]`` (0 = absent) and dot flags ``[K]``."""
    n = rng.choice(np.arange(1, _MAX_STROKES + 1), p=style.n_strokes_p)
    ctrl = np.zeros((_MAX_STROKES, _N_CTRL, 2))
    nseg = np.zeros(_MAX_STROKES, dtype=np.int64)
    is_dot = np.zeros(_MAX_STROKES, dtype=bool)
    pts = []
    for k in range(n):
        p = style.kind_p.copy()
        if k == 0:
            p[_KINDS.index("dot")] = 0.0
            p /= p.sum()
        kind = _KINDS[rng.choice(len(_KINDS), p=p)]
        if kind == "dot":  # next to a stroke, like a diacritic
            prev = pts[rng.integers(k)]
            a = rng.uniform(0, 2 * math.pi)
            offset = rng.uniform(0.25, 0.45) * np.array([math.cos(a), math.sin(a)])
            start = prev[rng.integers(len(prev))] + offset
        elif k > 0 and rng.random() < style.connect:
            prev = pts[rng.integers(k)]
            start = prev[rng.choice([0, len(prev) // 2, len(prev) - 1, rng.integers(len(prev))])]
        else:
            start = rng.uniform(-0.7, 0.7, size=2)
        c, s = _make_stroke(style, rng, kind, start)
        ctrl[k], nseg[k], is_dot[k] = c, s, kind == "dot"
        pts.append(_stroke_points(c, s))
    # normalise: centre the bounding box, fit the larger side into [-0.85, 0.85]
    allp = np.concatenate(pts)
    lo, hi = allp.min(0), allp.max(0)
    scale = min(1.7 / max(float((hi - lo).max()), 1e-6), 2.5)
    sx = scale * min(style.aspect, 1.0)
    sy = scale * min(1.0 / style.aspect, 1.0)
    ctrl = (ctrl - (lo + hi) / 2) * np.array([sx, sy])
    ctrl[nseg == 0] = 0.0
    return ctrl, nseg, is_dot


# --------------------------------------------------------------------------------------------
# rendering


def _render(
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
    for i in range(0, len(ctrl), _CHUNK):
        sl = slice(i, i + _CHUNK)
        out.append(
            _render_chunk(
                ctrl[sl], nseg[sl], affine[sl], shift[sl], t_ext[sl], radius[sl], image_size
            )
        )
    return torch.cat(out)


def _render_chunk(ctrl, nseg, affine, shift, t_ext, radius, image_size) -> torch.Tensor:
    B, K = nseg.shape
    G = image_size * _SUPER
    # parameter ranges per segment: the first starts at -ext0, the last ends at 1 + ext1
    lo = np.zeros((B, K, 2))
    hi = np.ones((B, K, 2))
    lo[:, :, 0] = -t_ext[:, :, 0]
    hi[:, :, 0] = np.where(nseg == 1, 1.0 + t_ext[:, :, 1], 1.0)
    hi[:, :, 1] = 1.0 + t_ext[:, :, 1]
    u = np.linspace(0.0, 1.0, _T)
    t = lo[..., None] + (hi - lo)[..., None] * u  # [B, K, 2, T]
    v = 1.0 - t
    w = np.stack([v**3, 3 * v * v * t, 3 * v * t * t, t**3], axis=-1)  # [B, K, 2, T, 4]
    seg = np.stack([ctrl[:, :, 0:4], ctrl[:, :, 3:7]], axis=2)  # [B, K, 2, 4, 2]
    pts = w @ seg  # [B, K, 2, T, 2]
    pts = np.einsum("bij,bkstj->bksti", affine, pts) + shift[:, None, None, None, :]
    pts = G / 2 + pts * (0.4 * G)  # pixel units; pixel i covers [i, i + 1)
    # ink per point = its share of the curve length, so density does not depend on speed
    step = np.linalg.norm(np.diff(pts, axis=3), axis=-1)  # [B, K, 2, T-1]
    mass = np.zeros(pts.shape[:-1])
    mass[..., :-1] += step / 2
    mass[..., 1:] += step / 2
    present = np.arange(2)[None, None, :] < nseg[:, :, None]  # [B, K, 2]
    mass = mass * present[..., None]
    # dots and tiny strokes still leave a mark
    mass[..., _T // 2] += 0.5 * present
    # bilinear splat on the supersampled grid
    x = pts[..., 0] - 0.5
    y = pts[..., 1] - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    base = np.arange(B).reshape(B, 1, 1, 1) * (G * G)
    idx, wts = [], []
    for dx, dy, wgt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xx, yy = x0 + dx, y0 + dy
        ok = (xx >= 0) & (xx < G) & (yy >= 0) & (yy < G)
        idx.append((base + yy * G + xx)[ok])
        wts.append((wgt * mass)[ok])
    grid = np.bincount(np.concatenate(idx), np.concatenate(wts), minlength=B * G * G)
    grid = torch.from_numpy(grid.astype(np.float32)).view(1, B, G, G)
    # per-drawing soft disc pen
    r = radius * _SUPER
    half = int(math.ceil(r.max() + 1.0))
    d = np.hypot(*np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1)))
    kern = np.clip(r[:, None, None] + 0.5 - d[None], 0.0, 1.0).astype(np.float32)
    kern = torch.from_numpy(kern).unsqueeze(1)  # [B, 1, k, k]
    ink = F.conv2d(grid, kern, padding=half, groups=B).view(B, 1, G, G)
    ink = ink.clamp_(0.0, 1.0)
    return F.avg_pool2d(ink, _SUPER)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _canonical(ctrl: np.ndarray, nseg: np.ndarray, size: int) -> np.ndarray:
    """Blurred, undistorted renders ``[C, size*size]`` used to spot near-duplicate characters."""
    C = len(ctrl)
    img = _render(
        ctrl,
        nseg,
        np.tile(np.eye(2), (C, 1, 1)),
        np.zeros((C, 2)),
        np.zeros((C, _MAX_STROKES, 2)),
        np.full(C, 0.9),
        size,
    )
    img = F.avg_pool2d(img, 3, stride=1, padding=1)
    flat = img.flatten(1).double().numpy()
    return flat


def _too_close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised distance between rows of ``a`` and ``b`` (0 = identical, ~1 = disjoint)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    n2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None]
    return np.sqrt(np.maximum(d2, 0) / np.maximum(n2, 1e-9))


_MIN_DISTANCE = 0.45  # normalised canonical distance below which a character is re-drawn


def _characters(seed: int, counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """All alphabets' characters: control points, segment counts, dot flags, alphabet ids.

    Each alphabet draws from its own random stream. A character whose canonical render is too
    close to an earlier character of its alphabet is re-drawn (up to 8 rounds, all alphabets
    rendered in one batch per round).
    """
    streams = np.random.SeedSequence([GENERATOR_VERSION, seed]).spawn(len(counts))
    rngs = [np.random.default_rng(s) for s in streams]
    styles = [_Style(r) for r in rngs]
    chars = [[_make_character(st, r) for _ in range(n)] for st, r, n in zip(styles, rngs, counts)]
    for _ in range(8):
        flat = [c for alphabet in chars for c in alphabet]
        canon = _canonical(np.stack([c[0] for c in flat]), np.stack([c[1] for c in flat]), 20)
        start, redone = 0, False
        for a, alphabet in enumerate(chars):
            n = len(alphabet)
            dist = _too_close(canon[start : start + n], canon[start : start + n])
            start += n
            for j in range(1, n):
                if dist[j, :j].min() < _MIN_DISTANCE:
                    alphabet[j] = _make_character(styles[a], rngs[a])
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


def _generate(
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
    ctrl, nseg, dots, alpha = _characters(seed, counts)
    index = np.concatenate([np.arange(n) for n in counts])
    C, D, K = len(ctrl), drawers, _MAX_STROKES
    j = jitter

    rng = np.random.default_rng(np.random.SeedSequence([GENERATOR_VERSION, seed, 1]))
    # drawers: personal slant, size, pen width and stroke-end habit
    d_slant = rng.normal(0.0, 0.12 * j, D)
    d_scale = np.exp(rng.normal(0.0, 0.06 * j, D))
    d_pen = np.exp(rng.normal(0.0, 0.15 * j, D))
    d_over = rng.normal(0.03, 0.04 * j, D)
    # every drawing: control point and stroke position jitter
    noise = rng.normal(0.0, 0.07 * j, (C, D, K, _N_CTRL, 2))
    noise += rng.normal(0.0, 0.08 * j, (C, D, K, 1, 2))
    # tie the shared joint so two-segment strokes stay continuous (shared point already is)
    dctrl = ctrl[:, None] + noise
    # dots do not deform, they only move
    dctrl = np.where(dots[:, None, :, None, None], ctrl[:, None] + noise[:, :, :, :1], dctrl)
    t_ext = d_over[None, :, None, None] + rng.normal(0.0, 0.05 * j, (C, D, K, 2))
    t_ext = np.clip(t_ext, -0.12, 0.2)
    t_ext = np.where(dots[:, None, :, None], 0.0, t_ext)
    rot = rng.normal(0.0, 0.12 * j, (C, D))
    scale = d_scale[None] * np.exp(rng.normal(0.0, 0.07 * j, (C, D)))
    aspect = np.exp(rng.normal(0.0, 0.06 * j, (C, D)))
    shear = d_slant[None] + rng.normal(0.0, 0.08 * j, (C, D))
    cos, sin = np.cos(rot), np.sin(rot)
    R = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    S = np.zeros((C, D, 2, 2))
    S[..., 0, 0] = scale * aspect
    S[..., 0, 1] = shear * scale / aspect
    S[..., 1, 1] = scale / aspect
    affine = R @ S
    shift = rng.normal(0.0, 0.05 * j, (C, D, 2))
    radius = 0.6 * d_pen[None] * np.exp(rng.normal(0.0, 0.12 * j, (C, D)))
    radius = np.clip(radius, 0.45, None) * image_size / 28.0

    imgs = _render(
        dctrl.reshape(C * D, K, _N_CTRL, 2),
        np.repeat(nseg, D, axis=0),
        affine.reshape(C * D, 2, 2),
        shift.reshape(C * D, 2),
        t_ext.reshape(C * D, K, 2),
        radius.reshape(C * D),
        image_size,
    )
    n_train, n_val, _ = _split_counts(n_alphabets, val_fraction, test_fraction)
    split = np.where(alpha < n_train, 0, np.where(alpha < n_train + n_val, 1, 2))
    return {
        "images": _to_uint8(imgs),
        "char_alphabet": torch.from_numpy(alpha.astype(np.int64)),
        "char_index": torch.from_numpy(index.astype(np.int64)),
        "char_split": torch.from_numpy(split.astype(np.int64)),
    }
