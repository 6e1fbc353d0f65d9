"""Command line of the benchmarks: `python -m recurvlm.bench <name> [options]`."""

from __future__ import annotations

import argparse
import sys

from . import shortcuts, stimuli

BENCHES = {"stimuli": stimuli, "shortcuts": shortcuts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recurvlm.bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(BENCHES) + "}")
    for name, mod in BENCHES.items():
        mod.add_arguments(sub.add_parser(name, help=mod.__doc__.splitlines()[0], description=mod.__doc__))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    BENCHES[args.bench].run(args)


if __name__ == "__main__":
    main()
