"""Head-to-head: feedforward baseline vs parameter-matched feedforward control vs recurrent
top-down variants (GRU, Mamba, xLSTM state) on curve tracing and maze, across difficulty and
seeds, with a test-time iteration sweep (1 to 4x the training T).

    python -m recurvlm.experiments.head_to_head                 # scale=cpu (about 30 min, 2 cores)
    python -m recurvlm.experiments.head_to_head scale=demo      # minutes: what `make demo` runs
    python -m recurvlm.experiments.head_to_head scale=tracing   # the CPU-sized result (curve tracing, dense loss)
    python -m recurvlm.experiments.head_to_head scale=tracing seeds=0 models=clip_tiny,recurrent_tiny_scan
    python -m recurvlm.experiments.head_to_head scale=paper trainer=gpu   # full size, one GPU

Every run is a normal `recurvlm-train` run (composed in-process) under `<out>/logs/`; this
script only reads back their `metrics.json`, then writes `<out>/results.csv` (one row per
run x level x test iteration), `<out>/table.md` (mean and 95% CI over seeds) and two figures:
`accuracy_vs_difficulty.png` and `accuracy_vs_iterations.png` (PNG and PDF). Models are
trained on the easy and medium levels only (the easy level only at scale=tracing); hard is
never trained on; validation and test sets have their own fixed seeds and are never trained
on, and nothing here is tuned on them.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..config import CONFIG_DIR
from ..report import mean_ci

SCALES: dict[str, dict[str, Any]] = {
    # `make demo`: one task, the baseline against the GRU variant, one seed: minutes
    "demo": {"tasks": ["curve_tracing"], "models": ["clip_tiny", "recurrent_tiny"], "seeds": [0],
             "overrides": ["data.n_train=1000", "data.n_val=100", "data.n_test=200", "trainer.max_epochs=3"]},
    # the CPU-sized comparison: about 30 minutes on 2 cores
    "cpu": {"tasks": ["curve_tracing", "maze"],
            "models": ["clip_tiny", "clip_tiny_deep", "clip_tiny_deeper", "recurrent_tiny", "recurrent_tiny_scan",
                       "recurrent_tiny_mamba", "recurrent_tiny_xlstm"],
            "seeds": [0, 1, 2],
            "overrides": ["data.n_train=400", "data.n_val=100", "data.n_test=200", "trainer.max_epochs=2"]},
    # the CPU-sized result (experiments/head_to_head/README.md): curve tracing trained on the easy
    # level only with the auxiliary dense loss, the baseline and its parameter-matched control
    # against the grid-scanning recurrent model, 3 seeds; about 40 minutes on 2 cores
    "tracing": {"tasks": ["curve_tracing"], "models": ["clip_tiny", "clip_tiny_deeper", "recurrent_tiny_scan"],
                "seeds": [0, 1, 2],
                "overrides": ["experiment=dense", "task.train_levels=[easy]", "data.n_train=4000",
                              "trainer.max_epochs=8"]},
    # full size (GPU): 20k training images per level, 30 epochs
    "paper": {"tasks": ["curve_tracing", "maze"],
              "models": ["clip_tiny", "clip_tiny_deep", "clip_tiny_deeper", "recurrent_tiny", "recurrent_tiny_scan",
                         "recurrent_tiny_mamba", "recurrent_tiny_xlstm", "llava_tiny", "recurrent_llava_tiny"],
              "seeds": [0, 1, 2],
              "overrides": ["data.n_train=20000", "data.n_val=1000", "data.n_test=2000", "trainer.max_epochs=30",
                            "data.num_workers=8", "data.batch_size=128"]},
}
EXTRAPOLATION = 4  # test at up to 4x the training T


def parse(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"scale": "cpu", "out": None, "trainer": None, "models": None, "seeds": None, "extra": []}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep:
            raise SystemExit(f"head_to_head: argument {a!r} is not key=value; valid keys: scale, out, trainer, models, "
                             "seeds, or any recurvlm-train override with a '+' prefix (e.g. +optim.optimizer.lr=3e-4)")
        if key.startswith("+"):
            opts["extra"].append(f"{key[1:]}={value}")
        elif key in ("scale", "out", "trainer"):
            opts[key] = value
        elif key == "models":
            opts["models"] = [m for m in value.split(",") if m]
        elif key == "seeds":
            try:
                opts["seeds"] = [int(x) for x in value.split(",") if x]
            except ValueError:
                raise SystemExit(f"head_to_head: seeds={value!r} is not a comma-separated list of ints "
                                 "(e.g. seeds=0,1,2)")
            if not opts["seeds"] or min(opts["seeds"]) < 0:
                raise SystemExit(f"head_to_head: seeds={value!r} must name at least one non-negative int")
        else:
            raise SystemExit(f"head_to_head: unknown key {key!r}; valid: scale, out, trainer, models, seeds, "
                             "+<train override>")
    if opts["scale"] not in SCALES:
        raise SystemExit(f"head_to_head: scale={opts['scale']!r} is not valid; valid: {', '.join(SCALES)}")
    for m in opts["models"] or []:
        if not (Path(CONFIG_DIR) / "model" / f"{m}.yaml").is_file():
            known = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
            raise SystemExit(f"head_to_head: models={m!r} has no conf/model/{m}.yaml; valid: {', '.join(known)}")
    opts["out"] = Path(opts["out"] or f"outputs/head_to_head/{opts['scale']}")
    return opts


def run_one(task: str, model: str, seed: int, overrides: list[str], out: Path) -> dict[str, Any]:
    """Train (or reuse a finished run) and return its test metrics with the run's facts."""
    from omegaconf import open_dict

    from ..config import compose_config
    from ..models.cost import count_parameters, forward_flops
    from ..train import build_model, train

    run_dir = out / "runs" / f"{task}-{model}-s{seed}"
    done = run_dir / "metrics.json"
    cfg = compose_config("train", [f"task={task}", f"model={model}", f"seed={seed}", "logger=csv",
                                   "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
                                   f"paths.log_dir={out / 'logs'}", *overrides], run_dir)
    iterations = int(cfg.model.net.get("iterations", 1))
    if cfg.model.net.get("top_down") is not None:
        with open_dict(cfg):
            cfg.test_iterations = EXTRAPOLATION * iterations
    if not done.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        train(cfg)
    metrics = json.loads(done.read_text())
    from hydra.utils import instantiate

    net = build_model(cfg.model.net, instantiate(cfg.model.tokenizer))
    metrics["facts"] = {"params": count_parameters(net), "flops": forward_flops(net), "iterations": iterations,
                        "dense_loss": float(cfg.model.net.get("dense_weight", 0.0)) > 0,
                        "train_levels": "+".join(cfg.task.train_levels)}
    return metrics


