"""Documents for the prompt: an uploaded file or pasted text turned into plain text, or a DocumentError.

Plain text, Markdown and reStructuredText, source code and other text formats are read as
they are; HTML is reduced to its readable text; PDF goes through pypdf (imported on first
use). Every error message names the file and says what to do, as the app shows it verbatim.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
import re
from html.parser import HTMLParser
from pathlib import Path

# The longest context the app offers is 128K tokens, about 0.5 MB of English text; a PDF
# carrying that much text with fonts and figures runs to a few MB. 20 MB leaves room for
# long, illustrated PDFs while bounding the memory and time spent parsing an upload whose
# text would be rejected for its length anyway.
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024

TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".csv", ".tsv", ".log", ".tex")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
PDF_SUFFIXES = (".pdf",)
CODE_SUFFIXES = (
    ".py", ".pyi", ".c", ".h", ".cpp", ".hpp", ".cc", ".hh", ".cxx", ".cu", ".cuh", ".java", ".kt", ".scala",
    ".js", ".mjs", ".jsx", ".ts", ".tsx", ".go", ".rs", ".rb", ".php", ".pl", ".lua", ".r", ".jl", ".swift",
    ".cs", ".sh", ".bash", ".zsh", ".ps1", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".xml",
    ".css", ".scss", ".sql", ".proto", ".cmake", ".mk",
)  # fmt: skip
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES + CODE_SUFFIXES
"""What read_document accepts (also files with no suffix, such as README or LICENSE, read as text)."""

# Text that decodes as neither UTF-8 nor UTF-16 (with its byte-order mark) is taken as
# Windows-1252, the usual "ANSI" encoding of older text files, but only when at most this
# share of its characters are control characters: binary data decodes as cp1252 too, and
# then it is full of them.
_MAX_CONTROL_SHARE = 0.01
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")  # C0 and C1 controls but \t \n \f \r
_SKIPPED_TAGS = {"script", "style", "noscript", "template", "svg"}
_LINE_TAGS = {"li", "tr", "dt", "dd", "option"}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "caption", "details", "div", "dl", "fieldset", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main", "nav", "ol", "p",
    "pre", "section", "summary", "table", "title", "ul",
}  # fmt: skip
_SUPPORTED_KINDS = (
    ", ".join(
        f"{kind} ({' '.join(suffixes)})"
        for kind, suffixes in [("text", TEXT_SUFFIXES), ("HTML", HTML_SUFFIXES), ("PDF", PDF_SUFFIXES)]
    )
    + f" or source code ({' '.join(CODE_SUFFIXES)})"
)
_LINE_BREAKS = str.maketrans({"\r": "\n", "\f": "\n", "\v": "\n", "\u2028": "\n", "\u2029": "\n\n", "\x85": "\n"})


class DocumentError(ValueError):
    """A document that cannot be used, with a message for the person who supplied it."""


def read_document(path: str | os.PathLike, name: str | None = None) -> str:
    """The plain text of the file at `path`; `name` is its original filename when `path` is a temporary copy.

    The suffix of `name` (else of `path`) picks the reader. Raises DocumentError, naming
    the file, when it is missing, empty, too large, of an unsupported type, binary, or a
    PDF that is encrypted, corrupt or has no text layer.
    """
    path = Path(path)
    label = Path(name).name if name else path.name
    suffix = Path(label).suffix.lower()
    if suffix and suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(f"{label}: {suffix} files are not supported; use {_SUPPORTED_KINDS}")
    data = _read_bytes(path, label)
    if suffix in PDF_SUFFIXES:
        text = _pdf_text(data, label)
    else:
        text = _decode(data, label)
        if suffix in HTML_SUFFIXES:
            text = html_to_text(text)
    return clean_text(text, label)


def clean_text(text: str, name: str = "the pasted text") -> str:
    """`text` with newlines normalized, control characters removed, trailing spaces and extra blank lines cut.

    Keeps tabs and up to two blank lines in a row (the spacing of source code); form feeds
    become line breaks. Raises DocumentError naming `name` when nothing but whitespace is left.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = text.replace("\r\n", "\n").translate(_LINE_BREAKS)
    text = _CONTROL.sub("", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    text = re.sub(r"\A\n+", "", text).rstrip()
    if not text.strip():
        raise DocumentError(f"{name} is empty: it holds no text, only whitespace")
    return text


def html_to_text(html: str) -> str:
    """The readable text of an HTML page: scripts and styles dropped, entities unescaped, one paragraph a block."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _read_bytes(path: Path, label: str) -> bytes:
    """The file's bytes, after the checks that need no reading: it exists, is a file, is not too large."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise DocumentError(f"{label} is not a file")
        if size > MAX_DOCUMENT_BYTES:
            raise DocumentError(
                f"{label} is {_format_size(size)}, over the limit of {_format_size(MAX_DOCUMENT_BYTES)}: "
                "upload a shorter document or an extract of it"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"{label}: file not found") from None
    except OSError as err:
        raise DocumentError(f"{label} cannot be read: {err.strerror or err}") from None
    if not data.strip():
        raise DocumentError(f"{label} is empty: it holds no text, only whitespace")
    return data


def _decode(data: bytes, label: str) -> str:
    """Bytes as text: UTF-8 (a BOM allowed), UTF-16 with a BOM, else Windows-1252 when it looks like text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    binary = DocumentError(f"{label} looks like a binary file, not text: save it as plain text (UTF-8) or PDF")
    if b"\x00" in data:
        raise binary
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise binary from None
    if len(_CONTROL.findall(text)) > _MAX_CONTROL_SHARE * len(text):
        raise binary
    return text


def _pdf_text(data: bytes, label: str) -> str:
    """The text layer of a PDF, page by page, a blank line between pages."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import DependencyError, FileNotDecryptedError
    except ImportError:
        raise DocumentError(f"{label}: reading PDF files needs the pypdf package (pip install pypdf)") from None
    # pypdf logs each defect it works around; the DocumentError below says what matters.
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        pages = [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]
    except FileNotDecryptedError:
        raise DocumentError(f"{label} is password-protected: save an unencrypted copy and upload that") from None
    except DependencyError as err:
        raise DocumentError(f"{label} cannot be read without an optional package: {err}") from None
    except Exception as err:  # pypdf raises many types (ValueError, KeyError, struct.error, ...) on broken files
        raise DocumentError(f"{label} is not a readable PDF (damaged or not a PDF: {_first_line(err)})") from None
    finally:
        logger.setLevel(level)
    if not any(page.strip() for page in pages):
        raise DocumentError(
            f"{label} has no text layer (a scanned PDF?): run it through OCR, or paste its text instead"
        )
    return "\n\n".join(pages)


class _HtmlText(HTMLParser):
    """Collects the text of an HTML page into `parts`, with line and paragraph breaks where blocks end."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0  # depth inside <script>, <style> and the like
        self._pre = 0  # depth inside <pre>, where whitespace is kept

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag == "br":
            self._strip_trailing_spaces()
            self.parts.append("\n")
        elif tag in _LINE_TAGS:
            self._break(1)
            if tag == "li":
                self.parts.append("- ")
        elif tag in _BLOCK_TAGS:
            self._break(2)
            self._pre += tag == "pre"
        elif tag in ("td", "th") and self.parts and not self.parts[-1].endswith(("\n", "- ")):
            self.parts.append("\t")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self._pre = max(0, self._pre - (tag == "pre"))
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag not in _SKIPPED_TAGS:  # a self-closed <svg/> opens nothing to skip
            self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._pre:
            if data.startswith("\n") and self.parts and self.parts[-1].endswith("\n"):
                data = data[1:]  # the line break right after <pre> is not content
        else:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith(("\n", " ")):
                data = data.lstrip(" ")
        if data:
            self.parts.append(data)

    def _break(self, newlines: int) -> None:
        """End the current line, and leave a blank line after it when `newlines` is 2."""
        self._strip_trailing_spaces()
        if not self.parts:
            return
        tail = "".join(self.parts[-2:])
        have = len(tail) - len(tail.rstrip("\n"))
        if have < newlines:
            self.parts.append("\n" * (newlines - have))

    def _strip_trailing_spaces(self) -> None:
        while self.parts and not self._pre and self.parts[-1].endswith((" ", "\t")):
            self.parts[-1] = self.parts[-1].rstrip(" \t")
            if not self.parts[-1]:
                self.parts.pop()


def _format_size(n_bytes: int) -> str:
    """A size for people: 512 bytes, 3.4 KB, 21.0 MB."""
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    if n_bytes < 1024 * 1024:
        return f"{n_bytes / 1024:.1f} KB"
    return f"{n_bytes / (1024 * 1024):.1f} MB"


def _first_line(err: Exception) -> str:
    """The exception's first line of text, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
