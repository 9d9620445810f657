"""What Adamas did at each decode step, recorded for the figures, with bounded memory.

Two recorders, one record (batch row 0 only):
- `TraceRecorder`, what `adamas.generate(..., trace=True)` uses: each sparse layer copies its
  query [Hq, d] and selected indices [Hq, K] into preallocated buffers at a step slot held in
  a device tensor, so recording adds two copies per layer and runs inside a CUDA graph;
  `finish()` computes everything else afterwards from those buffers and the cache's keys
  and codes, all steps of a layer at once.
- `Tracer`, for per-step consumers (the evaluation's recall meter): it computes each step's
  recall while the step runs.
Either gives, per decode step, a `StepTrace`:
- `recall` [layers, Hq] fp32: the attention mass of the selected tokens over the true top-K
  mass, K = the tokens that head selected (NaN on dense layers);
- for the traced (layer, head) pairs only: the selected indices, the estimated scores
  (negated code distances, int16) and the true scores q·k·scale (fp16) over the context;
and for the whole run `density` [layers, Hq, L] int32: how often each token was selected.
Memory of a TraceRecorder: per sparse layer, steps·Hq·(s·d + 8·K) bytes on the model's
device, s the bytes of the model's dtype (SmolLM2 in fp32, 128 steps, budget 128: 28 layers ·
1.5 MB ≈ 41 MB), plus the finished traces: 4·layers·Hq·L bytes of density and per step
pairs·(8·K + 4·L) bytes.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from adamas.ops import encode, manhattan, query_thresholds

ACTIVE_TRACER: ContextVar[Tracer | None] = ContextVar("adamas_tracer", default=None)
ACTIVE_RECORDER: ContextVar[TraceRecorder | None] = ContextVar("adamas_recorder", default=None)
SCORE_ELEMENTS = 1 << 26
"""Scores finish() holds at once per layer ([steps, Hq, L] fp32, 256 MiB): long contexts go a few steps at a time."""


@dataclass
class HeadTrace:
    """One traced (layer, head) at one step: which tokens it chose and how they scored."""

    selected: torch.Tensor  # [K] int64 token indices (-1: empty slot)
    estimated: torch.Tensor  # [L] int16, negated Manhattan distance of the codes
    true: torch.Tensor  # [L] fp16, q·k·scale


@dataclass
class StepTrace:
    """Everything recorded at one decode step."""

    recall: torch.Tensor  # [layers, Hq] fp32, NaN where the layer ran dense
    heads: dict[tuple[int, int], HeadTrace] = field(default_factory=dict)


@dataclass
class RunTrace:
    """A finished run's traces: one StepTrace per decode step and the selection density over all of them."""

    steps: list[StepTrace]
    density: torch.Tensor  # [layers, Hq, L] int32 on the CPU, L = the tokens of the last step's context


def true_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """q·k·scale in fp32 of queries q [N, Hq, d] against keys k [Hkv, L, d]: [N, Hq, L]."""
    group = q.shape[1] // k.shape[0]
    keys = k.float().repeat_interleave(group, dim=0)  # [Hq, L, d]
    return torch.einsum("nhd,hld->nhl", q.float(), keys) * scale


