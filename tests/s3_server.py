"""A local S3-compatible server for tests marked ``s3``: moto's ``ThreadedMotoServer`` on
127.0.0.1 (a real HTTP server speaking the S3 protocol, in a thread of the test process)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

from trainers.artifact_store import ENDPOINT_ENV, REGION_ENV, STORE_ENV


@dataclass
class S3Server:
    """A running server: its endpoint URL, and ``stop`` / ``start`` to simulate an outage
    (the same port; the buckets are kept by moto's in-process backend)."""

    server: ThreadedMotoServer
    endpoint_url: str
    port: int
    bucket: str

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A moto S3 server, test credentials in the environment (boto3's chain reads them),
    and the process's artifact store set to ``s3://<a new bucket>/artifacts`` on it (moto keeps
    its buckets for the whole test process, so each test gets its own)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    bucket = f"cappuccino-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
    monkeypatch.setenv(STORE_ENV, f"s3://{bucket}/artifacts")
    monkeypatch.setenv(ENDPOINT_ENV, url)
    monkeypatch.setenv(REGION_ENV, "us-east-1")
    s3 = S3Server(server, url, port, bucket)
    try:
        yield s3
    finally:
        s3.server.stop()
