"""Where the lake's bytes live: a local folder or an S3 prefix, behind one small API.

``LEDGER_LAKE_ROOT`` is a local path (the default, ``.state/lake``) or ``s3://bucket/prefix``.
Every lake module reads, writes, lists and deletes files through :class:`LakePath`, so the same
code runs on both; the two differ only where the storage itself differs:

* **Replacing a file.** Local: temporary file + fsync + rename (``changelog.atomic_write_bytes``).
  S3: one upload; an object becomes visible only once its upload completes, so a reader sees the
  old or the new bytes, never a torn file. Both keep "a partition's file is replaced atomically".
* **A file's identity** (``lib/lake/drift.py``): local ``(size, mtime_ns, inode)``; S3 ``(size,
  mtime_ns, 0)``, with S3's one-second ``LastModified``. An S3 listing carries no inode, and
  pyarrow's listing does not expose the ETag (a HEAD per object would cost one request per file
  per cycle), so a same-size rewrite within the same second is not seen as drift; the rolling
  sweep still compares that day within a day (ARCHITECTURE.md §8).
* **Back-dating a file** (compaction keeps the oldest source time, ``lib/lake/compact.py``):
  S3 cannot set an object's time, so it is a no-op there (consequence in ARCHITECTURE.md §6).

S3 settings are the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``); pyarrow and DuckDB get the
same values, DuckDB through a temporary secret built from bound parameters. A root whose bucket
does not exist or whose endpoint cannot be reached fails at first use with one
:class:`LakeStorageError` naming the root: an empty listing must never pass for an empty lake.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import duckdb
import duckdb_extension_httpfs
import pyarrow.fs as pafs

from ledger_assets.lib.cdc.changelog import atomic_write_bytes

S3_SCHEME = "s3://"
#: Seconds to wait for a connection and for a request: a wrong endpoint fails in seconds.
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 60.0


class FileStat(NamedTuple):
    """What :meth:`LakePath.stat` tells (named like ``os.stat_result``'s fields)."""

    st_size: int
    st_mtime_ns: int
    #: 0 on S3 (no such thing).
    st_ino: int


class LakeStorageError(RuntimeError):
    """The lake's storage cannot be used as configured (unknown bucket, unreachable endpoint)."""


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3; from the standard AWS variables (``from_env``)."""

    region: str
    #: e.g. ``http://127.0.0.1:9000`` for MinIO or moto; None: AWS's own endpoint.
    endpoint_url: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        env = os.environ if env is None else env
        return cls(
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            access_key=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    @property
    def _endpoint(self) -> tuple[str, str] | None:
        """(scheme, host[:port]) of the endpoint override."""
        if self.endpoint_url is None:
            return None
        parts = urlsplit(self.endpoint_url if "://" in self.endpoint_url
                         else f"https://{self.endpoint_url}")  # fmt: skip
        return parts.scheme, parts.netloc

    def filesystem(self) -> pafs.S3FileSystem:
        endpoint = self._endpoint
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            session_token=self.session_token,
            region=self.region,
            scheme=endpoint[0] if endpoint else "https",
            endpoint_override=endpoint[1] if endpoint else None,
            connect_timeout=CONNECT_TIMEOUT_S,
            request_timeout=REQUEST_TIMEOUT_S,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        )

    def describe(self) -> str:
        """Where S3 requests go, for error messages (never a credential)."""
        return self.endpoint_url or f"AWS S3 ({self.region})"

    def create_duckdb_secret(self, con: duckdb.DuckDBPyConnection) -> None:
        """A temporary S3 secret on ``con`` with these settings (values bound, never SQL text)."""
        endpoint = self._endpoint
        options = ["type s3", "region ?"]
        params: list[object] = [self.region]
        if endpoint is not None:
            # Custom endpoints (MinIO, moto) serve path-style URLs; AWS itself virtual-hosted.
            options += ["endpoint ?", "url_style 'path'", "use_ssl ?"]
            params += [endpoint[1], endpoint[0] == "https"]
        for name, value in (("key_id", self.access_key), ("secret", self.secret_key),
                            ("session_token", self.session_token)):  # fmt: skip
            if value is not None:
                options.append(f"{name} ?")
                params.append(value)
        con.execute(
            f"create or replace temporary secret ledger_lake ({', '.join(options)})", params
        )


def _s3_stat(info: pafs.FileInfo) -> FileStat:
    return FileStat(int(info.size), int(info.mtime_ns or 0), 0)


@cache
def wheel_extension(package_file: str, name: str) -> str:
    """The DuckDB extension ``name`` shipped in a ``duckdb-extension-*`` wheel (its package's
    ``__file__``), for ``install_extension``: extensions cannot be downloaded at run time."""
    folder = Path(package_file).parent / "extensions"
    found = glob.glob(str(folder / "*" / f"{name}.duckdb_extension"))
    if not found:
        raise FileNotFoundError(f"{name} extension not found under {folder}")
    return found[0]


@dataclass(frozen=True)
class LakePath:
    """A file or folder of the lake, on a local disk or in S3 (see the module's docs).

    ``path`` is the filesystem's own path: an absolute local path, or ``bucket/key``.
    """

    path: str
    fs: pafs.FileSystem = field(compare=False, repr=False)
    s3: S3Settings | None = field(default=None, compare=False, repr=False)

    @classmethod
    def at(cls, root: str | Path, s3: S3Settings | None = None) -> LakePath:
        """The lake root ``root``: ``s3://bucket/prefix`` or a local folder."""
        text = str(root)
        if text.startswith(S3_SCHEME):
            settings = s3 or S3Settings.from_env()
            key = text.removeprefix(S3_SCHEME).strip("/")
            if not key:
                raise LakeStorageError(f"lake root {text!r} names no bucket")
            return cls(key, settings.filesystem(), settings)
        return cls(str(Path(text).resolve()), pafs.LocalFileSystem())

    @property
    def is_local(self) -> bool:
        return self.s3 is None

    @property
    def uri(self) -> str:
        """The path as DuckDB and people read it: a local path, or ``s3://bucket/key``."""
        return self.path if self.is_local else S3_SCHEME + self.path

    def __str__(self) -> str:
        return self.uri

    def __fspath__(self) -> str:
        """A local file is an ``os.PathLike`` (open, pyarrow, os.utime); an S3 object is not."""
        if not self.is_local:
            raise TypeError(f"{self.uri} is not a local path")
        return self.path

    def __truediv__(self, part: str) -> LakePath:
        return LakePath(posixpath.join(self.path, part), self.fs, self.s3)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> LakePath:
        return LakePath(posixpath.dirname(self.path), self.fs, self.s3)

    def relative_to(self, other: LakePath) -> str:
        return posixpath.relpath(self.path, other.path)

    def check(self) -> None:
        """Raise :class:`LakeStorageError` unless this root's storage answers (S3: its bucket
        exists and the endpoint is reachable). Local folders are created on first write."""
        if self.s3 is None:
            return
        bucket = self.path.split("/", 1)[0]
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as error:
            raise LakeStorageError(
                f"lake root {self.uri}: S3 at {self.s3.describe()} cannot be used: {error}"
            ) from error
        if info.type == pafs.FileType.NotFound:
            raise LakeStorageError(
                f"lake root {self.uri}: bucket {bucket!r} does not exist at {self.s3.describe()}"
            )

    def exists(self) -> bool:
        return bool(self.fs.get_file_info(self.path).type == pafs.FileType.File)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as handle:
            return bytes(handle.read())

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes, durable: bool = True) -> None:
        """Replace the file with ``data`` atomically (a reader sees old or new bytes, whole).

        ``durable`` False skips the local fsyncs, for files whose writer commits them later by
        another durable write (a snapshot's day files, committed by ``lake.json``).
        """
        if self.is_local:
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if durable:
                atomic_write_bytes(target, data)
            else:
                tmp = target.with_name(f".{target.name}.part")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            return
        with self.fs.open_output_stream(self.path) as handle:
            handle.write(data)

    def unlink(self) -> None:
        self.fs.delete_file(self.path)

    def pin_to(self, target: LakePath) -> None:
        """Give this file's current content the name ``target``, which replacing this file
        later leaves alone (``pins.py``): locally a hard link (no bytes copied), on S3 a
        server-side copy. ``target`` must be on the same storage."""
        if self.is_local:
            Path(target.path).parent.mkdir(parents=True, exist_ok=True)
            os.link(self.path, target.path)
        else:
            self.fs.copy_file(self.path, target.path)

    def stat(self) -> FileStat:
        if self.is_local:
            st = os.stat(self.path)
            return FileStat(st.st_size, st.st_mtime_ns, st.st_ino)
        info = self.fs.get_file_info(self.path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(self.uri)
        return _s3_stat(info)

    def backdate(self, mtime_ns: int) -> None:
        """Set the file's modification time (local only: S3 cannot set an object's time)."""
        if self.is_local:
            os.utime(self.path, ns=(mtime_ns, mtime_ns))

    def files(self, pattern: str | None = None) -> list[LakePath]:
        """Files below this folder whose relative path matches ``pattern`` part by part
        (``*`` never crosses a ``/``; None: every file), sorted by path. One listing request
        on S3 (per 1,000 keys), a folder walk locally; a missing folder has no files."""
        return [LakePath(info.path, self.fs, self.s3) for info in self._listing(pattern)]

    def file_stats(self, pattern: str) -> list[tuple[LakePath, FileStat]]:
        """:meth:`files` with each file's :meth:`stat` (S3: from the same listing)."""
        found = []
        for info in self._listing(pattern):
            path = LakePath(info.path, self.fs, self.s3)
            if self.is_local:
                try:
                    found.append((path, path.stat()))
                except FileNotFoundError:  # replaced or compacted away while listing
                    continue
            else:
                found.append((path, _s3_stat(info)))
        return found

    def _listing(self, pattern: str | None) -> list[pafs.FileInfo]:
        wanted = pattern.split("/") if pattern is not None else None
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        matched = []
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            rel = posixpath.relpath(info.path, self.path).split("/")
            if wanted is None or (
                len(rel) == len(wanted)
                and all(fnmatch.fnmatchcase(p, w) for p, w in zip(rel, wanted, strict=True))
            ):
                matched.append(info)
        return sorted(matched, key=lambda i: str(i.path))

    def delete_tree(self) -> None:
        """Delete this folder and everything below it (nothing if it does not exist)."""
        if self.fs.get_file_info(self.path).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.path)

    def configure_duckdb(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let ``con`` read this lake's files: for S3, httpfs (from its wheel) and a secret."""
        if self.s3 is None:
            return
        con.install_extension(wheel_extension(duckdb_extension_httpfs.__file__, "httpfs"))
        con.load_extension("httpfs")
        self.s3.create_duckdb_secret(con)
