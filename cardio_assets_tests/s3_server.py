"""A local S3-compatible server for the tests: moto's server mode, standing in for Amazon S3 (or
MinIO, or any S3 API) on a free local port, with one empty bucket.

moto implements the S3 API in memory; the code under test reaches it exactly as it would reach
the real service, through s3fs, with an `endpoint_url` in the lake's storage options.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from cardio_assets_tests.postgres import free_port

CREDENTIALS = {"key": "testing", "secret": "testing"}


@contextmanager
def local_s3(bucket: str = "cardio-lake") -> Iterator[dict]:
    """Yield the storage options that reach `bucket` on a moto server running until the block ends."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=CREDENTIALS["key"],
                     aws_secret_access_key=CREDENTIALS["secret"]).create_bucket(Bucket=bucket)
        yield {"endpoint_url": endpoint, **CREDENTIALS}
    finally:
        server.stop()
