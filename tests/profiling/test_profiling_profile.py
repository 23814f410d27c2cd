"""The Profile artifact: JSON round trip, NaN as null, queries, malformed files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hybridserve.errors import HybridServeError
from hybridserve.profiling import (
    DeviceInfo,
    LinearFit,
    ModelFits,
    ModelProfile,
    Profile,
    ProfileRow,
    UtilisationFit,
    load_profile,
)

pytestmark = pytest.mark.unit

ROW_FIELDS = {
    "batch_size", "latency_ms_median", "latency_ms_p90", "throughput_rps", "memory_bytes",
    "utilisation", "energy_j_per_request", "repeats",
}  # fmt: skip


def _model(name: str = "m", energy: dict[int, float] | None = None) -> ModelProfile:
    energy = energy or {1: 1.0, 4: 0.25, 16: 0.0625}
    rows = tuple(
        ProfileRow(b, 1.0 + b, 1.5 + b, 1000.0 * b / (1.0 + b), 1000 + 10 * b, 0.5, e, 7)
        for b, e in sorted(energy.items())
    )
    fits = ModelFits(
        LinearFit(1.0, 1.0, 0.0), LinearFit(1000.0, 10.0, 0.0), UtilisationFit(2, 3, 0)
    )
    return ModelProfile(name, 10, 20, 40, rows, fits, energy.get(4, math.nan), 4)


def _profile(*models: ModelProfile) -> Profile:
    return Profile(
        family="fam",
        device=DeviceInfo("cpu", "Test CPU", 2, 2**30, "2.x"),
        meter={"source": "modelled", "watts_per_core": 4.375},
        memory_method="test",
        serving_batch_size=4,
        models=models or (_model(),),
        settings={"batch_sizes": (1, 4, 16), "nan": math.nan},
        created="2025-01-01T00:00:00+00:00",
    )


def test_round_trip_and_json_form(tmp_path: Path) -> None:
    profile = _profile(_model("a"), _model("b", {1: 2.0, 4: math.nan, 16: 0.5}))
    path = tmp_path / "profile.json"
    profile.save(path)
    body = json.loads(path.read_text())
    assert body["format"] == "hybridserve/profile" and body["version"] == 1
    assert set(body) >= {"family", "device", "meter", "memory_method", "serving_batch_size"}
    assert set(body["device"]) == {"type", "name", "cores", "memory_bytes", "torch"}
    model = body["models"][1]
    assert set(model) >= {"name", "params", "macs", "weight_bytes", "rows", "fits"}
    assert set(model["rows"][0]) == ROW_FIELDS
    assert set(model["fits"]["utilisation"]) >= {"beta", "gamma", "rmse"}
    assert model["energy_j_per_request"] is None  # NaN is written as null
    loaded = load_profile(path)
    assert loaded.models[0] == profile.models[0]
    assert math.isnan(loaded.model("b").energy_j_per_request())
    assert loaded.energy_source == "modelled"


def test_queries() -> None:
    m = _model()
    assert m.latency_ms(3) == pytest.approx(4.0)
    assert m.throughput_rps(3) == pytest.approx(3000.0 / 4.0)
    assert m.memory_bytes(2) == pytest.approx(1020.0)
    assert m.memory_bytes(0) >= m.weight_bytes
    assert m.utilisation(2) == pytest.approx(4.0 / (4 + 4 + 3))
    # energy halves per doubling here: log-log interpolation is exact between rows
    assert m.energy_j_per_request(2) == pytest.approx(0.5)
    assert m.energy_j_per_request(8) == pytest.approx(0.125)
    assert m.energy_j_per_request(1000) == pytest.approx(0.0625)  # clamped beyond the rows
    assert m.energy_j_per_request() == 0.25  # at the serving batch size
    assert m.row(4).repeats == 7
    with pytest.raises(HybridServeError, match="batch size 3"):
        m.row(3)


def test_unknown_model_names_the_model() -> None:
    with pytest.raises(HybridServeError, match="'nope'"):
        _profile().model("nope")


def test_malformed_files_are_user_errors(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    body = _profile().to_dict()
    del body["models"][0]["fits"]
    path.write_text(json.dumps({"format": "hybridserve/profile", "version": 1, **body}))
    with pytest.raises(HybridServeError, match="fits"):
        load_profile(path)
    path.write_text(json.dumps({"format": "hybridserve/plan", "version": 1}))
    with pytest.raises(HybridServeError, match="profile"):
        load_profile(path)
    with pytest.raises(HybridServeError, match="not found"):
        load_profile(tmp_path / "absent.json")
