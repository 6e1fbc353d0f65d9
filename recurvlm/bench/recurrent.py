"""Recurrent cost: parameters, FLOPs and the cost of one iteration against one feedforward pass.

For each model config (conf/model/; a missing one is skipped with a note): the parameter
count and forward FLOPs per image (`recurvlm.models.cost`: matrix multiplies and attention
only, so elementwise scans are not counted), for a recurrent model at T=1 and at its
training T. Then forward wall time (no grad, eval mode, uint8 dummy batch, median of
`--repeats` after warm-up) of the feedforward baseline (one pass) and of each recurrent
model at T=1 and T=`--iterations`; one iteration costs (time(T) - time(1)) / (T - 1),
reported relative to the baseline's pass, by time and by FLOPs (the issue's target: at
most 1.2x). Optionally training-step samples/s (forward at the model's training T,
backward, AdamW) on the same dummy batch.

One CPU thread by default (`--threads`): the ops of these tiny models are small enough that
a second thread mostly adds synchronisation, and on a shared machine waiting for a
descheduled thread can multiply every time.

Where CUDA exists, the Mamba state module is also timed with transformers' fused kernels
(mamba-ssm / causal-conv1d, when installed) and on its reference PyTorch path
(`mamba_reference_path`); on CPU only the reference path exists, and that is said.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ..config import CONFIG_DIR, register_resolvers
from ..models.cost import count_parameters, dummy_batch, forward_flops
from ..train import build_model

MODELS = ("clip_tiny", "clip_tiny_deep", "recurrent_tiny", "recurrent_tiny_scan", "recurrent_tiny_mamba", "recurrent_tiny_xlstm")
TARGET = 1.2  # the issue's bound on one iteration's cost, in feedforward passes
# The kernels transformers' MambaMixer.forward calls through module globals of modeling_mamba.
MAMBA_KERNELS = ("mamba_inner_fn", "mamba_selective_scan", "mamba_selective_state_update", "causal_conv1d_fn",
                 "causal_conv1d_update")
FUSED_PACKAGES = ("mamba_ssm", "causal_conv1d")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=list(MODELS), help="model configs (conf/model/<name>.yaml)")
    p.add_argument("--baseline", default="clip_tiny", help="the feedforward config that iterations are compared to")
    p.add_argument("--task", default="curve_tracing")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iterations", type=int, default=4, help="T of the timed long run (compared with T=1)")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per case (median; after 2 warm-up)")
    p.add_argument("--train-steps", type=int, default=3, help="timed training steps per model (0: skip)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default); 1 keeps tiny-op timings stable on a shared machine")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device of the model timings")
    p.add_argument("--mamba-repeats", type=int, default=20, help="timed forwards per Mamba kernel case (CUDA)")
    p.add_argument("--json", help="also write the rows to this JSON file")


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (every option spelled out)."""
    parts = ["python -m recurvlm.bench recurrent", "--models", *args.models]
    for name in ("baseline", "task", "image_size", "batch_size", "iterations", "repeats", "train_steps", "threads",
                 "device", "mamba_repeats"):
        parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.json:
        parts += ["--json", args.json]
    return " ".join(parts)


def config_exists(name: str) -> bool:
    return (Path(CONFIG_DIR) / "model" / f"{name}.yaml").is_file()


def build(name: str, task: str, image_size: int) -> torch.nn.Module:
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", f"task={task}", f"task.image_size={image_size}"])
    torch.manual_seed(0)
    return build_model(cfg.model.net, instantiate(cfg.model.tokenizer))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _forward(net: torch.nn.Module, b: dict[str, torch.Tensor], iterations: int | None) -> Any:
    kwargs = {"iterations": iterations} if getattr(net, "recurrent", False) else {}
    return net(b["images"], b["choice_ids"], b["choice_mask"], b["choice_valid"], b["question_ids"],
               b["question_mask"], **kwargs)


