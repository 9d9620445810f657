"""The stage breakdown of a decode step: kernel names sorted into stages, one profiled step undone."""

import pytest
from helpers import CUDA
from tiny_models import prompt_batch, tiny_model

import adamas
from adamas.profiling import STAGES, profile_step, stage_times
from adamas.static import GraphDecoder


def test_kernels_are_sorted_into_stages_and_merges_follow_their_attention():
    kernels = [
        ("_append_kernel_0d1d", 1.5),
        ("_hadamard_encode_kernel_0d1d", 0.5),
        ("ampere_bf16_gemm", 10.0),
        ("_dense_attention_partial_kernel", 5.0),
        ("_merge_splits_kernel", 1.0),  # after a dense partial: dense
        ("_scan_kernel", 7.0),
        ("_split_kernel", 3.0),
        ("threshold_kernel", 1.0),
        ("_sparse_attention_partial_kernel", 4.0),
        ("_merge_splits_kernel", 0.5),  # after a sparse partial: sparse
        ("triton_red_fused_rms_norm", 1.5),
    ]
    times = stage_times(kernels)
    assert tuple(times) == STAGES
    assert times == {
        "append + encode": 2.0,
        "estimate + select": 11.0,
        "sparse attention": 4.5,
        "dense attention": 6.0,
        "rest of the model": 11.5,
    }


def test_profile_step_needs_a_prefilled_decoder_with_room():
    decoder = GraphDecoder(tiny_model("llama"), adamas.AdamasConfig(budget=8), 48, cuda_graph=False)
    if not CUDA:
        assert profile_step(decoder) is None  # no device times to read on a CPU
        return
    with pytest.raises(RuntimeError, match="prefilled decoder"):
        profile_step(decoder)


@pytest.mark.skipif(not CUDA, reason="kernel device times need a GPU")
@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
def test_profiled_step_is_undone_and_splits_an_adamas_step(graph):
    config = adamas.AdamasConfig(budget=8, thresholds="calibrated")
    ids = prompt_batch(batch=1, length=40)[0]

    def run(profiled: bool) -> tuple[list[int], dict | None]:
        decoder = GraphDecoder(tiny_model("llama"), config, 64, cuda_graph=graph)
        tokens = [int(decoder.prefill(ids))]
        stages = profile_step(decoder) if profiled else None
        tokens += [int(decoder.step()) for _ in range(6)]
        return tokens, stages

    plain, _ = run(False)
    tokens, stages = run(True)
    assert tokens == plain
    assert set(stages) == set(STAGES) and all(us >= 0 for us in stages.values())
    for stage in STAGES:  # the dense layers (0, 1) run dense attention beside the sparse layers' stages
        assert stages[stage] > 0, stage
