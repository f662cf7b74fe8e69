"""Receive one uploaded file from a multipart/form-data body into a temporary file on disk.

The body is streamed: Starlette's multipart parser (python-multipart) spools the file part to a
temporary file, counted as it arrives (a body beyond the cap is a 413 as soon as it is seen),
then copied to a named temporary file the readers can open by path. Nothing holds the file in
memory. Use::

    async with received_file(request, max_bytes) as upload:
        upload.path, upload.filename, upload.size, upload.fields   # fields: the text parts
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from server.errors import InvalidRequest, RequestTooLarge

__all__ = ["MULTIPART_OVERHEAD", "Upload", "file_chunks", "received_file"]

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes a body may carry beyond the file itself (boundaries, headers, small text fields)."""
_MAX_FIELDS = 16
_MAX_FIELD_BYTES = 16 * 1024
_MAX_FILENAME = 255


@dataclass(frozen=True)
class Upload:
    """The received file: where it is, its client-side name (may be empty) and size, and the
    form's text fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str]


def _too_large(max_bytes: int) -> RequestTooLarge:
    return RequestTooLarge("file_too_large", f"The file exceeds {max_bytes} bytes.", param="file")


async def _bounded(request: Request, limit: int, max_bytes: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(max_bytes)
        yield chunk


@contextlib.asynccontextmanager
async def received_file(
    request: Request, max_bytes: int, field: str = "file"
) -> AsyncIterator[Upload]:
    """The file part ``field`` of a multipart body, on disk for the block's duration.

    Errors (the envelope's codes): ``multipart_required`` (another content type),
    ``invalid_multipart``, ``file_missing``, ``file_too_large`` (413).
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest(
            "multipart_required",
            f"Send the file as multipart/form-data with a {field!r} part.",
        )
    limit = max_bytes + MULTIPART_OVERHEAD
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(max_bytes)
    parser = MultiPartParser(
        request.headers,
        _bounded(request, limit, max_bytes),
        max_files=1,
        max_fields=_MAX_FIELDS,
        max_part_size=_MAX_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(
            "invalid_multipart", f"The multipart body is invalid: {exc.message}"
        ) from None
    try:
        part = form.get(field)
        if not isinstance(part, UploadFile):
            raise InvalidRequest(
                "file_missing", f"The form has no file part named {field!r}.", param=field
            )
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        handle, name = tempfile.mkstemp(prefix="bavlio-upload-")
        os.close(handle)
        path = Path(name)
        try:
            size = await asyncio.to_thread(_copy, part, path)
            if size > max_bytes:
                raise _too_large(max_bytes)
            filename = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
            yield Upload(path, filename[:_MAX_FILENAME], size, fields)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)  # quick, and must run even when the request is cancelled
    finally:
        await form.close()


def _copy(part: UploadFile, path: Path) -> int:
    part.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(part.file, out, 1024 * 1024)
        return out.tell()


async def file_chunks(path: Path, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A file's bytes as an async stream (e.g. into ``FileStore.put``)."""
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, chunk_size):
            yield chunk
    finally:
        handle.close()
