"""Command line of the benchmarks: `python -m recurvlm.bench <name> [options]`."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHES = ("stimuli", "shortcuts", "train", "recurrent")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m recurvlm.bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(BENCHES) + "}")
    # Import only the bench that runs (the train bench pulls in Lightning, seconds to import).
    chosen = [b for b in BENCHES if b in argv[:1]] or list(BENCHES)
    modules = {b: importlib.import_module(f"{__package__}.{b}") for b in chosen}
    for name, mod in modules.items():
        mod.add_arguments(sub.add_parser(name, help=mod.__doc__.splitlines()[0], description=mod.__doc__))
    args = parser.parse_args(argv)
    modules[args.bench].run(args)


if __name__ == "__main__":
    main()
