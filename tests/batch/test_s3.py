"""Outputs to s3:// through s3fs, against a real S3-compatible server (moto's) on loopback."""

from __future__ import annotations

import json

import pytest

from rd_engine.batch import run_cluster
from rd_engine.outputs.offline import OutputOptions

from .conftest import SETTINGS


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_outputs_to_s3_are_the_single_process_files(ray_cluster, s3_server, videos, single_outputs, tiny_ckpt):
    import s3fs

    opts = {
        "endpoint_url": s3_server,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="rd-test")
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    inputs = [videos / "short.mp4", videos / "medium.mp4"]
    kw = dict(
        checkpoint=str(tiny_ckpt),
        overrides=SETTINGS,
        options=OutputOptions(cmaps=["Spectral_r"]),
        storage_options=opts,
        progress=False,
    )
    res = run_cluster(inputs, "s3://rd-test/runs/one", **kw)
    assert [j.status for j in res.jobs] == ["done", "done"]
    keys = sorted(k.rsplit("/", 1)[1] for k in fs.ls("rd-test/runs/one", refresh=True))
    outputs = [k for k in keys if not k.startswith("rd-engine-run-")]
    assert outputs == sorted(p.name for p in single_outputs.iterdir() if p.name.startswith(("short", "medium")))
    for name in outputs:
        assert fs.cat_file(f"rd-test/runs/one/{name}") == (single_outputs / name).read_bytes(), name
    (summary,) = [k for k in keys if k.startswith("rd-engine-run-")]
    doc = json.loads(fs.cat_file(f"rd-test/runs/one/{summary}"))
    assert [v["frames"] for v in doc["videos"]] == [8, 14]
    # resume reads the .npz metadata from the bucket
    again = run_cluster(inputs, "s3://rd-test/runs/one", **kw)
    assert [j.status for j in again.jobs] == ["skipped", "skipped"]
