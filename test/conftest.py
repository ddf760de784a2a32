"""Shared fixtures: small generated worlds (generated once per session, never downloaded)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_world():
    """A 400 m generated town (seed 11) in memory."""
    from geoloc_ros.sim.generate import generate_world

    return generate_world(seed=11, size_m=400.0, gsd_m=0.5)


@pytest.fixture(scope="session")
def small_world_dir(small_world, tmp_path_factory):
    """The same town written to disk."""
    out = tmp_path_factory.mktemp("world") / "w11"
    small_world.save(out)
    return out
