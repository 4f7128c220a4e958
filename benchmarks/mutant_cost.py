"""CPU seconds per mutant of `make mutants`, measured as mutmut's fork server pays them, run by
hand after a `make mutants` (it needs the mutants/ folder and its recorded stats):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/mutant_cost.py \\
        "metalab.algorithms.embedding*" 30
    ... --with-unraisable    # pytest's unraisable-exception plugin back on, as before

It warms up as the fork server does (pytest collects the selected test files once), then forks
one child per mutant, for a random sample of the module's mutants (seed 0), which runs the
mutant's tests through mutmut's own runner; the CPU time of each child (``os.wait4``) is the
figure. The result codes are printed too (1: killed, 0: survived, 5: no test of its module), so
that two settings can be seen to decide the same mutants, and the survivors' names (for
`.venv/bin/mutmut show`): a sample's kill rate where a whole module's run would take too long.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pattern", help='mutant names, e.g. "metalab.data.sampler*"')
    parser.add_argument("count", type=int, help="how many of them (a random sample)")
    parser.add_argument("--with-unraisable", action="store_true")
    args = parser.parse_args()

    from mutmut.__main__ import mangled_name_from_mutant_name
    from mutmut.configuration import config
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.runners.harness import PytestRunner
    from mutmut.state import state
    from mutmut.stats import load_stats
    from mutmut.utils.file_utils import setup_source_paths

    if args.with_unraisable:
        extra = config().pytest_add_cli_args
        i = extra.index("no:unraisableexception")
        del extra[i - 1 : i + 1]
    setup_source_paths()
    if not load_stats():
        sys.exit("no mutants/mutmut-stats.json: run `make mutants` first")
    names = sorted(
        name
        for meta in Path("mutants/src").rglob("*.py.meta")
        for name in json.loads(meta.read_text())["exit_code_by_key"]
        if fnmatch.fnmatch(name, args.pattern)
    )
    names = random.Random(0).sample(names, min(args.count, len(names)))

    runner = PytestRunner()
    devnull = open(os.devnull, "w")
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = devnull
    runner.warm_up()
    sys.stdout, sys.stderr = stdout, stderr

    cpu, codes, survivors = 0.0, {}, []
    for name in names:
        tests = state().tests_by_mangled_function_name.get(mangled_name_from_mutant_name(name))
        if not tests:
            codes["no test at all"] = codes.get("no test at all", 0) + 1
            continue
        pid = os.fork()
        if pid == 0:
            sys.stdout = sys.stderr = devnull
            set_mutant_under_test(name)
            os._exit(runner.run_tests(mutant_name=name, tests=list(tests)))
        _, status, usage = os.wait4(pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
        code = os.waitstatus_to_exitcode(status)
        codes[code] = codes.get(code, 0) + 1
        if code == 0:
            survivors.append(name)
    run = sum(n for code, n in codes.items() if code != "no test at all")
    print(
        f"{args.pattern}: {run} mutants run, {cpu:.1f} CPU s, {cpu / max(run, 1):.2f} CPU s per "
        f"mutant; result codes {codes}"
    )
    print("survived:", *survivors, sep="\n  ")


if __name__ == "__main__":
    main()
