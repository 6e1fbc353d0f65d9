"""State modules: the "higher area" between the query and the vision encoder.

Every vision token carries its own state across iterations (DESIGN.md: the state is a
token grid, not one vector), so every module here runs along the *iteration* axis with
the tokens folded into the batch: input u_t [B, N, S] -> output s_t [B, N, S].

    gru    torch.nn.GRUCell
    mamba  transformers' Mamba blocks; their mixer uses mamba-ssm's fused kernels when the
           `cuda` extra is installed, its reference PyTorch path otherwise; stepped with
           its cache without gradient, by replaying the input history with gradient
    xlstm  the `xlstm` package (mLSTM blocks, sLSTM at `slstm_at`; vanilla backends off CUDA)
    none   no memory: s_t = u_t

`step(u_t, memory) -> (s_t, memory)` is the only interface; `memory=None` starts fresh.
Each module also has `forward(u [B, T, N, S])`, the step loop over a whole sequence, used
to check stepping against the library's own sequence path where one exists.

`GridScan` is the other axis (DESIGN.md): within one iteration, a sequence model runs along
the token grid in scan orders (row-major both ways; with `cross` also column-major both
ways), as Vision Mamba (Zhu et al. 2024) and Vision-LSTM (Alkin et al. 2024) scan images, so
a signal can travel along a path inside one iteration instead of one block per iteration.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

STATE_KINDS = ("gru", "mamba", "xlstm", "none")
SCAN_ORDERS = ("none", "raster", "cross")


class StateModule(nn.Module):
    """Per-token recurrence along iterations: [B, N, S] in, [B, N, S] out."""

    kind = "base"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def step(self, u: Tensor, memory: Any = None) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def forward(self, u: Tensor) -> Tensor:
        """u [B, T, N, S] -> s [B, T, N, S] by stepping."""
        memory, out = None, []
        for t in range(u.shape[1]):
            s, memory = self.step(u[:, t], memory)
            out.append(s)
        return torch.stack(out, dim=1)


class NoState(StateModule):
    kind = "none"

    def step(self, u: Tensor, memory: Any = None) -> tuple[Tensor, Any]:
        return u, None


class GRUState(StateModule):
    kind = "gru"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.cell = nn.GRUCell(dim, dim)

    def step(self, u: Tensor, memory: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, n, _ = u.shape
        h = self.cell(rearrange(u, "b n s -> (b n) s"), memory)  # memory None: zeros
        return rearrange(h, "(b n) s -> b n s", b=b, n=n), h


class MambaState(StateModule):
    """A stack of transformers' Mamba blocks (RMSNorm + mixer, residual) and a final norm,
    without the language-model embedding. Stepped with transformers' cache."""

    kind = "mamba"

    def __init__(self, dim: int, *, layers: int = 1, state_size: int = 16, expand: int = 2, conv_kernel: int = 4) -> None:
        super().__init__(dim)
        from transformers import MambaConfig, MambaModel

        self.config = MambaConfig(hidden_size=dim, num_hidden_layers=layers, state_size=state_size, expand=expand,
                                  conv_kernel=conv_kernel, vocab_size=1, use_cache=True)
        # built through MambaModel so that transformers' own initialisation (A_log, D, dt bias)
        # runs; the token embedding is dropped (the input is the query-gated vision grid)
        lm = MambaModel(self.config)
        self.layers, self.norm_f = lm.layers, lm.norm_f

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    def _run(self, x: Tensor, cache: Any) -> Tensor:
        for block in self.layers:
            x = block(x, cache)  # positional: `cache` (newer transformers) / `cache_params` (older)
        return self.norm_f(x)

    def step(self, u: Tensor, memory: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Without gradient: one token through the cache (transformers' stepping). With
        gradient: the cache's in-place updates would break autograd, so the whole (short)
        history of inputs is replayed through the sequence path and the last output kept;
        both give the same numbers (tested)."""
        b, n, _ = u.shape
        x = rearrange(u, "b n s -> (b n) 1 s")
        history = x if memory is None else torch.cat([memory["history"], x], dim=1)
        cache = None
        if torch.is_grad_enabled():
            y = self._run(history, None)[:, -1:]
        elif memory is not None and memory.get("cache") is not None:
            cache = memory["cache"]
            y = self._run(x, cache)
        else:  # fresh, or coming from a gradient step: prefill a cache with the history
            cache = self.new_cache()
            y = self._run(history, cache)[:, -1:]
        return rearrange(y, "(b n) 1 s -> b n s", b=b, n=n), {"history": history, "cache": cache}

    def scan(self, u: Tensor) -> Tensor:
        """The library's sequence path (no stepping): u [B, T, N, S] -> [B, T, N, S]."""
        b, _, n, _ = u.shape
        y = self._run(rearrange(u, "b t n s -> (b n) t s"), None)
        return rearrange(y, "(b n) t s -> b t n s", b=b, n=n)


class XLSTMState(StateModule):
    """`xlstm.xLSTMBlockStack`: mLSTM blocks, with sLSTM blocks at `slstm_at`. `max_iterations`
    is the stack's context length (the most iterations it can be stepped through)."""

    kind = "xlstm"

    def __init__(self, dim: int, *, blocks: int = 1, slstm_at: list[int] | tuple[int, ...] = (), heads: int = 2,
                 conv_kernel: int = 4, max_iterations: int = 64, backend: str | None = None) -> None:
        super().__init__(dim)
        from xlstm import (mLSTMBlockConfig, mLSTMLayerConfig, sLSTMBlockConfig, sLSTMLayerConfig,
                           xLSTMBlockStack, xLSTMBlockStackConfig)

        if backend is None:
            backend = "cuda" if torch.cuda.is_available() else "vanilla"
        slstm_at = list(slstm_at)
        if any(not 0 <= i < blocks for i in slstm_at):
            raise ValueError(f"xlstm: slstm_at={slstm_at} out of range; valid: block indices 0..{blocks - 1}")
        cfg = xLSTMBlockStackConfig(
            mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig(conv1d_kernel_size=conv_kernel, num_heads=heads,
                                                                qkv_proj_blocksize=4)),
            slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(backend=backend, num_heads=heads,
                                                                conv1d_kernel_size=conv_kernel)) if slstm_at else None,
            context_length=max_iterations, num_blocks=blocks, embedding_dim=dim, slstm_at=slstm_at)
        self.max_iterations = max_iterations
        self.stack = xLSTMBlockStack(cfg)

    def step(self, u: Tensor, memory: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        """Without gradient: `xLSTMBlockStack.step` with its state. With gradient: its state
        updates are in place (autograd refuses them), so the input history is replayed through
        the stack's sequence path and the last output kept (the same numbers; tested)."""
        b, n, _ = u.shape
        x = rearrange(u, "b n s -> (b n) 1 s")
        history = x if memory is None else torch.cat([memory["history"], x], dim=1)
        if history.shape[1] > self.max_iterations:
            raise ValueError(f"xlstm: iteration {history.shape[1]} exceeds max_iterations={self.max_iterations}")
        state = None
        if torch.is_grad_enabled():
            y = self.stack(history)[:, -1:]
        elif memory is not None and memory.get("state") is not None:
            y, state = self.stack.step(x, state=memory["state"])
        else:  # fresh, or coming from a gradient step: step through the history
            for i in range(history.shape[1]):
                y, state = self.stack.step(history[:, i:i + 1], state=state)
        return rearrange(y, "(b n) 1 s -> b n s", b=b, n=n), {"history": history, "state": state}

    def scan(self, u: Tensor) -> Tensor:
        """The library's sequence path: u [B, T, N, S] -> [B, T, N, S]."""
        b, t, n, _ = u.shape
        if t > self.max_iterations:
            raise ValueError(f"xlstm: {t} iterations exceed max_iterations={self.max_iterations}")
        y = self.stack(rearrange(u, "b t n s -> (b n) t s"))
        return rearrange(y, "(b n) t s -> b t n s", b=b, n=n)


def build_state(kind: str, dim: int, **kwargs: Any) -> StateModule:
    """A state module by name: gru | mamba | xlstm | none."""
    classes = {"gru": GRUState, "mamba": MambaState, "xlstm": XLSTMState, "none": NoState}
    if kind not in classes:
        raise ValueError(f"unknown state module {kind!r}; valid: {', '.join(STATE_KINDS)}")
    return classes[kind](dim, **kwargs)


def scan_permutations(order: str, grid_size: tuple[int, int]) -> list[Tensor]:
    """Token orders of a scan over an (h, w) grid stored row-major: `raster` is row-major forward
    and backward; `cross` adds column-major forward and backward -> a list of index tensors [N]."""
    if order not in SCAN_ORDERS[1:]:
        raise ValueError(f"unknown scan order {order!r}; valid: {', '.join(SCAN_ORDERS)}")
    h, w = grid_size
    rows = torch.arange(h * w)
    perms = [rows, rows.flip(0)]
    if order == "cross":
        cols = rows.view(h, w).T.reshape(-1)
        perms += [cols, cols.flip(0)]
    return perms


class GridScan(nn.Module):
    """Mixes a token grid u [B, N, S] along scan paths within one iteration (see the module
    docstring): one sequence model per scan direction (`gru`: torch.nn.GRU; `mamba`:
    transformers' Mamba blocks on their sequence path; `xlstm`: an xLSTM block stack with a
    context of N tokens), their outputs, each put back in grid order, concatenated and
    projected by a zero-initialised linear map, so at initialisation the scan adds nothing.
    """

    def __init__(self, *, kind: str, order: str, dim: int, grid_size: tuple[int, int], **kwargs: Any) -> None:
        super().__init__()
        if kind not in ("gru", "mamba", "xlstm"):
            raise ValueError(f"top_down.scan={order!r} needs a sequence model: state gru, mamba or xlstm, not {kind!r}")
        self.kind, self.order, self.grid_size = kind, order, tuple(grid_size)
        n_dirs = len(scan_permutations(order, self.grid_size))
        n = self.grid_size[0] * self.grid_size[1]
        if kind == "gru":
            self.paths = nn.ModuleList(nn.GRU(dim, dim, batch_first=True) for _ in range(n_dirs))
        elif kind == "mamba":
            self.paths = nn.ModuleList(MambaState(dim, **kwargs) for _ in range(n_dirs))
        else:
            kw = {k: v for k, v in kwargs.items() if k != "max_iterations"}
            self.paths = nn.ModuleList(XLSTMState(dim, max_iterations=n, **kw) for _ in range(n_dirs))
        self.out = nn.Linear(n_dirs * dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _sequence(self, path: nn.Module, x: Tensor) -> Tensor:
        if self.kind == "gru":
            return path(x)[0]
        if self.kind == "mamba":
            return path._run(x, None)
        return path.stack(x)

    def forward(self, u: Tensor, grid_size: tuple[int, int]) -> Tensor:
        """The scan's contribution [B, N, S] for the grid u [B, N, S] of shape `grid_size`."""
        if tuple(grid_size) != self.grid_size:
            raise ValueError(f"top_down.scan was built for a {self.grid_size} token grid, got {tuple(grid_size)}")
        outs = []
        for path, perm in zip(self.paths, scan_permutations(self.order, self.grid_size)):
            perm = perm.to(u.device)
            y = self._sequence(path, u.index_select(1, perm))
            outs.append(y.index_select(1, torch.argsort(perm)))  # back to grid order
        return self.out(torch.cat(outs, dim=-1))
