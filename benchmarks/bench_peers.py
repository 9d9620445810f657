"""Adamas beside its peers: one layer's decode step, stage by stage, same inputs, one process, one GPU.

    python -m benchmarks.bench_peers [--cases ...] [--systems ...] [--sglang PATH] [--adamas-src PATH]
        [--include DIR ...] [--build-timeout S] [--out results.json]

Systems, each on the case's q, K, V (bf16 unless noted), budget equal across a row:
- adamas: encode q, `kernels.nearest` (fused scan + select), sparse attention, and the whole
  `adamas.decode_attention`; sdpa: dense SDPA (its flash path), the dense anchor.
- flashinfer-dense: BatchDecodeWithPagedKVCacheWrapper over a paged copy of K/V (pages of 16, HND),
  tensor cores off and on (the faster is the total). flashinfer-sparse: `flashinfer.top_k` (radix)
  over fp32 scores [B * Hq, L] (the negated code distances, so it selects what Adamas selects), then the
  same wrapper over the selected tokens: pages of one token, one request per query head (so each head
  attends its own tokens), the selected indices as the page table. No scoring stage: FlashInfer has none.
- double-sparsity: sglang's Triton decode (`--sglang`: a checkout, or the directory of
  double_sparsity_attention.py), as sglang's backend calls it: gather the query's label channels,
  approximate attention over the label cache, torch.topk, sparse attention + merge.
- adamas-authors: the paper's CUDA kernels (`--adamas-src`: a checkout of FibonaccciYan/Adamas with its
  submodules' headers, or any tree holding adamas/ops/csrc and kernels/include; `--include`: raft 24.02,
  rmm 24.02, spdlog 1.12 and CCCL 2.2 headers where the checkout lacks them), built here with nvcc for
  sm_90a while the other systems run. Their native case only: MHA 32/32/128, fp16, batch 1.

CUDA-graph replay over rotating input sets where a system allows it, else CUDA events (the authors'
kernels launch on the legacy default stream, which a graph capture rejects), plus the profiler's
kernel sum for event-timed systems. A system that is missing or fails is recorded with the reason.
Each case runs in a child process: a kernel that faults (an illegal address leaves the CUDA
context unusable) loses its own record only, and a new child times the systems after it.
Prints a table and writes benchmarks/results/peers_<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import device_slug, input_sets, kernel_us, print_table, time_us, write_results
from benchmarks.models import ATTENTION_SHAPES as SHAPES


@dataclass(frozen=True)
class Case:
    """One row: the attention shape, context, batch and token budget every system gets."""

    shape: str
    length: int
    batch: int
    budget: int


CASES = {
    "llama3-8b-32k": Case("llama3-8b", 32768, 1, 128),
    "llama3-8b-128k": Case("llama3-8b", 131072, 1, 128),
    "llama3-8b-128k-b8": Case("llama3-8b", 131072, 8, 128),
    "mha-7b-32k-paper": Case("mha-7b", 32768, 1, 256),  # the paper's kernel benchmark: every peer
}
SYSTEMS = ("adamas", "sdpa", "flashinfer-dense", "flashinfer-sparse", "double-sparsity", "adamas-authors", "quest")
DENSE = ("sdpa", "flashinfer-dense")
STAGE_REPS, TOTAL_REPS = 3, 5  # graph timings per stage and per total, as bench_attention
FLASHINFER_PAGE = 16  # tokens a page in the dense paged copy
DS_CHANNELS, DS_BLOCK_SEQ = 32, 128  # sglang's defaults: ds_heavy_channel_num, the backend's BLOCK_SEQ
DS_FILE = "double_sparsity_attention.py"
DS_PLACES = ("", "python/sglang/srt/layers/attention/triton_ops", "sglang/srt/layers/attention/triton_ops")
AUTHORS_SOURCES = ("estimate.cu", "topk.cu", "approx_attn.cu", "page.cu")  # adamas/ops/csrc: the decode ops
AUTHORS_BINDING = """#include "bsk_ops.h"
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pack_2bit", &pack_2bit);
  m.def("estimate_attn_score", &estimate_attn_score);
  m.def("topk_filtering", &topk_filtering);
  py::class_<BatchDecodeWithPagedKVCachePyTorchWrapper>(m, "BatchDecodeWithPagedKVCachePyTorchWrapper")
      .def(py::init(&BatchDecodeWithPagedKVCachePyTorchWrapper::Create))
      .def("begin_forward", &BatchDecodeWithPagedKVCachePyTorchWrapper::BeginForward)
      .def("forward", &BatchDecodeWithPagedKVCachePyTorchWrapper::Forward);
}
"""
"""Our binding of the authors' functions the decode step calls (their bsk_ops.cu also binds prefill ops,
whose sources need more than the decode step)."""
AUTHORS_HEADERS = {  # what their sources include, by the file that shows a directory holds it
    "flashinfer (their pinned 2024 submodule, not the 0.6 wheel's)": "flashinfer/layout.cuh",
    "raft 24.02": "raft/matrix/detail/select_k-inl.cuh",
    "rmm 24.02": "rmm/cuda_stream_view.hpp",
    "spdlog 1.12 (raft's logger)": "spdlog/fmt/bundled/core.h",
    "CCCL 2.2 thrust (rmm 24.02 includes thrust/optional.h, gone in CUDA 13)": "thrust/optional.h",
    "CCCL 2.2 cub": "cub/cub.cuh",
    "CCCL 2.2 libcudacxx (cuda::stream_ref for rmm)": "cuda/stream_ref",
}
AUTHORS_FLAGS = [
    "-gencode=arch=compute_90a,code=sm_90a",
    "--expt-extended-lambda",
    "--expt-relaxed-constexpr",
    "-DBSK_TORCH_CHECK",  # their CMake's: input checks on
    "-DLIBCUDACXX_ENABLE_EXPERIMENTAL_MEMORY_RESOURCE",  # rmm 24.02's cuda::mr, as RAPIDS 24.02 built it
    "-DFMT_HEADER_ONLY",  # rmm includes <fmt/...> directly: spdlog's bundled fmt, header-only
    "-DFMT_CONSTEVAL=",  # fmt 9's format-string checks are consteval under C++20, which nvcc rejects
    "-DFMT_USE_CONSTEXPR=1",  # fmt 9 turns constexpr off under nvcc, then g++ rejects its constexpr functions
    *(f"-U__CUDA_NO_{x}__" for x in ("HALF_OPERATORS", "HALF_CONVERSIONS", "BFLOAT16_CONVERSIONS", "HALF2_OPERATORS")),
]
"""nvcc flags beyond torch's: theirs from adamas/ops/CMakeLists.txt, and what this toolchain needs;
torch's extension flags forbid half operators, which FlashInfer's headers use (their CMake build had none)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; every value lands in the JSON's parameters."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--sglang", type=Path, help="sglang checkout, or the directory of " + DS_FILE)
    parser.add_argument("--adamas-src", type=Path, help="FibonaccciYan/Adamas checkout (adamas/ops/csrc, kernels/)")
    parser.add_argument("--include", type=Path, action="append", default=[], help="header dir for their build")
    parser.add_argument("--build-dir", type=Path, help="where their build goes (default: a temporary dir)")
    parser.add_argument("--build-timeout", type=float, default=420.0, help="seconds their build may take")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    # a case's child process (run_isolated): times in this process and logs its progress to the parent
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--progress", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def error_text(error: BaseException) -> str:
    """A failure as recorded: type and message, cut to a readable length."""
    return f"{type(error).__name__}: {error}"[:600]


