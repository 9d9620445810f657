"""A bounded load test of the app: concurrent /compare clients, one of them sending a 20 MB upload.

    python -m benchmarks.load_app [--clients 8] [--requests 3] [--big-mb 20] [--new-tokens 12]
                                  [--out benchmarks/results/load_app_cpu.json]

Starts `app.py` (the default model) as its own process on 127.0.0.1, then runs `clients`
threads, each sending `requests` calls to `/compare` through gradio_client, each call with its
own document (generated filler) holding the client's own secret; the first client's first
call uploads a file of `big_mb` MB. Every answer is checked for other clients' secrets. It
records per-request latency, what was answered and what was refused (with the message), the
server's memory (its peak RSS, and the summed PSS of it and its reader processes, sampled), and
the memory left after the last run; prints a table, writes JSON, and stops the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("load_app")
ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is the access code? Answer with the code only."
FILLER = (
    "The survey crew walked the north ridge at dawn, noting each cairn, spring and fallen pine in the log. ",
    "Ledger entries list the grain sold at the autumn market, the price per sack and the buyer's village. ",
    "The lighthouse keeper trimmed the wick twice a night and wrote the wind and the passing ships down. ",
)
BUSY_WORDS = ("busy", "queue is full", "try again")


def secret(client: int) -> str:
    """Client `client`'s access code: distinct per client, none inside another, unlikely in any answer by chance."""
    return f"K{client:02d}Z{(client * 7919 + 1234) % 10000:04d}"


