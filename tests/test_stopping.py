"""adamas.stopping: a run stops at the next decoder layer once asked, inside a prefill too, and leaves no hook."""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICE
from tiny_models import CharTokenizer, tiny_model

import adamas
from adamas import integration
from adamas.stopping import Stopped, checkpoints, stoppable


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_checkpoints_are_every_layer_and_its_parts(family):
    model = tiny_model(family)
    points = checkpoints(model)
    layers = list(model.model.layers)
    assert all(layer in points for layer in layers)
    assert all(layer.self_attn in points and layer.mlp in points for layer in layers)
    assert checkpoints(torch.nn.Linear(2, 2))[0].__class__ is torch.nn.Linear  # no layers: the module itself


@pytest.mark.parametrize("stop_at", [0, 2], ids=["first-layer", "third-layer"])
def test_a_prefill_stops_at_the_next_checkpoint_and_the_hooks_go(stop_at):
    model = tiny_model("llama")
    ran: list[int] = []
    flag = {"stop": False}

    def count(module, args):  # registered first, so it runs before the stop check of the same layer
        ran.append(index[module])
        flag["stop"] = len(ran) > stop_at

    index = {layer: i for i, layer in enumerate(model.model.layers)}
    counters = [layer.register_forward_pre_hook(count) for layer in model.model.layers]
    ids = torch.randint(3, 90, (1, 300), device=DEVICE)
    with pytest.raises(Stopped, match="stopped on request"), stoppable(model, lambda: flag["stop"]):
        model(input_ids=ids)
    for handle in counters:
        handle.remove()
    assert ran == list(range(stop_at + 1)), "no decoder layer runs once the stop is asked for"
    assert all(len(m._forward_pre_hooks) == 0 for m in checkpoints(model)), "stoppable leaves no hook behind"


def test_a_stopped_generation_restores_the_model():
    """Eager decode steps run the checkpoints (a CUDA-graph replay runs none: its caller checks between steps)."""
    model = tiny_model("llama")
    config = adamas.AdamasConfig(budget=16, dense_layers=())
    steps = 0

    def should_stop() -> bool:
        return steps >= 3

    with pytest.raises(Stopped), stoppable(model, should_stop):
        for _ in adamas.generate(model, CharTokenizer(), "x" * 64, config, max_new_tokens=20, cuda_graph=False):
            steps += 1
    assert steps == 3 and integration.enabled_config(model) is None


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="should_stop must be callable, got int"), stoppable(tiny_model("llama"), 3):
        pass
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got str"), stoppable("model", lambda: 0):
        pass