@torch.no_grad()
def forward_times(net: torch.nn.Module, b: dict[str, torch.Tensor], iterations: list[int | None], repeats: int,
                  device: str) -> list[float]:
    """Median forward seconds at each of `iterations` (None: the model's own), eval mode, no
    grad; the cases are interleaved within each repeat so that load drifts hit them alike."""
    net.eval()
    for t in iterations:  # warm-up
        for _ in range(2):
            _forward(net, b, t)
    times: list[list[float]] = [[] for _ in iterations]
    for _ in range(repeats):
        for i, t in enumerate(iterations):
            _sync(device)
            t0 = time.perf_counter()
            _forward(net, b, t)
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def train_samples_per_s(net: torch.nn.Module, b: dict[str, torch.Tensor], steps: int, device: str) -> float:
    """Training steps (forward at the model's training T, loss, backward, AdamW) per second x batch."""
    net.train()
    labels = torch.zeros(len(b["images"]), dtype=torch.long, device=device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        loss = net.loss(_forward(net, b, None), labels)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * len(labels) / (time.perf_counter() - t0)


def measure_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    net = build(name, args.task, args.image_size)
    recurrent = bool(getattr(net, "recurrent", False))
    t_train = int(net.iterations) if recurrent else 1
    row: dict[str, Any] = {"section": "cost", "model": name, "recurrent": recurrent,
                           "state": net.top_down.state.kind if recurrent else None,
                           "params": count_parameters(net), "train_iterations": t_train}
    net.eval()
    if recurrent:
        row["flops_t1"] = forward_flops(net, iterations=1)
        row["flops_train_t"] = forward_flops(net, iterations=t_train)
        row["flops_tn"] = (row["flops_train_t"] if t_train == args.iterations
                           else forward_flops(net, iterations=args.iterations))
    else:
        row["flops_t1"] = row["flops_train_t"] = forward_flops(net)
    net.to(args.device)
    b = {k: v.to(args.device) for k, v in dummy_batch(net, batch_size=args.batch_size).items()}
    if recurrent:
        row["time_t1_s"], row["time_tn_s"] = forward_times(net, b, [1, args.iterations], args.repeats, args.device)
    else:
        (row["time_t1_s"],) = forward_times(net, b, [None], args.repeats, args.device)
    row["train_samples_per_s"] = (train_samples_per_s(net, b, args.train_steps, args.device)
                                  if args.train_steps > 0 else None)
    return row


def add_ratios(rows: list[dict[str, Any]], baseline: dict[str, Any] | None, n: int) -> None:
    """Per-iteration cost = (cost(T=n) - cost(T=1)) / (n - 1), and that over the baseline's pass."""
    for row in rows:
        if not row["recurrent"]:
            continue
        row["time_per_iteration_s"] = (row["time_tn_s"] - row["time_t1_s"]) / (n - 1)
        row["flops_per_iteration"] = (row["flops_tn"] - row["flops_t1"]) / (n - 1)
        if baseline is not None:
            row["iteration_over_pass_time"] = row["time_per_iteration_s"] / baseline["time_t1_s"]
            row["iteration_over_pass_flops"] = row["flops_per_iteration"] / baseline["flops_t1"]


@contextlib.contextmanager
def mamba_reference_path() -> Iterator[None]:
    """Run transformers' Mamba mixers on their reference PyTorch path, fused kernels installed or not.

    transformers picks each Mamba kernel once, at import, in
    `integrations.hub_kernels.use_kernel_func_from_hub_with_fallback` (a hub kernel when
    kernelized, else the mamba-ssm / causal-conv1d function when importable, else the
    PyTorch reference), and `MambaMixer.forward` calls the choice through module globals of
    `modeling_mamba`. No config flag turns the packages off (`use_mambapy` only picks between
    the reference scans, and `mamba_inner_fn`'s reference returns None so the training path
    falls through to the unfused ops), so the globals are rebound for the duration to the
    reference functions, which the wrapper keeps as `__wrapped__` (functools.wraps).
    """
    from transformers.models.mamba import modeling_mamba as mm

    saved = {name: getattr(mm, name) for name in MAMBA_KERNELS}
    try:
        for name, fn in saved.items():
            setattr(mm, name, inspect.unwrap(fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(mm, name, fn)


def fused_packages() -> list[str]:
    """The fused-kernel packages that import here (transformers falls back per package)."""
    found = []
    for pkg in FUSED_PACKAGES:
        try:
            importlib.import_module(pkg)
            found.append(pkg)
        except Exception:  # noqa: BLE001 - absent, or built for another torch/CUDA
            pass
    return found


def measure_mamba_kernels(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The state module of recurrent_tiny_mamba on CUDA: T=`--iterations` steps over the
    [batch, patches, state_dim] grid, eval without grad (cached stepping: the single-step
    kernels) and train with grad (history replay: the sequence kernels), fused vs reference."""
    from ..models.state import MambaState

    net = build("recurrent_tiny_mamba", args.task, args.image_size)
    state = net.top_down.state
    assert isinstance(state, MambaState)
    state.cuda()
    gh, gw = net.vision_model.embeddings.grid_size
    n = gh * gw  # the state grid: one state per patch token
    u = torch.randn(args.batch_size, args.iterations, n, state.dim, device="cuda")
    packages = fused_packages()
    rows = []
    for mode in ("eval", "train"):
        def call() -> None:
            if mode == "eval":
                with torch.no_grad():
                    state.eval()(u)
            else:
                state.train()(u)  # grad on: replays the history

        times = {}
        for path, ctx in (("fused", contextlib.nullcontext), ("reference", mamba_reference_path)):
            with ctx():
                for _ in range(3):
                    call()
                ts = []
                for _ in range(args.mamba_repeats):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    call()
                    torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t0)
                times[path] = statistics.median(ts)
        rows.append({"section": "mamba_kernels", "mode": mode, "batch": args.batch_size, "tokens": n,
                     "iterations": args.iterations, "fused_packages": packages, "fused_s": times["fused"],
                     "reference_s": times["reference"], "speedup": times["reference"] / times["fused"]})
    return rows


def _fmt(x: float | None, spec: str, scale: float = 1.0) -> str:
    return "n/a" if x is None else format(x * scale, spec)


def run(args: argparse.Namespace) -> list[dict]:
    if args.iterations < 2:
        raise ValueError(f"--iterations {args.iterations}: the per-iteration cost needs T >= 2")
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> list[dict]:
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor()
                                                                             or platform.machine())
    print(f"# recurrent iteration cost ({device_name}, torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"command: `{command(args)}`")
    names = list(dict.fromkeys([args.baseline, *args.models]))  # the baseline first, once
    rows: list[dict[str, Any]] = []
    for name in names:
        if not config_exists(name):
            print(f"\nnote: conf/model/{name}.yaml does not exist: skipped")
            continue
        rows.append(measure_model(name, args))
    baseline = next((r for r in rows if r["model"] == args.baseline), None)
    if baseline is not None and baseline["recurrent"]:
        raise ValueError(f"--baseline {args.baseline} is recurrent; it must be a feedforward config")
    add_ratios(rows, baseline, args.iterations)
    if args.baseline not in args.models:  # measured for the ratios only
        rows = [r for r in rows if r["model"] != args.baseline]

    n = args.iterations
    print(f"\n## parameters and forward FLOPs per image (matmuls and attention; {args.image_size} px, {args.task})\n")
    print("| model | state | params | train T | MFLOPs T=1 | MFLOPs train T |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['state'] or '-'} | {r['params'] / 1e6:.3f} M | {r['train_iterations']} | "
              f"{r['flops_t1'] / 1e6:,.1f} | {r['flops_train_t'] / 1e6:,.1f} |")
    print(f"\n## one iteration vs one feedforward pass of {args.baseline} (target <= {TARGET}x; {args.device}, "
          f"batch {args.batch_size}, forward ms: median of {args.repeats}, no grad)\n")
    print(f"| model | forward ms T=1 | forward ms T={n} | ms / iteration | iteration / pass (time) | "
          "iteration / pass (FLOPs) | train samples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['time_t1_s'] * 1e3:.1f} | {_fmt(r.get('time_tn_s'), '.1f', 1e3)} | "
              f"{_fmt(r.get('time_per_iteration_s'), '.1f', 1e3)} | {_fmt(r.get('iteration_over_pass_time'), '.2f')} | "
              f"{_fmt(r.get('iteration_over_pass_flops'), '.2f')} | {_fmt(r['train_samples_per_s'], ',.0f')} |",
              flush=True)
    if baseline is None:
        print(f"\nnote: no baseline ({args.baseline}): the ratios are n/a")

    print("\n## Mamba state module: fused kernels vs reference PyTorch path\n")
    if not torch.cuda.is_available():
        print("This comparison needs CUDA (the fused kernels are CUDA-only; on CPU only the reference path runs).")
    elif not config_exists("recurrent_tiny_mamba"):
        print("note: conf/model/recurrent_tiny_mamba.yaml does not exist: skipped")
    else:
        mrows = measure_mamba_kernels(args)
        if not mrows[0]["fused_packages"]:
            print(f"note: none of {', '.join(FUSED_PACKAGES)} imports (install the `cuda` extra): both columns "
                  "are the reference path")
        print(f"{torch.cuda.get_device_name()}, fused packages: {', '.join(mrows[0]['fused_packages']) or 'none'}\n")
        print("| mode | batch x tokens | T | fused ms | reference ms | speedup |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in mrows:
            print(f"| {r['mode']} | {r['batch']} x {r['tokens']} | {r['iterations']} | {r['fused_s'] * 1e3:.2f} | "
                  f"{r['reference_s'] * 1e3:.2f} | {r['speedup']:.2f}x |")
        rows += mrows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows
