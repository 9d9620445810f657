"""What Adamas did at each decode step, recorded for the figures, with bounded memory.

A `Tracer` is active (through a context variable) while `adamas.generate(..., trace=True)`
runs; the attention function hands it each sparse layer's query, keys and selection.
It records batch row 0 only:
- `density` [layers, Hq, max_len] int32: how often each token was selected, summed over steps;
- per step, `recall` [layers, Hq] fp32: the attention mass of the selected tokens over the
  true top-K mass, K = the tokens that head selected (NaN on dense layers);
- per step, for the traced (layer, head) pairs only: the selected indices, the estimated
  scores (negated code distances, int16) and the true scores q·k·scale (fp16) over the context.
Memory: 4·layers·Hq·max_len bytes, plus per step 4·layers·Hq + pairs·(8·K + 4·L) bytes;
for SmolLM2 (30 layers, 9 heads) at 8K context, 256 steps, 4 pairs and budget 4096:
about 9 MB + 256 · 0.16 MB ≈ 50 MB. Nothing is recorded when no tracer is active.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from adamas.ops import encode, manhattan

ACTIVE_TRACER: ContextVar[Tracer | None] = ContextVar("adamas_tracer", default=None)


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


class Tracer:
    """Collects StepTraces and the selection density of one generation (batch row 0)."""

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
        q0, k0, idx0 = q[:1].float(), k[:1].float(), idx[0]
        group = q0.shape[1] // k0.shape[1]
        true = torch.einsum("hd,hld->hl", q0[0], k0[0].repeat_interleave(group, dim=0)) * scale  # [Hq, L]
        if valid is not None:
            true = true.masked_fill(~valid[0], float("-inf"))
        probs = true.softmax(dim=-1)
        kept = probs.gather(-1, idx0.clamp(min=0)).masked_fill(idx0 < 0, 0).sum(-1)  # [Hq]
        count = (idx0 >= 0).sum(-1, keepdim=True)  # tokens each head attended
        top = probs.topk(min(idx0.shape[-1], probs.shape[-1]), dim=-1).values  # sorted; count <= its width
        best = top.cumsum(-1).gather(-1, (count - 1).clamp(min=0))[:, 0]
        self.current.recall[layer] = (kept / best).to(home)
        self._density[layer].scatter_add_(1, idx0.clamp(min=0).to(home), (idx0 >= 0).int().to(home))
        wanted = [h for (lay, h) in self.pairs if lay == layer]
        if wanted:
            dist = manhattan(encode(q0.to(q.dtype), thresholds), k_codes[:1])[0]  # [Hq, L]
            for h in wanted:
                self.current.heads[(layer, h)] = HeadTrace(
                    selected=idx0[h].cpu(), estimated=(-dist[h]).to(torch.int16).cpu(), true=true[h].half().cpu()
                )


def default_pairs(layers: int, dense_layers: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Four traced (layer, head) pairs by default: head 0 of four sparse layers spread over the depth."""
    sparse = [i for i in range(layers) if i not in dense_layers]
    if not sparse:
        return ()
    picks = sorted({sparse[round(j * (len(sparse) - 1) / 3)] for j in range(4)})
    return tuple((layer, 0) for layer in picks)
