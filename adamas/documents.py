"""Documents for the prompt: an uploaded file or pasted text turned into plain text, and the chat that asks about it.

Plain text, Markdown and reStructuredText, source code and other text formats are read as
they are; HTML is reduced to its readable text; PDF goes through pypdf (imported on first
use). Every error message names the file and says what to do, as the app shows it verbatim.
`document_prompt` renders a question about a document through a tokenizer's chat template and
finds where the document's tokens sit in it (the app shades them by how often Adamas chose them).
"""

from __future__ import annotations

import bisect
import codecs
import io
import logging
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

from adamas.config import check_int

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

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


def document_messages(document: str, question: str) -> list[dict[str, str]]:
    """A chat asking `question` about `document`."""
    return [{"role": "user", "content": f"{document.strip()}\n\nAnswer using the text above.\nQuestion: {question}"}]


@dataclass
class DocumentPrompt:
    """A chat asking a question about a document, and where the document's tokens sit in its prompt."""

    messages: list[dict[str, str]]
    document: str  # the document as the prompt holds it: stripped, and cut short if it did not fit
    length: int  # tokens in the whole prompt
    start: int  # prompt position of the document's first token
    tokens: list[str]  # the text of each document token, in order
    offsets: list[tuple[int, int]]  # each document token's character span [start, end) in `document`
    dropped: int = 0  # document tokens cut off so that the prompt fits

    @property
    def end(self) -> int:
        """Prompt position one past the document's last token."""
        return self.start + len(self.tokens)

    def token_span(self, char_start: int, char_end: int) -> tuple[int, int]:
        """Document tokens [i, j) that cover the characters [char_start, char_end) of `document`."""
        if not 0 <= char_start < char_end:
            raise ValueError(f"need 0 <= char_start < char_end, got {char_start}, {char_end}")
        i = bisect.bisect_right([end for _, end in self.offsets], char_start)
        j = bisect.bisect_left([start for start, _ in self.offsets], char_end)
        return i, max(i, j)


def document_prompt(
    tokenizer: PreTrainedTokenizerBase, document: str, question: str, max_tokens: int | None = None
) -> DocumentPrompt:
    """The chat of document_messages(), tokenized as generation.prompt_ids() does, with the document's token span.

    With `max_tokens`, the document's end is cut (at a token boundary) until the whole prompt
    fits; `dropped` counts the document tokens lost. Needs a tokenizer with offset mapping (a
    fast tokenizer). ValueError for an empty document or question, or one that cannot fit.
    """
    for name, text in (("document", document), ("question", question)):
        if not isinstance(text, str):
            raise TypeError(f"the {name} must be text, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"the {name} is empty")
    if max_tokens is not None:
        check_int("max_tokens", max_tokens, 1)
    prompt = _locate_document(tokenizer, document.strip(), question)
    total = len(prompt.tokens)
    while max_tokens is not None and prompt.length > max_tokens:
        keep = len(prompt.tokens) - (prompt.length - max_tokens)
        if keep < 1:
            overhead = prompt.length - len(prompt.tokens)
            raise ValueError(
                f"the question and the chat template alone take {overhead} tokens; "
                f"only {max_tokens} fit, so no room is left for the document"
            )
        prompt = _locate_document(tokenizer, prompt.document[: prompt.offsets[keep - 1][1]].rstrip(), question)
    prompt.dropped = total - len(prompt.tokens)
    return prompt


def _locate_document(tokenizer: PreTrainedTokenizerBase, document: str, question: str) -> DocumentPrompt:
    """Render the chat, tokenize it with offsets and find the tokens that hold `document`."""
    messages = document_messages(document, question)
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    at = rendered.find(messages[0]["content"])  # the message opens with the document
    if at < 0:
        raise ValueError("the chat template altered the document's text, so its tokens cannot be placed")
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    spans = [(s, e) for s, e in encoded["offset_mapping"]]
    inside = [i for i, (s, e) in enumerate(spans) if s < at + len(document) and e > at]
    start, end = inside[0], inside[-1] + 1
    return DocumentPrompt(
        messages=messages,
        document=document,
        length=len(encoded["input_ids"]),
        start=start,
        tokens=[rendered[s:e] for s, e in spans[start:end]],
        offsets=[(max(s - at, 0), min(e - at, len(document))) for s, e in spans[start:end]],
    )


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
