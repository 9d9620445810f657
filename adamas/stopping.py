"""Stopping a run from another thread, inside a long prefill too.

A prefill is one forward per chunk of thousands of tokens, so a check between chunks or
between decode steps can leave a stopped run computing for many seconds. `stoppable` checks
before every decoder layer and before its attention and MLP, which bounds the wait to one of
those; it touches neither the kernels nor the generation loop. A CUDA-graph replay runs no
Python, so on that path the caller also checks between steps (`adamas.studio` does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


class Stopped(Exception):
    """A run ended early because its `should_stop` turned true."""


@contextmanager
def stoppable(model: torch.nn.Module, should_stop: Callable[[], bool]) -> Iterator[None]:
    """Within the block, `model`'s forward raises Stopped at the next checkpoint once `should_stop()` is true.

    The checkpoints are each decoder layer and its direct sub-modules (attention, MLP, norms).
    `should_stop` is called from the thread running the model, so it must be cheap and
    thread-safe (a `threading.Event`'s `is_set` is both). Nothing is checked while a CUDA
    graph is being captured: raising there would leave the capture half-made.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(should_stop):
        raise TypeError(f"should_stop must be callable, got {type(should_stop).__name__}")

    def check(module: torch.nn.Module, args: tuple) -> None:
        if should_stop() and not _capturing():
            raise Stopped(f"stopped on request, before a {type(module).__name__}")

    handles = [module.register_forward_pre_hook(check) for module in checkpoints(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def checkpoints(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules `stoppable` checks before: each decoder layer and its children, else the model itself."""
    layers = getattr(getattr(model, "base_model", model), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return [model]
    return [module for layer in layers for module in (layer, *layer.children())]


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