def events_us(fns: list, reps: int = TOTAL_REPS, iters: int = 20) -> dict:
    """Median and spread (µs) of one call from CUDA events around `iters` rounds of all `fns` (eager launches)."""
    for fn in fns:
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            for fn in fns:
                fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / (iters * len(fns)))
    times.sort()
    return {"median": times[len(times) // 2], "min": times[0], "max": times[-1]}


def timed(fns: list, reps: int, graph: bool = True) -> dict:
    """time_us (CUDA-graph replay) where the calls can be captured, else events_us; says which it used."""
    if graph:
        try:
            return time_us(fns, reps) | {"timing": "cuda-graph"}
        except Exception as error:  # a call a graph cannot capture: time it eagerly instead
            torch.cuda.synchronize()
            return events_us(fns, reps) | {"timing": "cuda-events", "graph_error": error_text(error)}
    return events_us(fns, reps) | {"timing": "cuda-events"}


def measure(stages: dict[str, list], total: list, graph: bool = True, profile: bool = False) -> dict:
    """A system's record: each stage's median, the whole step's median and spread, how it was timed."""
    result = timed(total, TOTAL_REPS, graph)
    record = {"stages_us": {name: timed(fns, STAGE_REPS, graph)["median"] for name, fns in stages.items()}}
    record |= {"total_us": result.pop("median"), "total_us_min": result.pop("min"), "total_us_max": result.pop("max")}
    if profile:  # eager launches: the kernels' own device time beside the event time
        kernels = kernel_us(total[0])
        record["kernels_us"] = kernels
        record["kernels_sum_us"] = sum(kernels.values()) if "error" not in kernels else None
    return record | result


def make_set(case: Case) -> dict:
    """One input set: bench_attention's bf16 q, K, V and codes, with the query's codes."""
    from adamas import PAPER_THRESHOLDS, kernels
    from benchmarks.bench_attention import make_inputs

    s = make_inputs(case.batch, *SHAPES[case.shape][:2], case.length, SHAPES[case.shape][2])
    s["q_codes"] = kernels.encode(s["q"], PAPER_THRESHOLDS)
    return s


def per_set(sets: list[dict], fn) -> list:
    """One zero-argument call per input set: fn(that set)."""
    return [functools.partial(fn, s) for s in sets]


def bench_adamas(case: Case, sets: list[dict]) -> dict:
    """Ours: encode q, the fused selection, sparse attention, and decode_attention as the library runs it."""
    import adamas
    from adamas import kernels

    d = SHAPES[case.shape][2]
    config = adamas.AdamasConfig.paper(case.budget, dense_layers=())
    for s in sets:
        s["idx"] = kernels.nearest(s["q_codes"], s["k_codes"], case.budget)
    stages = {
        "encode_q": per_set(sets, lambda s: kernels.encode(s["q"], adamas.PAPER_THRESHOLDS)),
        "select (nearest)": per_set(sets, lambda s: kernels.nearest(s["q_codes"], s["k_codes"], case.budget)),
        "attention": per_set(sets, lambda s: kernels.sparse_attention(s["q"], s["k"], s["v"], s["idx"], d**-0.5)),
    }
    total = per_set(sets, lambda s: adamas.decode_attention(s["q"], s["k"], s["v"], s["k_codes"], config))
    return measure(stages, total) | {"dtype": "bfloat16"}


def bench_sdpa(case: Case, sets: list[dict]) -> dict:
    """Dense decode through SDPA (its flash path: no mask), the anchor of bench_attention."""
    total = per_set(sets, lambda s: F.scaled_dot_product_attention(s["q"][:, :, None], s["k"], s["v"], enable_gqa=True))
    return measure({}, total) | {"dtype": "bfloat16"}


def flashinfer_wrapper(workspace: torch.Tensor, tensor_cores: bool, indptr, indices, last_len, heads, d: int, page):
    """A planned BatchDecodeWithPagedKVCacheWrapper; `indices` stays its page table (plan keeps device tensors)."""
    import flashinfer

    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "HND", use_tensor_cores=tensor_cores)
    wrapper.plan(indptr, indices, last_len, *heads, d, page, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    return wrapper


def bench_flashinfer_dense(case: Case, sets: list[dict]) -> dict:
    """FlashInfer's batch decode over a paged HND copy of each set's K/V, tensor cores off and on."""
    hq, hkv, d = SHAPES[case.shape]
    b, pages = case.batch, case.length // FLASHINFER_PAGE
    indptr = torch.arange(b + 1, device="cuda", dtype=torch.int32) * pages
    indices = torch.arange(b * pages, device="cuda", dtype=torch.int32)
    last_len = torch.full((b,), FLASHINFER_PAGE, device="cuda", dtype=torch.int32)
    workspace = torch.zeros(256 * 2**20, dtype=torch.uint8, device="cuda")
    caches = []
    for s in sets:  # [B, Hkv, L, d] -> [B * L / 16, Hkv, 16, d]: pages of 16 tokens
        k, v = (
            x.view(b, hkv, pages, FLASHINFER_PAGE, d).transpose(1, 2).reshape(-1, hkv, FLASHINFER_PAGE, d)
            for x in (s["k"], s["v"])
        )
        caches.append((s["q"], (k, v)))
    record = {"dtype": "bfloat16", "page_size": FLASHINFER_PAGE, "layout": "HND"}
    variants = {}
    for tensor_cores in (False, True):
        name = f"tensor_cores={'on' if tensor_cores else 'off'}"
        try:
            wrapper = flashinfer_wrapper(
                workspace, tensor_cores, indptr, indices, last_len, (hq, hkv), d, FLASHINFER_PAGE
            )
            variants[name] = measure({}, [functools.partial(wrapper.run, q, kv) for q, kv in caches])
        except Exception as error:  # one variant failing leaves the other's time
            variants[name] = {"error": error_text(error)}
    caches.clear()
    timed_variants = {k: v for k, v in variants.items() if "total_us" in v}
    if not timed_variants:
        raise RuntimeError(f"no FlashInfer dense variant ran: {variants}")
    best = min(timed_variants, key=lambda k: timed_variants[k]["total_us"])
    return record | timed_variants[best] | {"best": best, "variants": variants}


def bench_flashinfer_sparse(case: Case, sets: list[dict]) -> dict:
    """flashinfer.top_k over fp32 scores, then batch decode over the selected tokens (pages of one token)."""
    import flashinfer

    from adamas import kernels

    hq, hkv, d = SHAPES[case.shape]
    rows, k = case.batch * hq, case.budget
    # request (b, h) reads KV head h // (Hq / Hkv) of batch b: its tokens are pages row_offset + index
    row_offset = (torch.arange(rows, device="cuda", dtype=torch.int32) // (hq // hkv)) * case.length
    lengths = torch.full((rows,), case.length, device="cuda", dtype=torch.int32)
    indptr = torch.arange(rows + 1, device="cuda", dtype=torch.int32) * k
    last_len = torch.ones(rows, device="cuda", dtype=torch.int32)
    workspace = torch.zeros(256 * 2**20, dtype=torch.uint8, device="cuda")
    for s in sets:
        s["scores"] = -kernels.manhattan(s["q_codes"], s["k_codes"]).float().view(rows, case.length)
        s["pages"] = (flashinfer.top_k(s["scores"], k)[1].int() + row_offset[:, None]).view(-1)  # [rows * k]
        s["wrapper"] = flashinfer_wrapper(workspace, False, indptr, s["pages"], last_len, (1, 1), d, 1)
        s["kv"] = tuple(x.view(-1, 1, 1, d) for x in (s["k"], s["v"]))  # every token its own page, one head
        s["q_rows"] = s["q"].reshape(rows, 1, d)

    def select(s):  # indices of the top-k, shifted to page ids in place: the wrapper's page table
        s["pages"].copy_((flashinfer.top_k(s["scores"], k)[1].int() + row_offset[:, None]).view(-1))

    def step(s):
        select(s)
        return s["wrapper"].run(s["q_rows"], s["kv"])

    stages = {
        "select (top_k)": per_set(sets, lambda s: flashinfer.top_k(s["scores"], k)),
        "attention (paged, page 1)": per_set(sets, lambda s: s["wrapper"].run(s["q_rows"], s["kv"])),
    }
    record = measure(stages, per_set(sets, step))
    if hasattr(flashinfer, "top_k_ragged_transform"):  # the fused top-k + index shift of 0.6
        fused = per_set(sets, lambda s: flashinfer.top_k_ragged_transform(s["scores"], row_offset, lengths, k))
        record["stages_us"]["select (top_k_ragged_transform)"] = timed(fused, STAGE_REPS)["median"]
    for s in sets:
        for key in ("scores", "pages", "wrapper", "kv", "q_rows"):
            s.pop(key)
    return record | {"dtype": "bfloat16", "scores": "fp32, negated code distances", "requests": "one per query head"}


def find_double_sparsity(path: Path | None) -> Path:
    """double_sparsity_attention.py in an sglang checkout, site-packages, or the directory given."""
    if path is None:
        raise FileNotFoundError("no --sglang given (an sglang checkout, or the directory of " + DS_FILE + ")")
    if path.is_file():
        return path
    for place in DS_PLACES:
        if (path / place / DS_FILE).is_file():
            return path / place / DS_FILE
    raise FileNotFoundError(f"{DS_FILE} not found in {path} (looked in {', '.join(p or '.' for p in DS_PLACES)})")


def load_double_sparsity(path: Path) -> types.ModuleType:
    """sglang's Double Sparsity kernels, imported from their file alone.

    The file imports two sglang names at the top; sglang itself (its server, its scheduler) is not
    needed to run the kernels, so while the file executes, STAND-INS for those two modules sit in
    sys.modules with sglang's defaults: triton_attention_reduce_in_fp32 False, is_cuda, is_hip.
    """
    stand_ins = {
        name: types.ModuleType(name) for name in ("sglang", "sglang.srt", "sglang.srt.server_args", "sglang.srt.utils")
    }
    stand_ins["sglang.srt.server_args"].get_global_server_args = lambda: types.SimpleNamespace(
        triton_attention_reduce_in_fp32=False
    )
    stand_ins["sglang.srt.utils"].is_cuda = lambda: torch.cuda.is_available() and torch.version.cuda
    stand_ins["sglang.srt.utils"].is_hip = lambda: torch.version.hip is not None
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location("double_sparsity_attention", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, module_before in saved.items():
            if module_before is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module_before
    return module


def bench_double_sparsity(case: Case, sets: list[dict], ds: types.ModuleType) -> dict:
    """Double Sparsity's decode as sglang's backend runs it, on token-major copies of K/V and a label cache."""
    hq, hkv, d = SHAPES[case.shape]
    b, length, k = case.batch, case.length, case.budget
    scale = d**-0.5
    blocks = -(-k // DS_BLOCK_SEQ)
    seq_lens = torch.full((b,), length, device="cuda", dtype=torch.int32)
    req_to_token = torch.arange(b * length, device="cuda", dtype=torch.int32).view(b, length)
    channels_kv = torch.stack([torch.randperm(d, device="cuda")[:DS_CHANNELS] for _ in range(hkv)])  # [Hkv, C]
    channels_q = channels_kv.repeat_interleave(hq // hkv, 0)  # each query head reads its KV head's channels

    def q_label(s):
        return torch.gather(s["q"], 2, channels_q[None].expand(b, -1, -1))

    def estimate(s):
        ds.sparse_flash_decode_stage1(q_label(s), s["label"], s["att"], req_to_token, seq_lens, length, scale, 0.0)

    def attention(s):
        args = (s["q"], s["k_tok"], s["v_tok"], req_to_token, s["topk"], k, s["mid"], s["lse"], DS_BLOCK_SEQ, scale)
        ds.sparse_flash_decode_stage2(*args)
        ds.sparse_flash_decode_stage3(k, s["mid"], s["lse"], s["o"], DS_BLOCK_SEQ)

    def step(s):
        ds.flash_decode_sparse_attention_fwd(
            s["q"], s["k_tok"], s["v_tok"], s["o"], q_label(s), s["label"], req_to_token, seq_lens, length,
            scale, 0.0, k, s["att"], s["mid"], s["lse"], DS_BLOCK_SEQ,
        )  # fmt: skip

    for s in sets:  # token-major K/V [B * L, Hkv, d], the label cache [B * L, Hkv, C], sglang's buffers
        s["k_tok"], s["v_tok"] = (x.transpose(1, 2).reshape(b * length, hkv, d) for x in (s["k"], s["v"]))
        s["label"] = torch.gather(s["k_tok"], 2, channels_kv[None].expand(b * length, -1, -1))
        s["att"] = torch.empty(hq, b, length, dtype=ds.REDUCE_TORCH_TYPE, device="cuda")
        s["mid"] = torch.empty(b, hq, blocks, d, dtype=torch.float32, device="cuda")
        s["lse"] = torch.empty(b, hq, blocks, dtype=torch.float32, device="cuda")
        s["o"] = torch.empty_like(s["q"])
        estimate(s)
        s["topk"] = torch.topk(s["att"], k, dim=-1).indices  # [Hq, B, k], what the attention stage reads
    stages = {
        "estimate (label gather + stage1)": per_set(sets, estimate),
        "select (torch.topk)": per_set(sets, lambda s: torch.topk(s["att"], k, dim=-1)),
        "attention (stage2 + stage3)": per_set(sets, attention),
    }
    record = measure(stages, per_set(sets, step))
    for s in sets:
        for key in ("k_tok", "v_tok", "label", "att", "mid", "lse", "o", "topk"):
            s.pop(key)
    return record | {
        "dtype": "bfloat16",
        "label_channels": DS_CHANNELS,
        "block_seq": DS_BLOCK_SEQ,
        "reduce_dtype": str(ds.REDUCE_TORCH_TYPE),
    }


def authors_include_dirs(src: Path | None, includes: list[Path]) -> list[Path]:
    """The include dirs of the authors' build, their sources' first; raises naming whatever is missing."""
    if src is None:
        raise FileNotFoundError("no --adamas-src given (a checkout of github.com/FibonaccciYan/Adamas)")
    csrc, kernels = src / "adamas" / "ops" / "csrc", src / "kernels"
    needed = [csrc / name for name in ("bsk_ops.h", "pytorch_extension_utils.h", *AUTHORS_SOURCES)]
    needed.append(kernels / "include" / "decode" / "decode_handler.cuh")
    missing = [str(path.relative_to(src)) for path in needed if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"--adamas-src lacks their sources: {', '.join(missing)}")
    candidates = [kernels / "3rdparty" / "flashinfer" / "include", kernels / "3rdparty" / "raft" / "cpp" / "include"]
    dirs, lacking = [csrc, kernels / "include"], []
    for what, header in AUTHORS_HEADERS.items():
        found = [c for c in (*candidates, *includes) if (c / header).exists()]
        dirs += found[:1]
        lacking += [] if found else [f"{what}: {header}"]
    if lacking:
        raise FileNotFoundError(
            "headers found neither in the checkout's submodules nor in --include: " + "; ".join(lacking)
        )
    return list(dict.fromkeys(dirs))


def authors_spec(src: Path, includes: list[Path], build_dir: Path) -> dict:
    """torch.utils.cpp_extension.load's arguments for the authors' decode ops; writes the binding and the fmt shim."""
    dirs = authors_include_dirs(src, includes)
    spdlog = next(d for d in dirs if (d / AUTHORS_HEADERS["spdlog 1.12 (raft's logger)"]).exists())
    shim = build_dir / "shim"  # rmm's own #include <fmt/...> must meet spdlog's bundled fmt 9, not torch's newer fmt
    shim.mkdir(parents=True, exist_ok=True)
    if not (shim / "fmt").exists():
        (shim / "fmt").symlink_to((spdlog / "spdlog" / "fmt" / "bundled").resolve())
    (build_dir / "binding.cu").write_text(AUTHORS_BINDING)
    csrc = src / "adamas" / "ops" / "csrc"
    return {
        "name": "adamas_authors_decode",
        "sources": [str((csrc / name).resolve()) for name in AUTHORS_SOURCES] + [str(build_dir / "binding.cu")],
        "extra_include_paths": [str(d.resolve()) for d in (shim, *dirs)],
        "extra_cuda_cflags": AUTHORS_FLAGS,
        "build_directory": str(build_dir),
    }


def start_authors_build(spec: dict) -> subprocess.Popen:
    """Their build in a child process (nvcc runs while this one times the other systems), logged to build.log."""
    log = open(Path(spec["build_directory"]) / "build.log", "w")  # noqa: SIM115 (the child writes it until it exits)
    code = "import json, sys, torch.utils.cpp_extension as c; c.load(**json.loads(sys.argv[1]), verbose=True)"
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], stdout=log, stderr=subprocess.STDOUT)


def finish_authors_build(build: subprocess.Popen, spec: dict, deadline: float) -> types.ModuleType:
    """The built module, once the child is done; raises with the log's tail on failure or past the deadline."""
    log = Path(spec["build_directory"]) / "build.log"
    try:
        build.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        build.kill()
        raise TimeoutError(f"their build ran past --build-timeout; log tail: {log.read_text()[-1500:]}") from None
    if build.returncode != 0:
        errors = [line for line in log.read_text().splitlines() if "error" in line.lower()]
        raise RuntimeError(f"their build failed (exit {build.returncode}): " + " | ".join(errors[:8])[:1500])
    from torch.utils.cpp_extension import load

    return load(**spec)  # built: ninja finds it up to date and this only imports it


def bench_authors(case: Case, sets: list[dict], ops: types.ModuleType) -> dict:
    """The authors' decode step: pack the query's code, estimate (L1 over codes), raft top-k, approx attention.

    fp16 copies of the sets' tensors in their layouts: K/V pages of one token [L, 2, 1, H, d] (NHD), codes
    [L, 1, 1, H, d / 8] as fp16 words (ours are the same bits: 8 codes a 16-bit word, dim j at bit 2 (j % 8)).
    The current token is the last page, attended always, so budget - 1 tokens are selected, as they run it.
    The Hadamard transform of q (an external package in their code) is done beforehand, not timed.
    """
    from adamas import kernels

    hq, _, d = SHAPES[case.shape]
    length, k = case.length, case.budget - 1
    every = torch.arange(length, device="cuda", dtype=torch.int32)
    indptr_all = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    indptr_k = torch.tensor([0, k], device="cuda", dtype=torch.int32)
    wrapper = ops.BatchDecodeWithPagedKVCachePyTorchWrapper(0)  # 0: NHD
    wrapper.begin_forward(indptr_k, hq, hq, d, 1, torch.empty(0, dtype=torch.float16))
    for s in sets:
        s["a_h"] = kernels.hadamard(s["q"]).half()  # [1, H, d]
        s["a_q"], s["a_code"] = s["q"].half(), torch.empty(1, hq, d // 8, dtype=torch.float16, device="cuda")
        s["a_kv"] = torch.stack((s["k"][0], s["v"][0]), 0).half().permute(2, 0, 1, 3)[:, :, None].contiguous()
        s["a_codes"] = s["k_codes"][0].view(torch.int16).view(torch.float16).transpose(0, 1)[:, None, None].contiguous()
        s["a_est"] = torch.empty(hq, length - 1, dtype=torch.float16, device="cuda")
        s["a_cand"] = every[: length - 1].repeat(hq, 1)  # [H, L - 1]: every token but the current
        s["a_val"], s["a_idx"] = (
            torch.empty(hq, k, dtype=torch.float16, device="cuda"),
            torch.zeros(hq, k, dtype=torch.int32, device="cuda"),
        )
        s["a_buf"] = torch.zeros(
            hq, (length // 48 + 256) * 6, dtype=torch.float16, device="cuda"
        )  # raft's radix buffers
        s["a_o"] = torch.empty_like(s["a_q"])

    def encode(s):
        ops.pack_2bit(s["a_h"], s["a_code"], length - 1)

    def estimate(s):
        ops.estimate_attn_score(s["a_code"], s["a_est"], s["a_codes"], every, indptr_all, 1, length - 1, 0)

    def select(s):
        ops.topk_filtering(s["a_est"], s["a_cand"], s["a_val"], s["a_idx"], s["a_buf"], k)

    def attention(s):
        wrapper.forward(s["a_q"], s["a_o"], s["a_kv"], s["a_idx"], indptr_k, 1, length - 1, 1.0, 1e4)

    def step(s):
        for stage in (encode, estimate, select, attention):
            stage(s)

    stages = {
        "encode_q (pack_2bit)": encode,
        "estimate": estimate,
        "select (raft radix)": select,
        "attention": attention,
    }
    stages = {name: per_set(sets, fn) for name, fn in stages.items()}
    record = measure(stages, per_set(sets, step), graph=False, profile=True)
    for s in sets:
        for key in [key for key in s if key.startswith("a_")]:
            s.pop(key)
    return record | {"dtype": "float16", "note": "their native case: MHA, fp16, batch 1; Hadamard of q not timed"}


def dense_best(records: list[dict]) -> float | None:
    """The fastest dense total among the case's records."""
    totals = [r["total_us"] for r in records if r["system"] in DENSE and "total_us" in r]
    return min(totals) if totals else None


def bench_case(case: Case, args, peers: dict) -> list[dict]:
    """Every requested system on one case's input sets; each failure or skip recorded with its reason."""
    _, hkv, d = SHAPES[case.shape]
    sets = input_sets(functools.partial(make_set, case), 2 * case.batch * hkv * case.length * d * 2)
    runners = {
        "adamas": lambda: bench_adamas(case, sets),
        "sdpa": lambda: bench_sdpa(case, sets),
        "flashinfer-dense": lambda: bench_flashinfer_dense(case, sets),
        "flashinfer-sparse": lambda: bench_flashinfer_sparse(case, sets),
        "double-sparsity": lambda: bench_double_sparsity(case, sets, peers["double-sparsity"]),
        "adamas-authors": lambda: bench_authors(case, sets, peers["adamas-authors"]()),
    }
    records = []
    for system in args.systems:
        record = {"case": case_name(case), **asdict(case), "system": system}
        log_progress(args.progress, {"start": system})
        reason = skip_reason(system, case, peers)
        try:
            record |= {"skipped": reason} if reason else runners[system]()
        except Exception as error:  # one system failing must not cost the others their numbers
            record["error"] = error_text(error)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        records.append(record)
        log_progress(args.progress, {"record": record})
    sets.clear()
    torch.cuda.empty_cache()
    return records


def log_progress(path: Path | None, entry: dict) -> None:
    """One JSON line for the parent of a --child run: which system starts, and each record once it is done."""
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def add_speedups(records: list[dict]) -> None:
    """Each timed record's speedup over the fastest dense total of its case."""
    for name in dict.fromkeys(r["case"] for r in records):
        case = [r for r in records if r["case"] == name]
        best = dense_best(case)
        for r in case:
            if best and "total_us" in r:
                r["speedup"] = best / r["total_us"]


def run_isolated(args, authors_build: subprocess.Popen | None) -> Iterator[list[dict]]:
    """Each case's records, the case timed in a child process, so that a peer kernel's illegal address, which
    leaves the CUDA context unusable, costs only that system's record: the child is started again for the
    systems after it."""
    deadline = time.monotonic() + args.build_timeout
    native = [name for name in args.cases if skip_reason("adamas-authors", CASES[name], {}) is None]
    for name in [n for n in args.cases if n not in native] + native:  # theirs last: nvcc runs meanwhile
        systems, records = list(args.systems), []
        if authors_build is not None and name in native:
            try:  # their case's child loads the finished build instead of starting one of its own
                authors_build.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                authors_build.kill()
                error = f"their build took longer than --build-timeout {args.build_timeout:.0f} s"
                records.append({"case": name, **asdict(CASES[name]), "system": "adamas-authors", "error": error})
                systems = [s for s in systems if s != "adamas-authors"]
        while systems:
            with tempfile.TemporaryDirectory(prefix="bench_peers_") as tmp:
                out, progress = Path(tmp) / "case.json", Path(tmp) / "progress.jsonl"
                command = [sys.executable, "-m", "benchmarks.bench_peers", *child_args(args, name, systems)]
                child = subprocess.run(
                    [*command, "--out", str(out), "--progress", str(progress)], capture_output=True, text=True
                )
                if child.returncode == 0:
                    records += json.loads(out.read_text())["records"]
                    break
                lines = [json.loads(line) for line in progress.read_text().splitlines()] if progress.exists() else []
            print(child.stderr[-2000:], file=sys.stderr)
            done = [entry["record"] for entry in lines if "record" in entry]
            started = [entry["start"] for entry in lines if "start" in entry]
            records += done
            if len(started) == len(done):  # it failed outside any system's run: the rest are not timed
                records += [crashed(name, s, child.stderr) for s in systems[len(done) :]]
                break
            records.append(crashed(name, started[-1], child.stderr))
            systems = systems[systems.index(started[-1]) + 1 :]
        yield records


def run_in_process(args) -> Iterator[list[dict]]:
    """Each case's records, timed in this process (a case's child, or no GPU: every system skipped)."""
    peers = prepare_peers(args)
    for name in args.cases:
        if torch.cuda.is_available():
            yield bench_case(CASES[name], args, peers)
        else:
            yield [{"case": name, "system": s, "skipped": peers[s]} for s in args.systems]


def child_args(args, case: str, systems: list[str]) -> list[str]:
    """The command line of one case's child: this run's peers and build, those systems only."""
    argv = ["--child", "--cases", case, "--systems", *systems, "--build-timeout", str(args.build_timeout)]
    for flag, value in (("--sglang", args.sglang), ("--adamas-src", args.adamas_src), ("--build-dir", args.build_dir)):
        argv += [flag, str(value)] if value else []
    for include in args.include:
        argv += ["--include", str(include)]
    return argv


def crashed(case: str, system: str, stderr: str) -> dict:
    """The record of a system whose run ended its process."""
    tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
    return {"case": case, **asdict(CASES[case]), "system": system, "error": "crashed the process: " + " | ".join(tail)}


def case_name(case: Case) -> str:
    return next(name for name, c in CASES.items() if c == case)


def skip_reason(system: str, case: Case, peers: dict) -> str | None:
    """Why `system` does not run on `case`, or None."""
    if system == "quest":
        return QUEST_REASON
    if system == "adamas-authors" and (SHAPES[case.shape] != (32, 32, 128) or case.batch != 1):
        return "their kernels are MHA batch 1 only (estimate: batch_size = 1 constexpr; topk: CHECK_EQ(32, num_heads))"
    value = peers.get(system)
    return value if isinstance(value, str) else None


QUEST_REASON = (
    "not timed: Quest's kernels are not in the authors' build (their fork replaced Quest's page min/max "
    "estimate with the Hadamard one), and a build of mit-han-lab/Quest is not prepared"
)


def check_peers(args) -> dict[str, str | None]:
    """What each peer lacks on this machine (None: nothing), from paths and installed packages alone."""
    reasons: dict[str, str | None] = dict.fromkeys(SYSTEMS) | {"quest": QUEST_REASON}
    if importlib.util.find_spec("flashinfer") is None:
        reasons["flashinfer-dense"] = reasons["flashinfer-sparse"] = "flashinfer is not installed (flashinfer-python)"
    try:
        find_double_sparsity(args.sglang)
    except FileNotFoundError as error:
        reasons["double-sparsity"] = str(error)
    try:
        authors_include_dirs(args.adamas_src, args.include)
        if shutil.which("nvcc") is None:
            raise FileNotFoundError("nvcc not found on PATH: their kernels are built at bench time")
    except FileNotFoundError as error:
        reasons["adamas-authors"] = str(error)
    if not any(skip_reason("adamas-authors", CASES[name], {}) is None for name in args.cases):
        reasons["adamas-authors"] = "none of --cases is their native case (MHA 32/32/128, batch 1)"
    return {s: (reasons[s] if s in args.systems else "not requested (--systems)") for s in SYSTEMS}


def prepare_peers(args) -> dict[str, object]:
    """Each peer's loaded code (the authors': a call that waits for their build), or why it is skipped."""
    reasons = check_peers(args)
    if not torch.cuda.is_available():
        return {s: reasons[s] or "no CUDA GPU: nothing is timed" for s in SYSTEMS}
    peers: dict[str, object] = {s: r for s, r in reasons.items() if r}
    if "double-sparsity" not in peers:
        try:
            peers["double-sparsity"] = load_double_sparsity(find_double_sparsity(args.sglang))
        except Exception as error:  # a failing import: the reason is the result
            peers["double-sparsity"] = error_text(error)
    if "adamas-authors" not in peers:
        try:
            spec = authors_spec(
                args.adamas_src, args.include, args.build_dir or Path(tempfile.mkdtemp(prefix="authors_"))
            )
            build, deadline = start_authors_build(spec), time.monotonic() + args.build_timeout
            peers["adamas-authors"] = functools.cache(lambda: finish_authors_build(build, spec, deadline))
        except Exception as error:  # nothing to build: the reason is the result
            peers["adamas-authors"] = error_text(error)
    return peers


def start_parent_build(args, checks: dict) -> subprocess.Popen | None:
    """The authors' build, started before the first case so that nvcc runs while the other cases are timed."""
    if checks["adamas-authors"] != "found":
        return None
    try:
        return start_authors_build(authors_spec(args.adamas_src, args.include, args.build_dir))
    except Exception as error:  # their case's child meets the same failure and records it
        print(f"adamas-authors build not started: {error_text(error)}", file=sys.stderr)
        return None


def versions() -> dict:
    """Peers' versions beside the environment record's."""
    from adamas.environment import package_version

    return {name: package_version(name) for name in ("flashinfer-python", "apache-tvm-ffi", "sglang")}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    out = args.out or Path(__file__).parent / "results" / f"peers_{device_slug()}.json"
    isolate = torch.cuda.is_available() and not args.child
    if isolate and args.build_dir is None:
        args.build_dir = Path(tempfile.mkdtemp(prefix="authors_"))  # one build, shared by the children
    params = {
        "cases": {name: asdict(CASES[name]) for name in args.cases},
        "shapes": SHAPES,
        "systems": args.systems,
        "thresholds": "paper (-10, 0, 10)",
        "flashinfer_dense_page_size": FLASHINFER_PAGE,
        "double_sparsity": {"label_channels": DS_CHANNELS, "block_seq": DS_BLOCK_SEQ},
        "peer_paths_given": {
            "sglang": bool(args.sglang),
            "adamas_src": bool(args.adamas_src),
            "include": len(args.include),
        },
        "build_timeout_s": args.build_timeout,
        "peer_versions": versions(),
        "peer_checks": {s: r or "found" for s, r in check_peers(args).items()},
        "authors_build": {"sources": [*AUTHORS_SOURCES, "binding.cu (ours)"], "nvcc_flags": AUTHORS_FLAGS},
    }
    records = []
    cases = run_isolated(args, start_parent_build(args, params["peer_checks"])) if isolate else run_in_process(args)
    for case_records in cases:
        records += case_records
        write_results(out, params, records)  # after every case: a run cut short keeps what it measured
    add_speedups(records)
    for r in records:
        r["stages"] = "; ".join(f"{k} {v:.1f}" for k, v in r.get("stages_us", {}).items())
        r["status"] = "ok" if "total_us" in r else ("skipped" if "skipped" in r else "error")
    write_results(out, params, records)
    print_table(records, ["case", "system", "status", "total_us", "speedup", "timing", "stages"])
    for r in records:
        if r["status"] != "ok":
            print(f"{r['case']} {r['system']}: {r.get('skipped') or r.get('error')}")
    print(f"wrote {out.name} ({len(records)} records)")


if __name__ == "__main__":
    main()
