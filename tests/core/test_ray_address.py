"""The one place that resolves the Ray address: parameter -> FOURM_RAY_ADDRESS -> local, every supported
form, a clear error for anything else, and a dead address that fails in seconds instead of minutes."""

from __future__ import annotations

import time

import pytest

from fourm_core.ray_address import ENV, RayAddressError, parse_ray_address, resolve_ray_address
from tests.servers import free_port


@pytest.mark.parametrize("value,mode,address", [
    ("10.0.0.5:6379", "cluster", "10.0.0.5:6379"), ("ray-head.internal:6379", "cluster", "ray-head.internal:6379"),
    ("[::1]:6379", "cluster", "[::1]:6379"), ("auto", "cluster", "auto"), ("AUTO", "cluster", "auto"),
    ("ray://head:10001", "client", "ray://head:10001"), ("local", "local", None), (" off ", "off", None)])
def test_supported_forms(value, mode, address):
    t = parse_ray_address(value, "parameter")
    assert (t.mode, t.address) == (mode, address)


@pytest.mark.parametrize("value,hint", [("head", "the port is required"), ("ray://head", "the port is required"),
                                        ("http://head:6379", "only the ray:// scheme"), ("head:99999", "use one of"),
                                        ("head:port", "use one of")])
def test_bad_forms_name_the_setting_and_the_forms(value, hint, monkeypatch):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(RayAddressError, match=hint) as err:
        resolve_ray_address(None)
    assert f"FOURM_RAY_ADDRESS={value!r}" in str(err.value) and "'host:port'" in str(err.value)


def test_parameter_then_environment_then_local(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert (resolve_ray_address(None).mode, resolve_ray_address(None).source) == ("local", "default")
    monkeypatch.setenv(ENV, "head:6379")
    assert resolve_ray_address(None) == parse_ray_address("head:6379", ENV)
    assert resolve_ray_address("").source == ENV
    got = resolve_ray_address("other:6380", "pseudolabel.ray_address")
    assert (got.address, got.source) == ("other:6380", "pseudolabel.ray_address")
    assert resolve_ray_address("off").uses_ray is False


def test_init_kwargs_per_mode():
    local = parse_ray_address("local", "x").init_kwargs()
    assert "address" not in local and "PYTHONPATH" in local["runtime_env"]["env_vars"]
    assert parse_ray_address("h:1", "x").init_kwargs()["address"] == "h:1"
    with pytest.raises(RayAddressError):
        parse_ray_address("off", "x").init_kwargs()


def test_dead_address_fails_fast_with_the_fix(monkeypatch):
    """ray.init retries an unreachable GCS for minutes; the join checks the port first."""
    import ray

    # the session's local Ray (if an earlier test started it) would be reused as it is: look past it
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        parse_ray_address(f"127.0.0.1:{free_port()}", ENV).join()
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert "from FOURM_RAY_ADDRESS" in msg and "RAY_AUTH_MODE=token" in msg and "docs/operations.md" in msg
