"""adamas.uploads: an upload is read once in a time-boxed child and deleted; run exports are bounded; the
process's folder is private."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adamas import uploads
from adamas.documents import DocumentError


def upload(name: str, text: str) -> Path:
    """A file where the web server puts uploads: a folder of its own in the private folder."""
    folder = uploads.private_folder() / f"upload-{time.monotonic_ns()}"
    folder.mkdir()
    path = folder / name
    path.write_text(text)
    return path


def test_the_private_folder_is_the_owners_alone():
    folder = uploads.private_folder()
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert uploads.private_folder() == folder  # one a process


def test_the_private_folder_goes_when_its_process_ends():
    script = "from adamas.uploads import private_folder; folder = private_folder(); (folder / 'x').write_text('x')"
    shown = subprocess.run([sys.executable, "-c", script + "; print(folder)"], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1], check=True)  # fmt: skip
    folder = Path(shown.stdout.strip())
    assert folder.name.startswith("adamas-studio-") and not folder.exists()


def test_an_upload_is_read_cut_and_deleted(tmp_path):
    path = upload("notes.txt", "The access code is 4417. " * 100)
    text, cut = uploads.read_upload(path, max_chars=100)
    assert text == ("The access code is 4417. " * 100)[:100] and cut == 2500 - 100 - 1  # clean_text strips the end
    assert not path.exists() and not path.parent.exists(), "the upload and its folder are gone once read"
    mine = tmp_path / "mine.txt"  # not an upload: the caller's own file stays
    mine.write_text("keep me")
    assert uploads.read_upload(mine, max_chars=10) == ("keep me", 0) and mine.exists()


def test_a_bad_upload_is_refused_readably_and_still_deleted():
    path = upload("blob.txt", "")
    path.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(DocumentError, match=r"blob\.txt looks like a binary file"):
        uploads.read_upload(path, max_chars=100)
    assert not path.exists()


def pdf_of_inflating_text(path, megabytes: int = 20):
    """One page whose compressed content stream inflates to `megabytes` MB of text operators."""
    pypdf = pytest.importorskip("pypdf")
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(612, 792)
    line = b"BT /F1 12 Tf 72 720 Td (Nothing worth reading is written on this line of text.) Tj ET\n"
    content = DecodedStreamObject()
    content.set_data(line * (megabytes * 2**20 // len(line)))
    page[NameObject("/Contents")] = writer._add_object(content.flate_encode())
    font = DictionaryObject({NameObject(k): NameObject(v) for k, v in
                             [("/Type", "/Font"), ("/Subtype", "/Type1"), ("/BaseFont", "/Helvetica")]})  # fmt: skip
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    with open(path, "wb") as f:
        writer.write(f)


@pytest.mark.parametrize(
    ("reader", "match"),
    [("import time; time.sleep(30)", "took longer than 1 s to read"),
     ("import sys; sys.exit(3)", r"its reader ended without an answer \(exit code 3\)")],
    ids=["too-slow", "reader-died"],
)  # fmt: skip
def test_reading_is_time_boxed_and_a_failed_reader_is_said(monkeypatch, reader, match):
    monkeypatch.setattr(uploads, "READER", (sys.executable, "-c", reader))
    path = upload("slow.pdf", "%PDF-1.4")
    with pytest.raises(DocumentError, match=match):
        uploads.read_upload(path, max_chars=100, timeout_s=1.0)
    assert not path.exists()


def test_a_pdf_that_inflates_to_a_huge_text_is_refused_in_time(tmp_path):
    pdf_of_inflating_text(tmp_path / "inflating.pdf")
    with pytest.raises(DocumentError, match=r"inflating\.pdf took longer than 1 s to read"):
        uploads.read_upload(tmp_path / "inflating.pdf", max_chars=100, timeout_s=1.0)


def test_exports_keep_the_newest_runs_only(tmp_path):
    exports = uploads.Exports(tmp_path / "runs", keep=2)
    written = [exports.write({"run.json": f"{i}", "report.html": "<p>"}) for i in range(4)]
    assert [p.read_text() for p, _ in written[2:]] == ["2", "3"]
    assert not written[0][0].exists() and not written[1][0].parent.exists()
    assert exports.folders() == [written[2][0].parent, written[3][0].parent]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="max_chars must be a positive int, got 0"):
        uploads.read_upload(tmp_path / "x.txt", max_chars=0)
    with pytest.raises(ValueError, match="timeout_s must be positive, got -1"):
        uploads.read_upload(tmp_path / "x.txt", max_chars=1, timeout_s=-1)
    with pytest.raises(ValueError, match="keep must be a positive int, got 0"):
        uploads.Exports(tmp_path, keep=0)
