"""recurvlm-figures: make a paper figure from a clean checkout, runs included.

    recurvlm-figures fig=probes                     # CPU-sized (default scale=cpu)
    recurvlm-figures fig=all scale=paper trainer=gpu
    recurvlm-figures fig=probes seeds=0 +trainer.max_epochs=1   # a quick look: one seed, + overrides
    make figures                                    # fig=all, CPU-sized

Every figure is an entry `experiments/<fig>/`: `figure.yaml` says which runs make it (task,
models, seeds, the per-scale training overrides) and which analysis draws it (a script in
`analysis/`, or `recurvlm-analyze`) with what arguments; its README says what the figure
should show. Runs go to `<out>/runs/<task>-<model>-s<seed>/` and are reused by any figure
that needs the same run (a finished run has `metrics.json`); the figure goes to `<out>/<fig>/`
(PNG and PDF next to the CSV of its numbers). `fig=head_to_head` runs
`recurvlm.experiments.head_to_head` at the same scale.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
KEYS = ("fig", "scale", "out", "trainer", "seeds")


def available() -> list[str]:
    names = sorted(p.parent.name for p in EXPERIMENTS.glob("*/figure.yaml"))
    return names + ["head_to_head"] if (EXPERIMENTS / "head_to_head").is_dir() else names


def load_spec(fig: str) -> dict[str, Any]:
    path = EXPERIMENTS / fig / "figure.yaml"
    spec = yaml.safe_load(path.read_text())
    missing = [k for k in ("task", "models", "seeds", "scales", "analysis") if k not in spec]
    if missing:
        raise SystemExit(f"recurvlm-figures: {path}: missing key(s) {', '.join(missing)}")
    return spec


def parse(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"fig": None, "scale": "cpu", "out": None, "trainer": None, "seeds": None, "extra": []}
    for a in argv:
        key, sep, value = a.partition("=")
        if sep and key.startswith("+"):  # a recurvlm-train override for every run
            opts["extra"].append(f"{key[1:]}={value}")
            continue
        if not sep or key not in KEYS:
            raise SystemExit(f"recurvlm-figures: bad argument {a!r}; valid: {', '.join(k + '=...' for k in KEYS)}, "
                             "or +<recurvlm-train override>")
        opts[key] = value
    names = available()
    if opts["fig"] is None:
        raise SystemExit(f"recurvlm-figures: give fig=<name>; valid: {', '.join(names)}, all")
    figs = names if opts["fig"] == "all" else opts["fig"].split(",")
    unknown = [f for f in figs if f not in names]
    if unknown:
        raise SystemExit(f"recurvlm-figures: unknown fig {', '.join(unknown)}; valid: {', '.join(names)}, all")
    opts["figs"] = figs
    if opts["seeds"] is not None:
        try:
            opts["seeds"] = [int(x) for x in opts["seeds"].split(",")]
        except ValueError:
            raise SystemExit(f"recurvlm-figures: seeds={opts['seeds']!r}; valid: comma-separated integers") from None
    opts["out"] = Path(opts["out"] or f"outputs/figures/{opts['scale']}")
    return opts


def load_analysis(path: str | Path):
    """An analysis script (a path relative to the repository root, e.g. analysis/probes.py) as a module."""
    path = ROOT / path
    if not path.is_file():
        raise SystemExit(f"recurvlm-figures: {path} is missing (figures run from a checkout of the repository)")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def checkpoint_of(run_dir: Path) -> Path:
    """The run's best checkpoint by validation accuracy (else last.ckpt)."""
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    return best[-1] if best else run_dir / "checkpoints" / "last.ckpt"


def make_figure(fig: str, scale: str, out: Path, trainer: str | None, extra: list[str] = (),
                seeds: list[int] | None = None) -> list[Path]:
    from .experiments import head_to_head

    if fig == "head_to_head":
        head_to_head.main([f"scale={scale}", f"out={out / 'head_to_head'}"] + ([f"trainer={trainer}"] if trainer else [])
                          + ([f"seeds={','.join(map(str, seeds))}"] if seeds is not None else [])
                          + [f"+{e}" for e in extra])
        return sorted((out / "head_to_head").glob("*.png"))
    spec = load_spec(fig)
    if scale not in spec["scales"]:
        raise SystemExit(f"recurvlm-figures: {fig} has no scale {scale!r}; valid: {', '.join(spec['scales'])}")
    overrides = list(spec["scales"][scale]) + ([f"trainer={trainer}"] if trainer else []) + list(extra)
    ckpts, labels = [], []
    for model in spec["models"]:
        for seed in seeds if seeds is not None else spec["seeds"]:
            t0 = time.perf_counter()
            m = head_to_head.run_one(spec["task"], model, seed, overrides, out)
            print(f"[figures] {fig}: {spec['task']} {model} seed {seed}: test accuracy {m['accuracy']:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            ckpts.append(checkpoint_of(out / "runs" / f"{spec['task']}-{model}-s{seed}"))
            labels.append(model)
    fig_out = out / fig
    fig_out.mkdir(parents=True, exist_ok=True)
    args = [str(a) for a in spec.get("args", [])]
    if spec["analysis"] == "recurvlm-analyze":
        from .analyze import analyze
        from .config import compose_config

        for ckpt, label in zip(ckpts, labels):
            cfg = compose_config("analyze", [f"ckpt_path={ckpt}", *args], fig_out / label)
            analyze(cfg)
    else:
        script = load_analysis(spec["analysis"])
        script.main([*sum((["--ckpt", str(c)] for c in ckpts), []), *sum((["--label", lb] for lb in labels), []),
                     *args, "--out", str(fig_out)])
    return sorted(fig_out.rglob("*.png"))


def main(argv: list[str] | None = None) -> None:
    opts = parse(sys.argv[1:] if argv is None else argv)
    for fig in opts["figs"]:
        t0 = time.perf_counter()
        pngs = make_figure(fig, opts["scale"], opts["out"], opts["trainer"], opts["extra"], opts["seeds"])
        print(f"[figures] {fig}: {', '.join(str(p) for p in pngs)} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
