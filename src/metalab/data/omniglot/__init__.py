"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): real handwritten characters.

The authors publish each "set" (``images_background``, ``images_evaluation`` and the small
``images_background_small1/2``) as a zip that unpacks to ``<set>/<alphabet>/<character>/<png>``:
105x105 1-bit images, black strokes on white, 20 drawers per character. A set is read either from
the unpacked folder or straight from the zip (no extraction), looked up as

    <root>/<set>/   <root>/<set>.zip   <root>/omniglot-py/<set>/   <root>/omniglot-py/<set>.zip

(the last two are where ``torchvision.datasets.Omniglot(root, download=True)`` puts it).

Each set is decoded once, inverted (stroke = 255 on 0, the convention of the ``glyphs`` dataset),
resized to ``image_size`` with PIL's antialiasing filter and cached as uint8 tensors. The cache key
holds the set name, the image size, the resize recipe and the size/mtime of every source file, so a
changed source is rebuilt. Splitting and rotation work on the cached tensors and take milliseconds.

Splits (``split``):

* ``alphabets`` (default): train = the alphabets of the ``background`` sets, less ``val_alphabets``
  of them held out (fixed ``split_seed``) as val; test = the alphabets of the ``evaluation`` sets
  that are not also background alphabets (the small sets share Greek and Latin).
* ``classes``: every character of every set, shuffled with ``split_seed`` and cut into
  ``n_train_classes`` / ``n_val_classes`` / rest (default 1100 / 100 / 423 on the full 1,623
  characters, Vinyals et al. 2016; scaled proportionally to the characters found otherwise).

``rotations: true`` adds each class rotated by 90, 180 and 270 degrees as three extra classes
(``<name>@rot90`` ... ``@rot270``; ``@rotK`` is ``torch.rot90(image, K // 90, dims=(-2, -1))``, i.e.
counter-clockwise) to the splits named in ``rotate_splits`` (default: train only).

Parts: sets.py (finding a set under root, or downloading it), reading.py (decoding a set once into
cached tensors), splits.py (alphabet and class splits, rotations, pixel statistics) and loading.py
(the arguments' checks and the ImageDataset).
"""

from metalab.data.omniglot.loading import SPLITS, load_omniglot
from metalab.data.omniglot.reading import read_set
from metalab.data.omniglot.sets import DOWNLOADABLE, find_set

__all__ = ["load_omniglot", "find_set", "read_set", "SPLITS", "DOWNLOADABLE"]
