"""What Adamas Studio keeps on disk, and for how long (docs/app.md says it for users).

- One private folder per process (mode 0700, under the system's temp folder), removed at exit:
  the web server stores uploads and the files it serves there, and the run exports live in it.
- An upload is read once, in a process of its own with a time limit, then deleted: only its text,
  cut to what the context can hold, stays, in memory.
- Run exports: the files of the newest `keep` runs; older ones are deleted as new ones come.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path

from adamas.documents import DocumentError, read_document

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # where `-m adamas.uploads` is found, installed or not

READ_TIMEOUT_S = 20.0
"""How long reading one upload may take: ample for any file of MAX_DOCUMENT_BYTES of plain text, HTML or a
PDF of ordinary pages, while a PDF whose compressed pages inflate to tens of MB of text takes far longer."""
READER = (sys.executable, "-m", "adamas.uploads")
"""The command that reads one file: this module as a script, in a process of its own (a fresh interpreter that
imports only adamas.documents, whatever threads the server runs)."""
KEPT_RUNS = 8
"""Run exports kept on disk; each run's download buttons point at its own files."""


@functools.cache
def private_folder() -> Path:
    """This process's private folder (created on first use, removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="adamas-studio-")).resolve()  # mkdtemp makes it 0700
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def read_upload(
    path: str | os.PathLike, max_chars: int, name: str | None = None, timeout_s: float = READ_TIMEOUT_S
) -> tuple[str, int]:
    """The text of the file at `path` cut to `max_chars`, and how many characters were cut off; then the file
    is deleted if it is an upload (it lies in private_folder()).

    The file is read by adamas.documents.read_document in a process of its own (READER), killed
    after `timeout_s`, so that neither a slow PDF nor the memory of parsing it stays with the server.
    Raises DocumentError with a message for the person who sent the file.
    """
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars must be a positive int, got {max_chars!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    label = Path(name or path).name
    command = [*READER, str(Path(path).resolve()), str(max_chars), label]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, cwd=_PACKAGE_ROOT, check=False)
    except subprocess.TimeoutExpired:
        raise DocumentError(
            f"{label} took longer than {timeout_s:.0f} s to read (a PDF that inflates to a very large text?): "
            "paste the part you need instead"
        ) from None
    finally:
        delete_upload(path)
    if done.returncode != 0 or not done.stdout:
        raise DocumentError(
            f"{label} could not be read: its reader ended without an answer (exit code {done.returncode})"
        )
    answer = json.loads(done.stdout)
    if "error" in answer:
        raise DocumentError(answer["error"])
    return answer["text"], answer["cut"]


def delete_upload(path: str | os.PathLike) -> bool:
    """Delete the file at `path` and its folder if left empty, when it lies in private_folder(); whether it did."""
    path = Path(path).resolve()
    if private_folder() not in path.parents:
        return False
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # a folder another upload still uses is not empty
        if path.parent != private_folder():
            path.parent.rmdir()
    return True


class Exports:
    """Run exports in folders under `root`, one a run; only the newest `keep` runs' folders are kept."""

    def __init__(self, root: Path, keep: int = KEPT_RUNS) -> None:
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive int, got {keep!r}")
        self.root, self.keep = Path(root), keep
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()  # runs finish on the server's worker threads

    def write(self, files: dict[str, str]) -> list[Path]:
        """Write `files` (name -> text) into a new folder; their paths, in order. The oldest run's folder goes."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        paths = []
        for name, text in files.items():
            paths.append(folder / name)
            paths[-1].write_text(text, encoding="utf-8")
        with self._lock:
            self._folders.append(folder)
            while len(self._folders) > self.keep:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return paths

    def folders(self) -> list[Path]:
        """The kept runs' folders, oldest first."""
        with self._lock:
            return list(self._folders)


def main(argv: list[str]) -> None:
    """The reader's side (READER PATH MAX_CHARS NAME): JSON on stdout, {"text", "cut"} or {"error"}."""
    path, max_chars, name = argv[0], int(argv[1]), argv[2]
    try:
        text = read_document(path, name)
        answer = {"text": text[:max_chars], "cut": max(0, len(text) - max_chars)}
    except DocumentError as err:
        answer = {"error": str(err)}
    except Exception as err:  # whatever a reader raises on a broken file, the server shows it as a message
        answer = {"error": f"{name} could not be read: {type(err).__name__}: {err}"}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main(sys.argv[1:])
