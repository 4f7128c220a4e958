"""metalab-compare: runs side by side, from run and sweep folders or from a W&B project.

    metalab-compare outputs/multirun/2026-01-02_10-00-00          # a sweep folder
    metalab-compare 'outputs/2026-01-0*/*_protonet-*' --out cmp   # run folders (globs)
    metalab-compare --wandb my-team/metalab --group 2026-01-02_10-00-00

Runs whose configs differ only in `seed` form a group (--ignore KEYS: more keys that do not
split groups; --group-by KEYS: group by these keys only). Prints one row per group: the mean over
seeds, the 95% CI across seeds (t, n-1 degrees of freedom), the number of seeds, the 95% CI over
the test episodes and the protocol; groups are ranked by their best validation metric (what a
sweep optimises; test only when there is no validation, with a warning). Then pairs the chosen
group with every other group tested on the same episodes the same way (paired t test on the
seed-averaged per-episode results, Holm-corrected), and writes an interactive, self-contained
HTML report (compare.html) to --out, by default the given folder.
"""

from metalab.compare.cli import main

__all__ = ["main"]
