"""Where files live: a local path, or an object store's URL (``s3://``, ``gs://``, ``az://``, any
protocol fsspec knows), read and written through one small set of functions.

A local path goes through the operating system as before (atomic rename, fsync, the umask). A URL
goes through ``fsspec``: its bytes are read by the actor that needs them, and an object is written
with one PUT, which object stores make visible whole or not at all (a rename there is a copy and a
delete, so write-then-rename would not be atomic; a single PUT is). ``file://`` URLs are local
paths. Credentials and endpoints come from the usual places (``AWS_*`` variables, ``~/.aws``,
``FSSPEC_S3_ENDPOINT_URL`` for an S3-compatible server).
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
from typing import Any


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an object in a store (a URL with a protocol other than ``file``)."""
    s = os.fspath(path)
    return "://" in s and not s.startswith("file://")


def local(path: str) -> str:
    """A ``file://`` URL as the local path it names; anything else unchanged."""
    return path[len("file://"):] if path.startswith("file://") else path


@functools.lru_cache(maxsize=16)
def _fs(protocol: str) -> Any:
    import fsspec

    try:
        return fsspec.filesystem(protocol)
    except (ImportError, ValueError) as e:  # e.g. s3:// without s3fs: one line, not a traceback
        raise ValueError(f"{protocol}:// cannot be used here: {e}") from None


def _plainly(fn):
    """A store's failure (no endpoint, no credentials, a missing bucket: botocore's, aiohttp's and
    other exceptions) as an OSError of one line naming the URL, as a local path's failure is."""
    @functools.wraps(fn)
    def call(path, *args, **kwargs):
        if not is_url(path):
            return fn(path, *args, **kwargs)
        try:
            return fn(path, *args, **kwargs)
        except OSError as e:
            if os.fspath(path) in str(e):
                raise
            raise type(e)(e.errno, f"{path}: {e.strerror or e}") if e.errno else OSError(f"{path}: {e}") from None
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - the store's own exception types vary by protocol
            raise OSError(f"{path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    return call


def fs_of(url: str) -> tuple[Any, str]:
    """(the fsspec file system of ``url``, the path within it)."""
    protocol, _, rest = url.partition("://")
    return _fs(protocol), rest


def join(base: str, rel: str) -> str:
    """``rel`` under the folder ``base`` (a URL or a path); a URL's ``..`` parts are resolved, as a
    path's are by the file system."""
    if not is_url(base):
        return os.path.join(base, rel)
    url = f"{base.rstrip('/')}/{rel}"
    if ".." not in url.split("/"):
        return url
    protocol, _, key = url.partition("://")
    return f"{protocol}://{posixpath.normpath(key)}"


@_plainly
def read_bytes(path: str | os.PathLike) -> bytes:
    if not is_url(path):
        with open(path, "rb") as f:
            return f.read()
    fs, key = fs_of(os.fspath(path))
    try:
        return fs.cat_file(key)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such object") from None


@_plainly
def write_bytes(url: str, data: bytes) -> None:
    """One PUT: the object is there whole, or not at all (a local path goes to ``images.write_atomic``)."""
    fs, key = fs_of(url)
    fs.pipe_file(key, data)


@_plainly
def exists(path: str | os.PathLike) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, key = fs_of(os.fspath(path))
    return fs.exists(key)


@_plainly
def isdir(path: str | os.PathLike) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, key = fs_of(os.fspath(path))
    return fs.isdir(key)


@_plainly
def stamp(path: str | os.PathLike) -> str:
    """What resume compares first, before hashing: 'size:mtime_ns:ctime_ns:inode' of a local file,
    'size:ETag' of an object (a store gives every write a new ETag). Which parts tell a file changed
    is the reader's choice (``files.plan``: ``unchanged`` for an input, ``output_changed`` for an
    output): the ctime also moves on a chmod or a new hard link, the image untouched; the inode
    tells a file replaced (renamed over it) or copied."""
    if not is_url(path):
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
    fs, key = fs_of(os.fspath(path))
    info = fs.info(key)
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime") or info.get("LastModified")
    return f"{info.get('size')}:{str(tag).strip(chr(34))}"


@_plainly
def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    if is_url(path):
        h.update(read_bytes(path))
        return h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@_plainly
def listing(url: str) -> list[str]:
    """Every object under the folder ``url``, as URLs, sorted (a store has no folders: keys share a prefix)."""
    fs, key = fs_of(url)
    protocol = url.partition("://")[0]
    # (a key ending in / is a folder's marker, not an object of its own)
    return sorted(f"{protocol}://{k}" for k in fs.find(key.rstrip("/")) if not k.endswith("/"))


@_plainly
def open_read(path: str | os.PathLike):
    """A binary file object to read ``path`` from, lazily (an image's header without its pixels)."""
    if not is_url(path):
        return open(path, "rb")
    fs, key = fs_of(os.fspath(path))
    return fs.open(key, "rb")


@_plainly
def check_writable(url: str) -> None:
    """Write and remove a small object under the folder ``url``: a missing bucket or a store that
    refuses writes is said before any work, not after every fit."""
    probe = join(url, ".zssr-batch.write-check")
    write_bytes(probe, b"")
    remove(probe)


@_plainly
def remove(path: str | os.PathLike) -> None:
    """Delete a file, or an object."""
    if not is_url(path):
        os.unlink(path)
        return
    fs, key = fs_of(os.fspath(path))
    fs.rm_file(key)
