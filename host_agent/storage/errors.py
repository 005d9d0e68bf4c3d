"""The storage library's exceptions, one tree::

    StorageError
    ├── ImageError                 (images.ImageCache.fetch)
    │   ├── ImageNotFound          HTTP 404, missing file
    │   ├── ImageFetchFailed       other HTTP status, refused, timeout, short body
    │   ├── ImageChecksumMismatch  sha256 of the bytes is not the one asked for
    │   ├── ImageNotBootable       no MBR signature and no GPT header
    │   ├── UnsupportedImageSource s3://, ftp://, relative paths, ...
    │   └── InvalidChecksum        checksum not "" or "sha256:<64 hex>" (also ValueError)
    ├── VolumeError                (clone.*)
    │   ├── VolumeSizeError        smaller than the image, or a shrink (also ValueError)
    │   ├── VolumeExists           the destination is already there (never overwritten)
    │   └── VolumeIOError          the file system refused (missing source, ENOSPC, ...)
    └── WipeError                  (wipe.wipe_disk)
        ├── WipeFailed             cannot open, discard or write the disk
        └── WipeVerificationFailed a byte read back is not zero (has .offset)

Foreign errors (``OSError``, ``urllib.error.*``) are translated where they
happen, with ``raise ... from exc``.  Every message is folded to one line
and cut to ``MAX_MESSAGE`` characters: the agent shows them to tenants as
an instance's failure reason.
"""

from __future__ import annotations

__all__ = [
    "MAX_MESSAGE",
    "ImageChecksumMismatch",
    "ImageError",
    "ImageFetchFailed",
    "ImageNotBootable",
    "ImageNotFound",
    "InvalidChecksum",
    "StorageError",
    "UnsupportedImageSource",
    "VolumeError",
    "VolumeExists",
    "VolumeIOError",
    "VolumeSizeError",
    "WipeError",
    "WipeFailed",
    "WipeVerificationFailed",
]

MAX_MESSAGE = 400


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """*text* with whitespace runs folded to one space, cut to *limit* characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class StorageError(Exception):
    """Base of the tree; the message is one bounded line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ImageError(StorageError):
    """An image could not be put into the cache."""

    def __init__(self, message: str, *, uri: str = "") -> None:
        super().__init__(message)
        self.uri = uri


class ImageNotFound(ImageError):
    """The source says the image does not exist (HTTP 404, no such file)."""


class ImageFetchFailed(ImageError):
    """The source could not be read: HTTP error, refused, timed out, cut short."""


class ImageChecksumMismatch(ImageError):
    """The fetched bytes do not hash to the checksum asked for."""

    def __init__(self, message: str, *, uri: str, expected: str, actual: str) -> None:
        super().__init__(message, uri=uri)
        self.expected = expected
        self.actual = actual


class ImageNotBootable(ImageError):
    """The image has neither an MBR boot signature nor a GPT header."""


class UnsupportedImageSource(ImageError):
    """The URI's scheme (or form) is not one the cache can fetch."""


class InvalidChecksum(ImageError, ValueError):
    """The checksum is neither empty nor ``sha256:`` and 64 hex digits."""


class VolumeError(StorageError):
    """A volume could not be created, cloned or grown."""


class VolumeSizeError(VolumeError, ValueError):
    """The size asked for is below the image's or the volume's current size."""


class VolumeExists(VolumeError):
    """The destination volume already exists; it is never overwritten."""


class VolumeIOError(VolumeError):
    """The file system refused an operation (the ``OSError`` is the cause)."""


class WipeError(StorageError):
    """A disk could not be wiped."""


class WipeFailed(WipeError):
    """The disk could not be opened, discarded or written (``OSError`` is the cause)."""


class WipeVerificationFailed(WipeError):
    """Reading back found a byte that is not zero at ``offset``."""

    def __init__(self, message: str, *, path: str, offset: int) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
