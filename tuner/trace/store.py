"""Where a dataset of traces lives: a directory, or an object store named by a URL that
Arrow's file systems read (``s3://bucket/prefix``, ``gs://``, ``hdfs://``, ``file://``).

An object store is reached through :func:`pyarrow.fs.FileSystem.from_uri`, so its options
ride on the URL's query (``s3://traces/fleet?region=eu-west-1``, or for an S3-compatible
store ``?endpoint_override=minio.lan:9000&scheme=http``) and its credentials come from the
usual places (``AWS_ACCESS_KEY_ID`` ..., instance roles). Parts are never read from it in
place: a recording is copied to a local temporary folder to be read (:func:`local_copy`), and
a recording made for it is written to a local spool folder first and uploaded when it ends
(:func:`upload`), so that a store that is slow or gone never stalls the agent.

>>> is_url("s3://traces/fleet?region=eu-west-1"), is_url("/srv/traces")
(True, False)
>>> split_url("s3://traces/fleet?region=eu-west-1")
('s3://traces/fleet', '?region=eu-west-1')
>>> join("s3://traces/fleet?region=x", "node=a/date=d/run=r")
's3://traces/fleet/node=a/date=d/run=r?region=x'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tuner.errors import TunerError

SPOOL = "/var/tmp/tuner-spool"  # recordings made for an object store, until uploaded


def is_url(root: str) -> bool:
    return "://" in root


def split_url(root: str) -> tuple[str, str]:
    """The URL without its query, and the query (with its ``?``, or "")."""
    base, sep, query = root.partition("?")
    return base.rstrip("/"), sep + query


def join(root: str, rel: str) -> str:
    """``rel`` under ``root``, the query kept at the end of a URL."""
    if not is_url(root):
        return os.path.join(root, rel)
    base, query = split_url(root)
    return f"{base}/{rel}{query}"


def filesystem(root: str) -> tuple[Any, str]:
    """Arrow's file system for ``root`` and the path of the root in it; a one-line error
    names a URL that no file system takes."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    if not is_url(root):
        return pafs.LocalFileSystem(), os.path.abspath(root)
    try:
        fs, path = pafs.FileSystem.from_uri(root)
    except (pa.ArrowException, ValueError, OSError) as e:
        why = f"dataset URL {split_url(root)[0]} cannot be opened: {_first(e)}"
        raise TunerError(why, "use s3://, gs://, hdfs:// or file://, or a directory") from None
    return fs, path.rstrip("/")


def check(root: str) -> None:
    """Refuse, before anything is recorded, a store that cannot be reached."""
    import pyarrow as pa

    fs, base = filesystem(root)
    try:
        fs.get_file_info(base)
    except (pa.ArrowException, OSError) as e:
        why = f"dataset {split_url(root)[0]} cannot be reached: {_first(e)}"
        raise TunerError(why, "check the URL, the store's address and the credentials") from None


def files(root: str) -> list[str]:
    """Every file under ``root``, as paths relative to it, sorted."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        raise TunerError(f"dataset {split_url(root)[0]} does not exist",
                         "give the --dataset root of `tuner record`") from None  # fmt: skip
    except (pa.ArrowException, OSError) as e:
        why = f"dataset {split_url(root)[0]} cannot be listed: {_first(e)}"
        raise TunerError(why, "check the URL, the store's address and the credentials") from None
    return sorted(os.path.relpath(i.path, base) for i in infos if i.type == pafs.FileType.File)


@contextmanager
def local_copy(root: str, rel: str) -> Iterator[str]:
    """A local folder holding the recording ``rel`` of ``root``: the folder itself for a
    directory, else a temporary copy removed afterwards."""
    if not is_url(root):
        yield os.path.join(root, rel)
        return
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    tmp = tempfile.mkdtemp(prefix="tuner-recording-")
    try:
        pafs.copy_files(f"{base}/{rel}", tmp, source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upload(local: str, root: str, rel: str) -> None:
    """Copy the recording folder ``local`` to ``rel`` under ``root``, then remove it; on a
    failure the local folder is kept and the error says where it is."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    try:
        pafs.copy_files(local, f"{base}/{rel}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)  # fmt: skip
    except (pa.ArrowException, OSError) as e:
        raise TunerError(
            f"the recording could not be uploaded to {split_url(root)[0]}: {_first(e)}; it is "
            f"kept in {local}",
            f"upload it yourself (e.g. `aws s3 cp --recursive {local} ...`), or record again",
        ) from None
    shutil.rmtree(local, ignore_errors=True)


def _first(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:160]
