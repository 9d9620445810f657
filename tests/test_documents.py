"""Documents to plain text: every accepted format, HTML reduction, each error path, the bundled examples."""

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("pypdf", reason="the app's packages are not installed (e.g. on the GPU image)")

from adamas import documents
from adamas.documents import DocumentError, clean_text, html_to_text, read_document
from adamas.generation import prompt_ids

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
QUESTION = "What colour is the sky on a clear day?"


def _pdf(*page_texts: str) -> bytes:
    """A minimal PDF, written by hand: one page per text (an empty text gives a page with no text at all)."""
    pages = len(page_texts)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(page_texts):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _encrypted_pdf() -> bytes:
    """A one-page PDF that needs a password to open (RC4, which pypdf writes without extra packages)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    "name",
    ["notes.txt", "README.md", "guide.rst", "script.py", "main.c", "lib.rs", "config.yaml", "data.json", "LICENSE"],
)
def test_text_and_source_files_read_as_they_are(tmp_path, name):
    text = 'def f(x):\n\treturn {"answer": 42}  # café\n\n\nprint(f(1))'
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert read_document(path) == text


def test_suffix_is_case_insensitive_and_name_overrides_the_path(tmp_path):
    upload = tmp_path / "tmp3f9a2"  # a temporary copy under a name of its own
    upload.write_text("<p>Hello &amp; welcome</p>")
    assert read_document(upload, name="Page.HTML") == "Hello & welcome"
    assert read_document(upload) == "<p>Hello &amp; welcome</p>"


def test_pdf_text_layer_is_extracted_page_by_page(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(_pdf("The vault code is 4417.", "Second page here."))
    text = read_document(path)
    assert "The vault code is 4417." in text
    assert text.index("4417") < text.index("Second page here.")


def test_html_is_reduced_to_readable_text():
    html = """<!doctype html><html><head><title>Report</title>
    <style>p { color: red; }</style><script>var secret = "<p>hidden</p>";</script></head>
    <body><h1>Results &amp; notes</h1><p>Fish &lt;3 water,
       caf&eacute; &#8212; ok.</p><!-- a comment -->
    <ul><li>first</li><li>second</li></ul>
    <p>line one<br>line two</p><pre>