def recall_at_budget(true: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The selection's attention mass over the best that as many tokens could hold: [N, Hq].

    true [N, Hq, L] scores (-inf where a token was not visible); idx [N, Hq, K] (-1: empty slot).
    """
    probs = true.softmax(dim=-1)
    kept = probs.gather(-1, idx.clamp(min=0)).masked_fill(idx < 0, 0).sum(-1)  # [N, Hq]
    count = (idx >= 0).sum(-1, keepdim=True)  # tokens each head attended
    top = probs.topk(min(idx.shape[-1], probs.shape[-1]), dim=-1).values  # sorted; count <= its width
    best = top.cumsum(-1).gather(-1, (count - 1).clamp(min=0))[..., 0]
    return kept / best


class Tracer:
    """Collects the StepTraces and selection density of one generation while it runs (batch row 0)."""

    def __init__(self, layers: int, heads: int, max_len: int, pairs: tuple[tuple[int, int], ...]) -> None:
        self._density = torch.zeros(layers, heads, max_len, dtype=torch.int32)  # moves to the model's device
        self._placed = False
        self.pairs = pairs
        self.layers, self.heads = layers, heads
        self.current = self._new_step()

    @property
    def density(self) -> torch.Tensor:
        """[layers, Hq, max_len] int32 on the CPU: how often each token was selected, summed over steps."""
        return self._density.cpu()

    def _new_step(self) -> StepTrace:
        return StepTrace(recall=torch.full((self.layers, self.heads), float("nan"), device=self._density.device))

    def finish_step(self) -> StepTrace:
        """Close the current step and return what it recorded (on the CPU: one host sync per step)."""
        done, self.current = self.current, self._new_step()
        done.recall = done.recall.cpu()
        return done

    @torch.no_grad()
    def observe(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        k_codes: torch.Tensor,
        idx: torch.Tensor,
        scale: float,
        thresholds: tuple[float, float, float] | torch.Tensor,
        valid: torch.Tensor | None,
    ) -> None:
        """Record one sparse layer: q [B, Hq, d], k [B, Hkv, L, d], k_codes, idx [B, Hq, K].

        `thresholds` are the query's bucket edges (three floats, or [Hq, 3]).
        """
        if not self._placed:  # kept on the device of the first sparse layer: no host sync per layer
            self._density = self._density.to(q.device)
            self.current.recall = self.current.recall.to(q.device)
            self._placed = True
        home = self._density.device  # a model split over devices sends the other layers' results here
        true = true_scores(q[:1], k[0], scale)  # [1, Hq, L]
        if valid is not None:
            true = true.masked_fill(~valid[:1, None], float("-inf"))
        idx0 = idx[0]
        self.current.recall[layer] = recall_at_budget(true, idx[:1])[0].to(home)
        self._density[layer].scatter_add_(1, idx0.clamp(min=0).to(home), (idx0 >= 0).int().to(home))
        wanted = [h for (lay, h) in self.pairs if lay == layer]
        if wanted:
            dist = manhattan(encode(q[:1], thresholds), k_codes[:1])[0]  # [Hq, L]
            for h in wanted:
                self.current.heads[(layer, h)] = HeadTrace(
                    selected=idx0[h].cpu(), estimated=(-dist[h]).to(torch.int16).cpu(), true=true[0, h].half().cpu()
                )


class TraceRecorder:
    """Records each sparse layer's query and selection at every decode step into fixed buffers (batch row 0).

    Made per run for at most `steps` decode steps. While it is ACTIVE_RECORDER, the attention
    function calls `record`; the decode loop calls `advance` after each step's forward (both
    are device-side, so a captured CUDA graph replays them) and counts the steps in `recorded`.
    `bind(cache, start)` names the run's cache and prompt length; `finish()` then computes the
    traces from the buffers and the cache's keys and codes.
    """

    def __init__(self, steps: int, pairs: tuple[tuple[int, int], ...] = ()) -> None:
        self.steps, self.pairs = steps, tuple(pairs)
        self.recorded = 0  # decode steps run (host-side count, kept by the decode loop)
        self.queries: dict[int, torch.Tensor] = {}  # layer -> [steps, Hq, d]
        self.selected: dict[int, torch.Tensor] = {}  # layer -> [steps, Hq, K] int64, -1: empty slot
        self.scales: dict[int, float] = {}
        self.slots: dict[torch.device, torch.Tensor] = {}  # int64 [1] per device: the step being recorded
        self.cache, self.start = None, 0

    def bind(self, cache: object, start: int) -> None:
        """The cache whose layers hold the run's keys and codes, and the prompt's length."""
        self.cache, self.start = cache, start

    def record(self, layer: int, q: torch.Tensor, idx: torch.Tensor, scale: float, budget: int) -> None:
        """Copy one sparse layer's query q [B, Hq, d] and selection idx [B, Hq, K] into the current slot."""
        if layer not in self.queries:  # first step: allocated eagerly (a graph's warm-up runs before its capture)
            width = max(budget, idx.shape[-1])
            self.queries[layer] = q.new_zeros(self.steps, *q.shape[1:])
            self.selected[layer] = torch.full((self.steps, idx.shape[1], width), -1, dtype=idx.dtype, device=q.device)
            self.scales[layer] = scale
            self.slots.setdefault(q.device, torch.zeros(1, dtype=torch.long, device=q.device))
        slot, picked = self.slots[q.device], idx[:1]  # idx's own dtype: no conversion kernel per layer
        width = self.selected[layer].shape[-1]
        if picked.shape[-1] != width:  # a dynamic cache shorter than the budget selects fewer
            picked = torch.nn.functional.pad(picked, (0, width - picked.shape[-1]), value=-1)
        self.queries[layer].index_copy_(0, slot, q[:1])
        self.selected[layer].index_copy_(0, slot, picked)

    def advance(self) -> None:
        """Move every device's slot to the next step (the last slot takes any step past `steps`)."""
        for slot in self.slots.values():
            slot.add_(1).clamp_(max=self.steps - 1)

    def slot_values(self) -> list[torch.Tensor]:
        """Copies of the slots, for a graph capture to put back after its warm-up steps."""
        return [slot.clone() for slot in self.slots.values()]

    def restore(self, values: list[torch.Tensor]) -> None:
        """Put back slots saved by slot_values()."""
        for slot, value in zip(self.slots.values(), values, strict=True):
            slot.copy_(value)

    @torch.no_grad()
    def finish(self) -> RunTrace:
        """The run's StepTraces and selection density, from the buffers and the bound cache."""
        if self.cache is None:
            raise RuntimeError("finish() needs the run's cache: bind(cache, start) first")
        steps, length = min(self.recorded, self.steps), self.start + min(self.recorded, self.steps)
        layers = len(self.cache.layers)
        heads = next(iter(self.queries.values())).shape[1] if self.queries else 0
        recall = torch.full((steps, layers, heads), float("nan"))
        density = torch.zeros(layers, heads, length, dtype=torch.int32)
        traces = [StepTrace(recall=recall[s]) for s in range(steps)]
        for layer in self.queries:
            self._finish_layer(layer, steps, recall[:, layer], density[layer], traces)
        return RunTrace(traces, density)

    def _finish_layer(self, layer: int, steps: int, recall, density, traces: list[StepTrace]) -> None:
        """Recall, density and the traced heads' scores of one layer, a chunk of steps at a time."""
        cached = self.cache.layers[layer]
        length = self.start + steps
        keys = cached.keys[0, :, :length]  # [Hkv, L, d]
        q_all, idx_all = self.queries[layer][:steps], self.selected[layer][:steps].long()
        heads = [h for (lay, h) in self.pairs if lay == layer]
        edges = query_thresholds(cached.config, _per_head(cached.thresholds), q_all[:1], keys[None]) if heads else None
        chunk = max(1, SCORE_ELEMENTS // (q_all.shape[1] * length))
        visible = torch.arange(length, device=keys.device)
        for first in range(0, steps, chunk):
            q, idx = q_all[first : first + chunk], idx_all[first : first + chunk]  # [N, Hq, d], [N, Hq, K]
            ends = self.start + 1 + torch.arange(first, first + q.shape[0], device=keys.device)  # tokens each saw
            true = true_scores(q, keys, self.scales[layer])
            true = true.masked_fill(visible[None, None, :] >= ends[:, None, None], float("-inf"))  # [N, Hq, L]
            recall[first : first + q.shape[0]] = recall_at_budget(true, idx).cpu()
            counts = torch.zeros(idx.shape[1], length, dtype=torch.int32, device=idx.device)
            per_head = idx.transpose(0, 1).flatten(1)  # [Hq, N * K]
            counts.scatter_add_(1, per_head.clamp(min=0), (per_head >= 0).int())
            density += counts.cpu()
            for n in range(q.shape[0]) if heads else ():
                end = int(ends[n])
                dist = manhattan(encode(q[n : n + 1], edges), cached.codes[:1, :, :end])[0]  # [Hq, L]
                for h in heads:
                    traces[first + n].heads[(layer, h)] = HeadTrace(
                        selected=idx[n, h].cpu(),
                        estimated=(-dist[h]).to(torch.int16).cpu(),
                        true=true[n, h, :end].half().cpu(),
                    )


def _per_head(thresholds: object) -> torch.Tensor | None:
    """A cache layer's fitted [Hkv, 3] thresholds, or None when it encodes under the config's three floats."""
    return thresholds if isinstance(thresholds, torch.Tensor) else None


def default_pairs(layers: int, dense_layers: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Four traced (layer, head) pairs by default: head 0 of four sparse layers spread over the depth."""
    sparse = [i for i in range(layers) if i not in dense_layers]
    if not sparse:
        return ()
    picks = sorted({sparse[round(j * (len(sparse) - 1) / 3)] for j in range(4)})
    return tuple((layer, 0) for layer in picks)