def document(client: int, request: int, chars: int) -> str:
    """About `chars` characters of filler with the client's secret near the start (a cut keeps the start)."""
    body = FILLER[(client + request) % len(FILLER)] * max(1, chars // len(FILLER[0]))
    return f"Note {request} of client {client}. The access code is {secret(client)}.\n\n{body[:chars]}"


def ask(url: str, client: int, request: int, doc_chars: int, big: Path | None, budget: int, new_tokens: int) -> dict:
    """One /compare call as an API client makes it: timed, answered or refused, checked for other secrets."""
    import gradio_client

    record = {"client": client, "request": request, "upload_mb": round(big.stat().st_size / 1e6, 1) if big else 0}
    start = time.perf_counter()
    try:
        call = gradio_client.Client(url, verbose=False)
        kwargs = {"question": QUESTION, "budget": budget, "max_new_tokens": new_tokens, "api_name": "/compare"}
        if big is not None:
            result = call.predict(document_file=gradio_client.handle_file(str(big)), **kwargs)
        else:
            result = call.predict(document_text=document(client, request, doc_chars), **kwargs)
        answers = [result["adamas_answer"], result["full_answer"]]
        record |= {"outcome": "answered", "answers": answers, "context_tokens": result["context_tokens"]}
        record["own_secret_found"] = any(secret(client) in a for a in answers)
    except Exception as err:  # a refusal reaches gradio_client as an exception carrying the app's message
        message = str(err)
        busy = any(word in message.lower() for word in BUSY_WORDS)
        record |= {"outcome": "refused (busy)" if busy else "failed", "message": message, "answers": []}
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def crosstalk(records: list[dict], clients: int) -> list[dict]:
    """Answers that carry another client's secret."""
    found = []
    for r in records:
        for other in range(clients):
            if other != r["client"] and any(secret(other) in a for a in r["answers"]):
                found.append({"client": r["client"], "request": r["request"], "secret_of": other})
    return found


def memory(pid: int) -> dict[str, float]:
    """The server's peak and current RSS, and the summed PSS of it and its children (GiB), from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    pids = [pid, *_children(pid)]
    pss = sum(_pss_kb(p) for p in pids)
    gib = 2**20
    return {
        "peak_rss": int(status["VmHWM"].split()[0]) / gib,
        "rss": int(status["VmRSS"].split()[0]) / gib,
        "pss_tree": pss / gib,
    }


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _pss_kb(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # a reader that just ended
        return 0
    return next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))


def run_load(
    url: str,
    clients: int,
    requests: int,
    doc_chars: int,
    big: Path | None,
    budget: int,
    new_tokens: int,
    sample: Callable[[], dict] | None = None,
    deadline_s: float = 3600.0,
    on_deadline: Callable[[], None] | None = None,
) -> dict:
    """Run the clients against `url`; their records, the cross-talk found and the largest memory samples.

    Past `deadline_s`, `on_deadline` runs (stopping the server ends every call still open) and the load ends.
    """
    records: list[dict] = []
    lock, done = threading.Lock(), threading.Event()
    peaks: dict[str, float] = {}

    def client(i: int) -> None:
        for j in range(requests):
            record = ask(url, i, j, doc_chars, big if (i, j) == (0, 0) else None, budget, new_tokens)
            with lock:
                records.append(record)
            logger.info("client %d request %d: %s in %.1f s", i, j, record["outcome"], record["seconds"])

    def watch() -> None:
        while not done.wait(0.25):
            for key, value in sample().items():
                peaks[key] = max(peaks.get(key, 0.0), value)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    watcher = threading.Thread(target=watch) if sample else None
    for thread in [*threads, *([watcher] if watcher else [])]:
        thread.start()
    end = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    if any(thread.is_alive() for thread in threads) and on_deadline is not None:
        logger.warning("past the %.0f s deadline: stopping the server", deadline_s)
        on_deadline()
        for thread in threads:
            thread.join()
    done.set()
    if watcher:
        watcher.join()
    return {"records": sorted(records, key=lambda r: (r["client"], r["request"])),
            "crosstalk": crosstalk(records, clients), "peaks": peaks}  # fmt: skip


def serve(port: int, log: Path, timeout_s: float = 600.0) -> subprocess.Popen:
    """app.py on 127.0.0.1:`port` in its own process (its output into `log`), once its page answers."""
    import urllib.request

    command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode} before serving")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return server
        except OSError:
            time.sleep(1.0)
    server.kill()
    raise TimeoutError(f"the app did not serve within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """Serve the app, load it, check the answers, write the JSON, stop the server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=3, help="calls per client, one after another")
    parser.add_argument("--doc-chars", type=int, default=6000, help="characters of each generated document")
    parser.add_argument("--big-mb", type=float, default=20.0, help="the upload's size in MB of 10^6 bytes (0: none)")
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds after which the load is stopped")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load_app_cpu.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request sent, not per HTTP call
    from adamas.environment import environment, package_version

    big = None
    if args.big_mb > 0:
        big = Path(tempfile.gettempdir()) / f"adamas-load-{os.getpid()}.txt"
        big.write_text(document(0, 0, int(args.big_mb * 1e6) - 100))  # the app takes up to 20 MiB
    log = Path(tempfile.gettempdir()) / f"adamas-load-{os.getpid()}.log"
    server = serve(args.port, log)
    try:
        idle = memory(server.pid)
        start = time.perf_counter()
        url = f"http://127.0.0.1:{args.port}/"
        load = run_load(url, args.clients, args.requests, args.doc_chars, big, args.budget, args.new_tokens,
                        lambda: memory(server.pid), args.deadline, server.kill)  # fmt: skip
        seconds = time.perf_counter() - start
        time.sleep(2.0)  # the last run's memory is returned as it ends
        after = memory(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
        if big is not None:
            big.unlink(missing_ok=True)
    kept = re.search(r"Files kept in (\S+)", log.read_text())
    folder = Path(kept[1]) if kept else None
    log.unlink()
    records = load["records"]
    outcomes = {o: sum(r["outcome"] == o for r in records) for o in ("answered", "refused (busy)", "failed")}
    payload = {
        "environment": environment() | {"gradio": package_version("gradio"), "model": "SmolLM2-135M-Instruct"},
        "parameters": vars(args) | {"out": args.out.name},
        "seconds": round(seconds, 1),
        "outcomes": outcomes,
        "crosstalk": load["crosstalk"],
        "private_folder_removed_at_exit": folder is not None and not folder.exists(),
        "files_left_after_exit": sorted(p.name for p in folder.rglob("*")) if folder and folder.exists() else [],
        "memory_gib": {
            "idle_rss": round(idle["rss"], 3),
            "peak_rss": round(after["peak_rss"], 3),
            "peak_pss_with_readers_sampled": round(load["peaks"].get("pss_tree", 0.0), 3),
            "rss_after": round(after["rss"], 3),
        },
        "latency_s": sorted(r["seconds"] for r in records),
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    for r in records:
        print(f"client {r['client']} request {r['request']}: {r['outcome']:<15} {r['seconds']:7.1f} s")
    shown = ("seconds", "outcomes", "crosstalk", "memory_gib", "private_folder_removed_at_exit")
    print(json.dumps({k: payload[k] for k in shown}, indent=1))


if __name__ == "__main__":
    main()