def f():
    return 1</pre><table><tr><td>a</td><td>b</td></tr></table><noscript>enable js</noscript></body></html>"""
    text = clean_text(html_to_text(html))
    assert text == (
        "Report\n\nResults & notes\n\nFish <3 water, café — ok.\n\n- first\n- second\n\n"
        "line one\nline two\n\ndef f():\n    return 1\n\na\tb"
    )


def test_encodings_utf8_bom_utf16_and_windows_1252(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_bytes("\ufeffnaïve café".encode())
    assert read_document(path) == "naïve café"
    path.write_bytes("naïve café".encode("utf-16"))
    assert read_document(path) == "naïve café"
    path.write_bytes("naïve café – “quoted”".encode("cp1252"))
    assert read_document(path) == "naïve café – “quoted”"


def test_clean_text_normalizes_pasted_text():
    raw = "\n\n  Title\r\n\r\nbody\x00 with\x07 bell\t tab  \rold mac\fpage\n\n\n\n\n\nend \x1b[0m  \n\n"
    assert clean_text(raw) == "  Title\n\nbody with bell\t tab\nold mac\npage\n\n\nend [0m"


@pytest.mark.parametrize("text", ["", "   \n\t\r\n", "\x00\x00"], ids=["empty", "whitespace", "only-nul"])
def test_clean_text_rejects_text_with_nothing_in_it(text):
    with pytest.raises(DocumentError, match="the pasted text is empty"):
        clean_text(text)


def test_clean_text_wants_a_str():
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        clean_text(b"hello")


ERRORS = {
    "empty": ("empty.txt", b"", "empty.txt is empty"),
    "whitespace-only": ("blank.md", b" \n\t\r\n  ", "blank.md is empty"),
    "missing": ("absent.txt", None, "absent.txt: file not found"),
    "unsupported-suffix": (
        "letter.docx",
        b"PK\x03\x04",
        r"\.docx files are not supported; use text \(.txt .*\), PDF \(.pdf\) or source code \(.py",
    ),
    "nul-bytes": ("data.txt", b"text\x00\x01\x02more", "data.txt looks like a binary file"),
    "invalid-utf8": ("image.py", bytes(range(1, 256)) * 4, "image.py looks like a binary file"),
    "control-chars": ("dump.log", b"\x01\x02\x03abc\xe9" * 50, "dump.log looks like a binary file"),
    "garbage-pdf": ("paper.pdf", b"this is not a PDF at all, just words\n" * 4, "paper.pdf is not a readable PDF"),
    "truncated-pdf": ("cut.pdf", _pdf("Some text")[:90], "cut.pdf is not a readable PDF"),
    "scanned-pdf": ("scan.pdf", _pdf("", ""), r"scan.pdf has no text layer \(a scanned PDF\?\)"),
    "encrypted-pdf": ("locked.pdf", _encrypted_pdf(), "locked.pdf is password-protected"),
}


@pytest.mark.parametrize("name, content, message", ERRORS.values(), ids=ERRORS.keys())
def test_unusable_files_raise_a_document_error_naming_them(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DocumentError, match=message) as info:
        read_document(path)
    assert "\n" not in str(info.value)  # shown as one line in the app and the CLI


def test_a_directory_is_not_a_document(tmp_path):
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(DocumentError, match=r"folder\.txt is not a file"):
        read_document(tmp_path / "folder.txt")


def test_size_limit_names_the_size_and_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 2048)
    path = tmp_path / "long.txt"
    path.write_text("x" * 2048)
    assert read_document(path) == "x" * 2048
    path.write_text("x" * 3000)
    with pytest.raises(DocumentError, match=r"long.txt is 2.9 KB, over the limit of 2.0 KB"):
        read_document(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("absent.txt", None, "adamas: absent.txt: file not found"),
        ("slides.pptx", b"PK", "adamas: slides.pptx: .pptx files are not supported"),
        ("scan.pdf", _pdf(""), "adamas: scan.pdf has no text layer"),
        ("paper.pdf", b"not a PDF\n" * 10, "adamas: paper.pdf is not a readable PDF"),
    ],
    ids=["missing", "unsupported", "no-text-layer", "garbage-pdf"],
)
def test_cli_prints_a_document_error_on_one_line(tmp_path, capsys, monkeypatch, name, content, message):
    from adamas import __main__ as cli

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for an unusable document")

    monkeypatch.setattr("adamas.loading.load_model", no_model)
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["generate", "--doc", str(path), "--question", "What?"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def _examples() -> list[dict[str, str]]:
    return json.loads((EXAMPLES / "examples.json").read_text(encoding="utf-8"))


def test_examples_are_described_in_full():
    examples = _examples()
    fields = {"name", "file", "question", "answer", "evidence", "source", "licence"}
    assert len(examples) >= 3
    for example in examples:
        assert set(example) == fields, example.get("name")
        assert all(isinstance(value, str) and value.strip() for value in example.values()), example["name"]
    assert len({example["file"] for example in examples}) == len(examples)


@pytest.mark.parametrize("example", _examples(), ids=lambda example: example["file"])
def test_example_reads_and_holds_its_answer_verbatim(example):
    text = read_document(EXAMPLES / example["file"])
    assert example["evidence"] in text
    assert example["answer"].lower() in example["evidence"].lower()


@pytest.mark.parametrize("example", _examples(), ids=lambda example: example["file"])
def test_example_fits_the_models_context_with_room_for_the_answer(default_model, example):
    from adamas.loading import max_context

    model, tokenizer = default_model
    text = read_document(EXAMPLES / example["file"])
    n_prompt = prompt_ids(tokenizer, documents.document_messages(text, example["question"])).shape[-1]
    assert 2000 <= n_prompt <= max_context(model) - 256, n_prompt


def test_document_prompt_places_the_documents_tokens(default_model):
    _, tokenizer = default_model
    document = "  Alpha beta gamma. The launch code is 4417.\nDelta epsilon zeta.  "
    prompt = documents.document_prompt(tokenizer, document, QUESTION)
    assert prompt.document == document.strip() and prompt.dropped == 0
    ids = prompt_ids(tokenizer, prompt.messages)[0].tolist()
    assert prompt.length == len(ids)
    assert "".join(prompt.tokens) == prompt.document
    assert tokenizer.decode(ids[prompt.start : prompt.end]) == prompt.document
    assert [prompt.document[s:e] for s, e in prompt.offsets] == prompt.tokens
    at = prompt.document.index("The launch code")
    i, j = prompt.token_span(at, at + len("The launch code is 4417."))
    assert "".join(prompt.tokens[i:j]).strip() == "The launch code is 4417."


def test_document_prompt_cuts_a_document_that_does_not_fit(default_model):
    _, tokenizer = default_model
    document = " ".join(f"word{i}" for i in range(400))
    whole = documents.document_prompt(tokenizer, document, QUESTION)
    cut = documents.document_prompt(tokenizer, document, QUESTION, max_tokens=whole.length - 100)
    assert whole.length - 100 - 3 <= cut.length <= whole.length - 100
    assert cut.dropped == len(whole.tokens) - len(cut.tokens) >= 100
    assert document.startswith(cut.document) and "".join(cut.tokens) == cut.document
    assert cut.length == prompt_ids(tokenizer, cut.messages).shape[-1]


@pytest.mark.parametrize(
    ("document", "question", "max_tokens", "match"),
    [
        (" \n\t", QUESTION, None, "document is empty"),
        ("Text.", "  ", None, "question is empty"),
        ("Text.", QUESTION, 20, "no room is left for the document"),
    ],
    ids=["blank-document", "blank-question", "no-room"],
)
def test_document_prompt_refuses_what_cannot_be_asked(default_model, document, question, max_tokens, match):
    with pytest.raises(ValueError, match=match):
        documents.document_prompt(default_model[1], document, question, max_tokens)
