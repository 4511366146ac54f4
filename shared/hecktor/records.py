"""Reading the clinical record of a Grand-Challenge case (``ehr.json``): whatever its text encoding, into a JSON
object, or one :class:`~hecktor.errors.InputError` line.

Values are not checked here: :func:`hecktor.clinical.sanitize_ehr` does that (and :func:`hecktor.case.read_case`
calls both).
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

from hecktor.errors import InputError

__all__ = ["decode_json_bytes", "read_ehr"]

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),  # before UTF-16: its byte-order mark starts with UTF-16's
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 with a byte-order mark"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def decode_json_bytes(data: bytes) -> tuple[str, str | None]:
    """The text of a JSON file and, when it was not plain UTF-8, the encoding it was decoded from.

    Tries, in order: a byte-order mark (UTF-8, UTF-16, UTF-32), UTF-16/32 without a mark (recognised by the zero
    bytes of ASCII text, RFC 4627), UTF-8, then Latin-1 (which decodes any bytes). Raises UnicodeDecodeError only when
    a byte-order mark lies about the rest.
    """
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            return data.decode(codec), name
    # JSON text never holds a zero byte, but UTF-16/32 text of ASCII characters does (NUL is valid UTF-8, so this
    # comes first)
    head = data[:4]
    codec = None
    if len(head) == 4:
        if head[:3] == b"\x00\x00\x00":
            codec, name = "utf-32-be", "UTF-32 (big-endian, no byte-order mark)"
        elif head[1:] == b"\x00\x00\x00":
            codec, name = "utf-32-le", "UTF-32 (little-endian, no byte-order mark)"
        elif head[0] == 0:
            codec, name = "utf-16-be", "UTF-16 (big-endian, no byte-order mark)"
        elif head[1] == 0:
            codec, name = "utf-16-le", "UTF-16 (little-endian, no byte-order mark)"
    if codec is not None:
        try:
            return data.decode(codec), name
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    return data.decode("latin-1"), "Latin-1"


def without_trailing_commas(text: str) -> tuple[str, int]:
    """``text`` without the commas that stand just before a ``}`` or ``]`` (white space between), outside strings,
    and how many were removed. Python's ``json`` has no lenient mode; a comma inside a string is kept."""
    out, removed, in_string, escaped = [], 0, False, False
    pending: int | None = None  # index in ``out`` of a comma that may be trailing
    for char in text:
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char in "}]" and pending is not None:
            del out[pending]
            removed += 1
        if not char.isspace():
            pending = None
        if char == '"':
            in_string = True
        elif char == ",":
            pending = len(out)
        out.append(char)
    return "".join(out), removed


def read_ehr(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Parse ``ehr.json`` into a dict, and one warning per oddity that was got past (an encoding other than UTF-8,
    trailing commas as in the organisers' sample record: :func:`without_trailing_commas`).

    A missing or unreadable file, text that is not JSON (including JSON nested too deeply to parse, and integers of
    thousands of digits) and JSON that is not an object (a list, a number, ``null``) are an :class:`InputError`.
    Values are not checked here: see :func:`hecktor.clinical.sanitize_ehr`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clinical record not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    warnings: list[str] = []
    try:
        text, encoding = decode_json_bytes(data)
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None
    if encoding is not None:
        warnings.append(f"{path.name} is {encoding} text, not UTF-8: decoded as such")
    try:
        record = json.loads(text)
    except RecursionError:
        raise InputError(f"{path} is not valid JSON: nested too deeply to parse") from None
    except ValueError as error:  # JSONDecodeError, and integers longer than Python converts
        relaxed, commas = without_trailing_commas(text)
        try:
            record = json.loads(relaxed) if commas else None
        except (RecursionError, ValueError):
            commas = 0
        if not commas:
            raise InputError(f"{path} is not valid JSON: {str(error)[:200]}") from None
        warnings.append(f"{path.name} has {commas} trailing comma(s) before a closing brace or bracket, which strict "
                        "JSON refuses (the organisers' own sample is written so): read without them")
    if not isinstance(record, dict):
        kind = "null" if record is None else type(record).__name__
        raise InputError(f"{path} must hold a JSON object, got {kind}")
    return record, warnings
