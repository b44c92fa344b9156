"""A real S3 endpoint on loopback (moto's server), and a lake built through CDC on it.

moto runs as an HTTP server on a free port: pyarrow's S3 client and DuckDB's httpfs talk to it
over real HTTP exactly as they would to S3 or MinIO. Every test gets a bucket of its own.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from psycopg.conninfo import conninfo_to_dict

from ledger_assets.lib.cdc import CaptureConfig
from ledger_assets.lib.cdc import slot as slots
from ledger_assets.lib.lake.layout import LakeLayout
from ledger_assets.lib.lake.storage import S3Settings
from ledger_assets.lib.lake.sync import build_lake
from ledger_assets.lib.sor.pgcluster import find_free_port
from ledger_assets.lib.synth.load import SeedSpec, seed_database
from tests.conftest import world_searchable_tmpdir

SPEC = SeedSpec(tenants=4, start=date(2025, 2, 1), days=30, target_rows=3_000)


@pytest.fixture(scope="session")
def s3_settings() -> Iterator[S3Settings]:
    """moto's S3 on 127.0.0.1 (any credentials are accepted; they are still sent)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    port = find_free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Settings(
            region="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key="test-key",
            secret_key="test-secret",
        )
    finally:
        server.stop()


def create_bucket(settings: S3Settings) -> str:
    """A new, empty bucket (made with boto3, not with the code under test)."""
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", **_boto_args(settings)).create_bucket(Bucket=bucket)
    return bucket


def _boto_args(settings: S3Settings) -> dict[str, str | None]:
    return {
        "endpoint_url": settings.endpoint_url,
        "region_name": settings.region,
        "aws_access_key_id": settings.access_key,
        "aws_secret_access_key": settings.secret_key,
    }


def s3_env(settings: S3Settings) -> dict[str, str]:
    """The standard AWS variables for ``settings`` (for processes that read the environment)."""
    assert settings.endpoint_url
    assert settings.access_key
    assert settings.secret_key
    return {
        "AWS_ENDPOINT_URL": settings.endpoint_url,
        "AWS_ACCESS_KEY_ID": settings.access_key,
        "AWS_SECRET_ACCESS_KEY": settings.secret_key,
        "AWS_REGION": settings.region,
    }


def object_bytes(layout: LakeLayout) -> dict[str, bytes]:
    """Every object under the lake root, by key relative to it."""
    return {p.relative_to(layout.path): p.read_bytes() for p in layout.path.files()}


def etag(layout: LakeLayout, relative: str) -> str:
    """The object's ETag, from a HEAD request."""
    assert layout.s3 is not None
    bucket, key = (layout.path / relative).path.split("/", 1)
    head = boto3.client("s3", **_boto_args(layout.s3)).head_object(Bucket=bucket, Key=key)
    return str(head["ETag"])


@dataclass(frozen=True)
class S3Lake:
    dsn: str
    layout: LakeLayout
    config: CaptureConfig
    folder: Path
    settings: S3Settings


def build_s3_lake(dsn: str, settings: S3Settings, folder: Path, name: str) -> S3Lake:
    """A lake at ``s3://<new bucket>/lake`` built from ``dsn``; locks and change log in
    ``folder``."""
    layout = LakeLayout(
        f"s3://{create_bucket(settings)}/lake", local_dir=folder / "lake-local", s3=settings
    )
    config = CaptureConfig(
        dsn=dsn, changelog_dir=layout.changelog_dir, slot_name=name, publication=name
    )
    build_lake(config, layout)
    return S3Lake(dsn, layout, config, folder, settings)


@pytest.fixture
def s3_lake(migrated_dsn: str, s3_settings: S3Settings) -> Iterator[S3Lake]:
    seed_database(migrated_dsn, SPEC)
    folder = world_searchable_tmpdir("ledger-test-s3-")
    name = f"s3_{conninfo_to_dict(migrated_dsn)['dbname']}"
    try:
        yield build_s3_lake(migrated_dsn, s3_settings, folder, name)
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            slots.drop_slot(conn, name)
        shutil.rmtree(folder, ignore_errors=True)
