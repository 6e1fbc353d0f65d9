"""Training throughput: samples/s and peak memory of the CLIP-style baseline.

On CPU at the demo config (model=clip_tiny, 64 px); where CUDA exists also at a ViT-B/16
config (model=clip_b16, 224 px) in bf16 autocast. Batches are pre-built from the real
DataModule (so the number is the model's step time: forward, backward, AdamW); data
generation speed is `python -m recurvlm.bench stimuli`.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ..config import CONFIG_DIR, register_resolvers
from ..train import build_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cuda-batch-size", type=int, default=128)
    p.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for the CPU config")


def _setup(overrides: list[str], batch_size: int):
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data.batch_size={batch_size}", "data.n_train=64", "data.n_val=8",
                                          "data.n_test=8", *overrides])
    tok = instantiate(cfg.model.tokenizer)
    net = build_model(cfg.model.net, tok)
    dm = instantiate(cfg.data, tokenizer=tok, context_length=cfg.model.context_length)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return cfg, net, batch


def measure(net: torch.nn.Module, batch: dict, steps: int, device: str, bf16: bool) -> tuple[float, float]:
    """(samples per second, peak memory in MiB) over `steps` training steps."""
    net.to(device).train()
    keys = ("image", "choice_ids", "choice_mask", "choice_valid", "label")
    b = {k: batch[k].to(device) for k in keys}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = net(b["image"], b["choice_ids"], b["choice_mask"], b["choice_valid"])
            loss = net.loss(out, b["label"])["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak RSS of the process (KiB on Linux)
    return steps * len(b["label"]) / (time.perf_counter() - t0), peak


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    print(f"# training step throughput ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads)")
    print("| config | device | precision | batch | params | samples/s | peak memory (MiB) |")
    print("|---|---|---|---:|---:|---:|---:|")
    cases = [("clip_tiny @ 64 px", args.overrides, "cpu", False, args.batch_size)]
    if torch.cuda.is_available():
        cases += [("clip_tiny @ 64 px", args.overrides, "cuda", True, args.batch_size),
                  ("clip_b16 @ 224 px", ["model=clip_b16", "task.image_size=224"], "cuda", True, args.cuda_batch_size)]
    for name, overrides, device, bf16, bs in cases:
        cfg, net, batch = _setup(overrides, bs)
        n_params = sum(p.numel() for p in net.parameters())
        sps, peak = measure(net, batch, args.steps, device, bf16)
        rows.append({"config": name, "device": device, "bf16": bf16, "batch": bs, "params": n_params,
                     "samples_per_s": sps, "peak_mib": peak})
        print(f"| {name} | {device} | {'bf16' if bf16 else 'fp32'} | {bs} | {n_params / 1e6:.2f} M | {sps:,.0f} | {peak:,.0f} |",
              flush=True)
    return rows
