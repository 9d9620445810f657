"""bench_peers on a CPU: arguments, the peers' skip reasons, loading a file by path with sglang's stand-ins.

No timing is asserted (no GPU here); the peers' own code is never needed: stand-in files take its place.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

bench_peers = pytest.importorskip("benchmarks.bench_peers")


def test_defaults_cover_every_case_and_system():
    args = bench_peers.parse_args([])
    assert args.cases == list(bench_peers.CASES)
    assert args.systems == list(bench_peers.SYSTEMS)
    assert args.include == [] and args.sglang is None and args.adamas_src is None


def test_budgets_and_shapes_of_the_cases():
    cases = bench_peers.CASES
    assert {c.budget for name, c in cases.items() if name.startswith("llama3")} == {128}
    assert cases["mha-7b-32k-paper"] == bench_peers.Case("mha-7b", 32768, 1, 256)


def test_missing_peers_are_skipped_with_the_reason(tmp_path):
    args = bench_peers.parse_args(["--sglang", str(tmp_path), "--adamas-src", str(tmp_path)])
    reasons = bench_peers.check_peers(args)
    assert "double_sparsity_attention.py not found" in reasons["double-sparsity"]
    assert "lacks their sources" in reasons["adamas-authors"]
    assert "Quest" in reasons["quest"]
    assert reasons["adamas"] is None and reasons["sdpa"] is None


def test_authors_headers_missing_are_named(tmp_path):
    csrc = tmp_path / "adamas" / "ops" / "csrc"
    csrc.mkdir(parents=True)
    for name in ("bsk_ops.h", "pytorch_extension_utils.h", *bench_peers.AUTHORS_SOURCES):
        (csrc / name).write_text("")
    decode = tmp_path / "kernels" / "include" / "decode"
    decode.mkdir(parents=True)
    (decode / "decode_handler.cuh").write_text("")
    with pytest.raises(FileNotFoundError, match=r"raft 24\.02"):
        bench_peers.authors_include_dirs(tmp_path, [])


def test_authors_only_on_their_native_case():
    reason = bench_peers.skip_reason("adamas-authors", bench_peers.CASES["llama3-8b-32k"], {})
    assert "MHA batch 1" in reason
    assert bench_peers.skip_reason("adamas-authors", bench_peers.CASES["mha-7b-32k-paper"], {}) is None


def test_double_sparsity_file_loads_alone_with_stand_ins(tmp_path):
    stand_in = tmp_path / "double_sparsity_attention.py"  # the real file's two sglang imports, nothing more
    stand_in.write_text(
        "from sglang.srt.server_args import get_global_server_args\n"
        "from sglang.srt.utils import is_cuda, is_hip\n"
        "REDUCE_FP32 = get_global_server_args().triton_attention_reduce_in_fp32\n"
        "HIP = is_hip()\n"
    )
    module = bench_peers.load_double_sparsity(bench_peers.find_double_sparsity(tmp_path))
    assert module.REDUCE_FP32 is False and module.HIP is False
    assert "sglang.srt.utils" not in sys.modules  # the stand-ins are gone once the file has run


@pytest.mark.skipif(bench_peers.torch.cuda.is_available(), reason="the CPU path: every system skipped")
def test_cpu_run_writes_skips(tmp_path):
    out = tmp_path / "peers.json"
    bench_peers.main(["--cases", "mha-7b-32k-paper", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert {r["status"] for r in payload["records"]} == {"skipped"}
    assert payload["parameters"]["cases"]["mha-7b-32k-paper"]["budget"] == 256
    assert "no CUDA GPU" in next(r["skipped"] for r in payload["records"] if r["system"] == "adamas")


def test_a_system_that_crashes_its_process_costs_only_its_record(monkeypatch, tmp_path):
    """A peer's illegal address ends the child: the parent records it and runs the systems after it anew."""
    calls = []

    def fake_run(command, **kwargs):
        systems = command[command.index("--systems") + 1 : command.index("--build-timeout")]
        progress = Path(command[command.index("--progress") + 1])
        calls.append(systems)
        done = []
        with progress.open("a") as f:
            for system in systems:
                f.write(json.dumps({"start": system}) + "\n")
                if system == "flashinfer-sparse":
                    return subprocess.CompletedProcess(command, -6, "", "CUDA error: an illegal memory access")
                done.append({"case": "llama3-8b-32k", "system": system, "total_us": 1.0})
                f.write(json.dumps({"record": done[-1]}) + "\n")
        Path(command[command.index("--out") + 1]).write_text(json.dumps({"records": done}))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bench_peers.subprocess, "run", fake_run)
    args = bench_peers.parse_args(["--cases", "llama3-8b-32k", "--systems", "adamas", "flashinfer-sparse", "sdpa"])
    records = [r for case in bench_peers.run_isolated(args, None) for r in case]
    assert calls == [["adamas", "flashinfer-sparse", "sdpa"], ["sdpa"]]
    assert [r["system"] for r in records] == ["adamas", "flashinfer-sparse", "sdpa"]
    assert "illegal memory access" in records[1]["error"] and "total_us" not in records[1]
    assert records[2]["total_us"] == 1.0
