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

Parts: strokes.py (alphabet styles, strokes and characters in the unit box), rendering.py (curves
to pixels), generation.py (distinct characters per alphabet, simulated drawers, the split by
alphabet) and loading.py (the parameters' checks, the cache, the ImageDataset).
"""

from metalab.data.glyphs.generation import GENERATOR_VERSION
from metalab.data.glyphs.loading import cache_path, load_glyphs

__all__ = ["GENERATOR_VERSION", "cache_path", "load_glyphs"]
