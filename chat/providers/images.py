"""Image sizes and formats from the image itself (the header of a base64 data URL), for the
per-model image token formulas; no image library needed."""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass

_DATA_URL = re.compile(r"^data:image/([a-z]+);base64,(.*)$", re.S)
# Enough of the file to find the size in any of the four formats (JPEG's SOF can sit
# after large EXIF blocks; past this we fall back to the worst case).
_HEADER_BYTES = 256 * 1024


@dataclass(frozen=True)
class ImageInfo:
    format: str  # png, jpeg, gif, webp; "" when unknown (an https URL)
    width: int | None = None
    height: int | None = None


def image_info(url: str) -> ImageInfo:
    match = _DATA_URL.match(url)
    if not match:
        return ImageInfo(format=_format_from_path(url))
    declared = match.group(1)
    payload = "".join(match.group(2)[: _HEADER_BYTES * 4 // 3 + 4].split())
    payload = payload[: len(payload) // 4 * 4]
    try:
        head = base64.b64decode(payload)
    except (binascii.Error, ValueError):
        return ImageInfo(format=declared)
    size = _size(head)
    fmt = _sniff(head) or declared
    return ImageInfo(format=fmt, width=size[0] if size else None, height=size[1] if size else None)


def _format_from_path(url: str) -> str:
    path = url.split("?", 1)[0].lower()
    for ext, fmt in ((".png", "png"), (".jpg", "jpeg"), (".jpeg", "jpeg"), (".gif", "gif"), (".webp", "webp")):
        if path.endswith(ext):
            return fmt
    return ""


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return ""


def _size(head: bytes) -> tuple[int, int] | None:
    try:
        kind = _sniff(head)
        if kind == "png" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if kind == "gif":
            return struct.unpack("<HH", head[6:10])
        if kind == "webp":
            chunk = head[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(head[24:27], "little") + 1
                h = int.from_bytes(head[27:30], "little") + 1
                return w, h
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", head[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(head[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == "jpeg":
            i = 2
            while i + 9 < len(head):
                if head[i] != 0xFF:
                    i += 1
                    continue
                marker = head[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                length = struct.unpack(">H", head[i + 2 : i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", head[i + 5 : i + 9])
                    return w, h
                i += 2 + length
    except struct.error:
        return None
    return None


def openai_tiles(width: int, height: int) -> int:
    """512-px tiles of a high-detail image after OpenAI's scaling: fit 2048x2048, then the
    shortest side to 768 (only ever down)."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return max(math.ceil(w / 512), 1) * max(math.ceil(h / 512), 1)


# 768 x 2048 after scaling is the most tiles an image can make.
OPENAI_MAX_TILES = 8
