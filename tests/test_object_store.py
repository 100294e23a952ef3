"""Datasets in an object store (issue 22): `tuner record`, `train` and `evaluate` with an
s3:// URL, against moto's S3 server on loopback (no outside network)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pyarrow.fs as pafs
import pytest
from conftest import one_line_error, run_tuner
from test_fleet_training import fleet

from tuner.learn.modelfile import load_model
from tuner.trace import store
from tuner.trace.dataset import recordings
from tuner.trace.reader import read_trace

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


@pytest.fixture
def s3(monkeypatch) -> Iterator[str]:
    """An S3 server (moto) on 127.0.0.1 with a new bucket; yields a dataset URL in it."""
    from moto.server import ThreadedMotoServer

    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)  # for this process and the tuner commands it starts
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        query = f"?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        bucket = f"traces-{uuid.uuid4().hex[:8]}"  # moto keeps buckets for the whole process
        fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}{query}&allow_bucket_creation=true")
        fs.create_dir(bucket)
        yield f"s3://{bucket}/fleet{query}"
    finally:
        server.stop()


def _upload_tree(local: str, url: str) -> None:
    fs, base = store.filesystem(url)
    pafs.copy_files(local, base, destination_filesystem=fs)


def test_train_and_evaluate_read_a_dataset_from_an_object_store_as_from_a_directory(s3, tmp_path):
    """The same recordings in a directory and in S3 train the same model (same content
    version) and get the same per-node scores."""
    local = fleet(tmp_path / "ds", nodes=3, windows=400)
    _upload_tree(local, s3)
    assert [(r.node, r.rows) for r in recordings(s3)] == [
        (r.node, r.rows) for r in recordings(local)
    ]
    runs = {}
    for name, root in (("dir", local), ("s3", s3)):
        out = tmp_path / f"m-{name}"
        meta = json.loads(run_tuner("train", "--dataset", root, "--out", str(out),
                                    "--max-iter", "20", "--json", check=True).stdout)  # fmt: skip
        ev = json.loads(run_tuner("evaluate", "--dataset", root, "--model", str(out), "--json",
                                  check=True).stdout)  # fmt: skip
        runs[name] = (load_model(str(out)).meta["version"], meta["per_node"], ev["per_node"])
    assert runs["dir"] == runs["s3"]
    assert sorted(runs["s3"][1]) == ["node-0", "node-1", "node-2"]


def test_a_store_that_is_gone_or_wrong_gets_one_line_errors(s3, tmp_path):
    """An empty prefix, a URL no file system takes, and a store that does not answer (after
    the S3 client's retries, about 7 s): refused before anything is written or recorded."""
    out = tmp_path / "m"
    one_line_error(run_tuner("train", "--dataset", s3, "--out", str(out)), "does not exist")
    gone = s3.replace("endpoint_override=127.0.0.1:", "endpoint_override=127.0.0.1:1")
    one_line_error(run_tuner("train", "--dataset", "nope://x/y", "--out", str(out)),
                   "cannot be opened")  # fmt: skip
    assert not out.exists()
    one_line_error(run_tuner("record", "--dataset", gone, "--pid", str(os.getpid()),
                             "--seconds", "1"), "cannot be reached")  # fmt: skip


@pytest.mark.kernel
def test_a_recording_is_spooled_then_uploaded_to_the_store(s3, served):
    """`tuner record --dataset s3://...`: recorded into the local spool, uploaded when it
    ends, then read back from the store; nothing left in the spool."""
    c, pids, load = served
    gen = load(60)
    try:
        r = run_tuner("record", "--dataset", s3, "--node", "edge-s3", "--seconds", "2",
                      "--window-ms", "50", *[a for p in pids for a in ("--pid", str(p))],
                      check=True)  # fmt: skip
    finally:
        gen.kill()
        run_tuner("cleanup")
    said = json.loads(r.stdout)
    assert said["trace"].startswith(store.split_url(s3)[0] + "/node=edge-s3/")
    assert said["windows"] > 0
    (rec,) = recordings(s3)
    assert rec.node == "edge-s3" and rec.rows == said["rows"]
    with store.local_copy(s3, rec.rel) as path:
        assert read_trace(path).windows == said["windows"]
    assert not os.path.exists(os.path.join(store.SPOOL, rec.rel))
