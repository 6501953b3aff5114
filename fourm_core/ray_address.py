"""Where Ray runs: the one place that resolves the Ray address (parameter -> ``FOURM_RAY_ADDRESS`` -> local).

Every code path that starts or joins Ray (the build-dataset flow, the pseudolabel stage's Ray Data runner,
the CLIs) resolves its address here and passes :meth:`RayTarget.init_kwargs` to ``ray.init``, so a run
that skips some stages (a one-shard pseudolabel re-run with ingest cached) joins the same cluster as a
full one. Ray is imported only inside :meth:`RayTarget.join`, so the shared package stays importable
(and ``status`` / ``lineage`` stay fast) without Ray.

Address forms (docs/operations.md, "Ray cluster"):

* ``host:port``: the head's GCS address (``ray start --head --port 6379``); the recommended form.
* ``auto``: the cluster this host is a node of (the flow runs on a Ray node).
* ``ray://host:port``: Ray Client (the head's ``--ray-client-server-port``, 10001 by default). Works, but
  its proxy forks one server per client and crashed here with token authentication on (``Check failed:
  next_worker->state == KICKED``); prefer the GCS address.
* ``local`` (or unset): a private Ray runtime in this process; ``off``: no Ray, units run in-process.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ENV = "FOURM_RAY_ADDRESS"
OFF = "off"
LOCAL = "local"
# Ray's token authentication (Ray >= 2.59): read by Ray itself from the environment of every process.
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

# The directory that holds the project's packages: local Ray workers get it on their PYTHONPATH so they
# import the stages from a plain checkout too (cluster nodes run the project's image instead).
PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")
FORMS = "'host:port' (the head's GCS address), 'auto', 'ray://host:port' (Ray Client), 'local' or 'off'"

Mode = Literal["off", "local", "cluster", "client"]


class RayAddressError(ValueError):
    """A Ray address that is not one of the supported forms."""


@dataclass(frozen=True)
class RayTarget:
    """A resolved Ray address: what to join, and where the choice came from (for error messages)."""

    mode: Mode
    address: str | None  # for ray.init(address=...): None = start a local runtime
    source: str  # "parameter", "FOURM_RAY_ADDRESS", a config field, or "default"

    @property
    def uses_ray(self) -> bool:
        return self.mode != "off"

    def describe(self) -> str:
        where = {"off": "no Ray", "local": "a local Ray runtime"}.get(self.mode, f"the Ray cluster at {self.address}")
        return f"{where} (from {self.source})"

    def init_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``ray.init`` that join (or start) this target."""
        if self.mode == "off":
            raise RayAddressError(f"Ray is off here ({self.source}); nothing to join")
        if self.mode == "local":
            # A laptop / CI box: workers see this checkout; keep Ray's footprint small.
            pythonpath = os.pathsep.join(p for p in (PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p)
            return {"runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}}, "include_dashboard": False,
                    "configure_logging": False, "log_to_driver": True}
        # A cluster: its nodes run the project's image/environment; this machine's paths mean nothing there.
        return {"address": self.address, "log_to_driver": True}

    def join(self) -> bool:
        """Join (or start) this target unless this process already has a Ray runtime, which is reused as it
        is. Returns True when this call joined, so the caller owns ``ray.shutdown()``."""
        import ray

        if ray.is_initialized():
            return False
        if not self.uses_ray:
            raise RayAddressError(f"Ray is off ({self.source}) but this step needs Ray; give a Ray address "
                                  f"({FORMS}) or run the step in-process")
        try:
            self._check_reachable()
            ray.init(**self.init_kwargs())
        except Exception as exc:
            raise self.join_error(exc) from exc
        return True

    def _check_reachable(self, timeout_s: float = 10.0) -> None:
        """Fail in seconds when nothing listens at the address: ``ray.init`` retries a dead GCS for minutes."""
        if self.address is None or self.address == "auto":
            return
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass

    def join_error(self, exc: BaseException) -> Exception:
        """``ray.init`` failed for this target: the cause, the setting that chose it, and the fix."""
        if self.mode == "local":
            return RuntimeError(f"could not start a local Ray runtime ({self.source}): {exc}")
        auth = {k: ("set" if k != "RAY_AUTH_MODE" else os.environ[k]) for k in AUTH_ENV if os.environ.get(k)}
        return ConnectionError(
            f"could not join the Ray cluster at {self.address!r} (from {self.source}): {type(exc).__name__}: "
            f"{_first_line(exc)}. Check that the head is up and reachable from this host (`ray status "
            f"--address {self.address.removeprefix('ray://')}` on a node). If the cluster uses token "
            f"authentication (Ray turns it on when the head finds a token), this process needs RAY_AUTH_MODE=token "
            f"and the cluster's token in RAY_AUTH_TOKEN or a file named by RAY_AUTH_TOKEN_PATH; here: "
            f"{auth or 'none of them set'}. See docs/operations.md, 'Ray cluster'.")


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc`` and of its root cause (Ray wraps an auth failure in a ConnectionError)."""
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    lines = [(str(e).strip() or repr(e)).splitlines()[0][:300] for e in dict.fromkeys((exc, root))]
    return " <- ".join(lines)


def parse_ray_address(value: str, source: str) -> RayTarget:
    """One address string -> its target; a value of no supported form raises naming ``source`` and the forms."""
    v = value.strip()
    low = v.lower()
    if low == OFF:
        return RayTarget("off", None, source)
    if low == LOCAL:
        return RayTarget("local", None, source)
    if low == "auto":
        return RayTarget("cluster", "auto", source)
    if low.startswith("ray://"):
        if _valid_host_port(v[len("ray://"):]):
            return RayTarget("client", v, source)
    elif _valid_host_port(v):
        return RayTarget("cluster", v, source)
    hint = ""
    if "://" in v and not low.startswith("ray://"):
        hint = " (only the ray:// scheme is a Ray address; give a GCS address as plain host:port)"
    elif ":" not in v.removeprefix("ray://"):
        hint = " (the port is required: the head's --port, 6379 by default, or 10001 for ray://)"
    raise RayAddressError(f"{source}={value!r} is not a Ray address{hint}; use one of {FORMS}")


def _valid_host_port(text: str) -> bool:
    m = _HOST_PORT.match(text)
    return bool(m) and 0 < int(m.group("port")) < 65536


def resolve_ray_address(parameter: str | None = None, source: str = "parameter") -> RayTarget:
    """``parameter`` if given, else ``$FOURM_RAY_ADDRESS``, else a local runtime. ``source`` names the
    parameter in error messages (e.g. ``"pseudolabel.ray_address"``)."""
    if parameter is not None and parameter.strip():
        return parse_ray_address(parameter, source)
    env = os.environ.get(ENV, "")
    if env.strip():
        return parse_ray_address(env, ENV)
    return RayTarget("local", None, "default")