def rows_of(task: str, model: str, seed: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (level, test iteration); feedforward models have iteration 1 only."""
    facts = metrics["facts"]
    rows = []
    for key, m in metrics["per_difficulty"].items():
        level = key.split("/", 1)[1]
        per_it = m.get("per_iteration") or [m["accuracy"]]
        for t, acc in enumerate(per_it, start=1):
            rows.append({"task": task, "model": model, "seed": seed, "level": level, "iteration": t,
                         "train_iterations": facts["iterations"], "accuracy": acc, "n": m["n"],
                         "params": facts["params"], "flops": facts["flops"],
                         "dense_loss": facts.get("dense_loss", False), "train_levels": facts.get("train_levels", "")})
    return rows


def at_train_t(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["iteration"] == r["train_iterations"]]


def table(rows: list[dict[str, Any]], levels: list[str]) -> str:
    main = at_train_t(rows)
    tasks = sorted({r["task"] for r in main})
    models = list(dict.fromkeys(r["model"] for r in main))
    lines = ["| task | model | params | MFLOPs | " + " | ".join(levels) + " | hardest @ 4T |",
             "|---|---|---:|---:|" + "---:|" * (len(levels) + 1)]
    for task in tasks:
        for model in models:
            sel = [r for r in main if r["task"] == task and r["model"] == model]
            if not sel:
                continue
            cells = []
            for lv in levels:
                accs = [r["accuracy"] for r in sel if r["level"] == lv]
                m, ci = mean_ci(accs) if accs else (float("nan"), 0.0)
                cells.append(f"{100 * m:.1f} ± {100 * ci:.1f}")
            t_max = max(r["iteration"] for r in rows if r["task"] == task and r["model"] == model)
            ext = [r["accuracy"] for r in rows if r["task"] == task and r["model"] == model
                   and r["level"] == levels[-1] and r["iteration"] == t_max]
            m, ci = mean_ci(ext)
            lines.append(f"| {task} | {model} | {sel[0]['params']:,} | {sel[0]['flops'] / 1e6:.1f} | "
                         + " | ".join(cells) + f" | {100 * m:.1f} ± {100 * ci:.1f} (T={t_max}) |")
    n_seeds = len({r["seed"] for r in rows})
    lines.append(f"\nAccuracy % on the test sets (mean ± 95% CI over {n_seeds} seed(s)); levels at the training T; "
                 "last column: the hardest level at 4x the training T (feedforward: T=1).")
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]], levels: list[str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    n_seeds = len({r["seed"] for r in rows})
    written = []

    fig, axes = plt.subplots(1, len(tasks), figsize=(max(6.5, 5 * len(tasks)), 4.3), squeeze=False)
    main = at_train_t(rows)
    for ax, task in zip(axes[0], tasks):
        for model in models:
            stats_ = [mean_ci([r["accuracy"] for r in main if r["task"] == task and r["model"] == model
                               and r["level"] == lv]) for lv in levels]
            if any(math.isnan(m) for m, _ in stats_):
                continue
            ax.errorbar(range(len(levels)), [100 * m for m, _ in stats_], yerr=[100 * c for _, c in stats_],
                        marker="o", capsize=3, label=model)
        ax.axhline(50, color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(levels)), levels)
        ax.set_ylim(40, 102)
        trained = {r.get("train_levels") or "" for r in rows if r["task"] == task}
        xlabel = f"difficulty (trained on {trained.pop().replace('+', ' + ')})" if len(trained) == 1 and "" not in trained \
            else "difficulty"
        ax.set(title=task, xlabel=xlabel, ylabel="test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Accuracy vs difficulty (mean ± 95% CI, {n_seeds} seed(s))", fontsize=10)
    fig.tight_layout()
    written += _save(fig, out / "accuracy_vs_difficulty")

    # One panel per task (rows) and level (columns): iterations can help on a level the models
    # learn even where the hardest level stays at chance.
    fig, axes = plt.subplots(len(tasks), len(levels), figsize=(4.2 * len(levels), 3.6 * len(tasks)), squeeze=False,
                             sharey=True)
    colour = {model: f"C{i}" for i, model in enumerate(models)}
    for row, task in zip(axes, tasks):
        for ax, level in zip(row, levels):
            for model in models:
                sel = [r for r in rows if r["task"] == task and r["model"] == model and r["level"] == level]
                its = sorted({r["iteration"] for r in sel})
                if not sel:
                    continue
                if len(its) == 1:  # feedforward: one sweep, drawn flat for reference
                    m, _ = mean_ci([r["accuracy"] for r in sel])
                    ax.axhline(100 * m, ls="--", lw=1.2, label=f"{model} (T=1)", color=colour[model])
                    continue
                stats_ = [mean_ci([r["accuracy"] for r in sel if r["iteration"] == t]) for t in its]
                ax.errorbar(its, [100 * m for m, _ in stats_], yerr=[100 * c for _, c in stats_], marker=".",
                            capsize=2, label=model, color=colour[model])
                ax.axvline(sel[0]["train_iterations"], color=colour[model], ls=":", lw=0.8)
            ax.axhline(50, color="grey", ls=":", lw=1)
            ax.set_ylim(40, 102)
            ax.set(title=f"{task}, {level}", xlabel="test-time iterations T (dotted: training T)")
        row[0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Test-time iterations (mean ± 95% CI, {n_seeds} seed(s))", fontsize=10)
    fig.tight_layout()
    written += _save(fig, out / "accuracy_vs_iterations")
    return written


def _save(fig: Any, stem: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=130)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse(sys.argv[1:] if argv is None else argv)
    scale, out = SCALES[opts["scale"]], opts["out"]
    out.mkdir(parents=True, exist_ok=True)
    overrides = list(scale["overrides"]) + ([f"trainer={opts['trainer']}"] if opts["trainer"] else []) + opts["extra"]
    rows: list[dict[str, Any]] = []
    levels: list[str] = []
    t0 = time.perf_counter()
    for task in scale["tasks"]:
        for model in opts["models"] or scale["models"]:
            for seed in opts["seeds"] or scale["seeds"]:
                t1 = time.perf_counter()
                metrics = run_one(task, model, seed, overrides, out)
                rows += rows_of(task, model, seed, metrics)
                if not levels:
                    from ..data.stimuli import get_task

                    order = list(get_task(task).levels)
                    levels = sorted((k.split("/", 1)[1] for k in metrics["per_difficulty"]), key=order.index)
                print(f"[head_to_head] {task} {model} seed {seed}: accuracy {metrics['accuracy']:.3f} "
                      f"({time.perf_counter() - t1:.0f} s)", flush=True)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = table(rows, levels)
    cmd = "python -m recurvlm.experiments.head_to_head " + " ".join(sys.argv[1:] if argv is None else argv)
    dense = "on" if any(r["dense_loss"] for r in rows) else "off"
    (out / "table.md").write_text(f"# head to head (scale={opts['scale']})\n\n`{cmd.strip()}`\n\n"
                                  f"Auxiliary dense loss: {dense} (`+experiment=dense` turns it on for every model).\n\n"
                                  f"{text}\n")
    written = figures(rows, levels, out)
    print(text)
    print(f"wrote {out / 'results.csv'}, {out / 'table.md'}, " + ", ".join(str(p) for p in written if p.suffix == ".png"))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "table": text, "out": out}


if __name__ == "__main__":
    main()
