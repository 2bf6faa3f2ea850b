"""Property-based tests from the service's own OpenAPI document.

schemathesis generates valid and invalid requests for every operation (the admin
route with no key, a wrong key and the right one) and checks each answer against
the document: no 5xx, documented status, content type and body schema, invalid data
refused and valid data accepted. The longer run is `python bench/fuzz.py`.
Then Hypothesis properties: any instance valid by the document gets a probability
in [0, 1]; breaking any one of its fields gets a 422 naming that field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treesurv.core import schema

# (examples per operation, generation mode and header set; cases at least): `make test`
# makes some 1,200 requests (about 20 s here), `make test-e2e` some 2,500.
RUNS = [
    pytest.param(20, 1000, marks=pytest.mark.slow, id="short"),
    pytest.param(90, 2000, marks=[pytest.mark.slow, pytest.mark.e2e], id="long"),
]


@pytest.mark.parametrize(("examples", "min_cases"), RUNS)
def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(
    bundle_four: Path, examples: int, min_cases: int
) -> None:
    from bench import fuzz  # schemathesis: imported by the tests that use it

    report = fuzz.run(bundle_four, examples)
    summary = report.summary()
    assert report.findings == [], "\n\n".join(report.findings[:5])
    assert report.server_errors == 0
    assert report.cases >= min_cases, summary
    # Every operation of the document was exercised, and the fuzzing reached the
    # answers that matter: predictions, refusals, auth failures, limits, not ready.
    assert len(report.per_operation) >= 15, summary
    for status in (200, 400, 401, 404, 413, 422, 503):
        assert report.statuses[status] > 0, (status, summary)


@pytest.fixture
def predic_cases(client: TestClient) -> Any:
    """Instances generated from the OpenAPI document (the body of POST /v1/predic)."""
    import schemathesis
    from schemathesis import GenerationMode

    api = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    operation = api["/v1/predic"]["POST"]
    return operation.as_strategy(generation_mode=GenerationMode.POSITIVE).map(lambda c: c.body)


PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def strict(instance: dict[str, Any]) -> dict[str, Any]:
    """The original route's document also allows EMF 0 for AMF species (its clients'
    way of saying none); the new routes take only null for that."""
    if schema.SPECIES_MYCO[instance["Species"]] == "AMF" and instance.get("EMF") == 0:
        return {**instance, "EMF": None}
    return instance


def test_any_valid_instance_gets_a_probability(client: TestClient, predic_cases: Any) -> None:
    @PROPERTY
    @given(instance=predic_cases)
    def check(instance: dict[str, Any]) -> None:
        r = client.post("/v1/predictions", json={"instances": [strict(instance)]})
        assert r.status_code == 200, (instance, r.text)
        [p] = r.json()["predictions"]
        assert 0.0 <= p["death_probability"] <= 1.0
        assert math.isclose(p["survival_probability"], 1.0 - p["death_probability"])
        legacy = client.post("/v1/predic", json=instance)
        assert legacy.status_code == 200 and legacy.json()["Event"] == float(p["predicted_event"])

    check()


def bad_values(feature: schema.Feature) -> st.SearchStrategy[Any]:
    """Values that break one feature on its own (the rules aside)."""
    if feature.kind == "categorical":
        return st.one_of(
            st.text(max_size=20).filter(lambda v: v not in feature.categories),
            st.integers(),
            st.booleans(),
            st.none(),
        )
    assert feature.minimum is not None and feature.maximum is not None
    return st.one_of(
        st.floats(max_value=feature.minimum, exclude_max=True, allow_infinity=False),
        st.floats(min_value=feature.maximum, exclude_min=True, allow_infinity=False),
        st.text(max_size=10),
        st.booleans(),
        st.lists(st.floats(0, 1), max_size=2),
    )


MISSING = object()


@st.composite
def broken(draw: st.DrawFn, valid: Any) -> tuple[dict[str, Any], str]:
    """A valid instance with exactly one field broken (a bad value, or removed)."""
    instance = dict(strict(draw(valid)))
    feature = draw(st.sampled_from(schema.FEATURES))
    removable = not feature.nullable
    value = draw(bad_values(feature) | (st.just(MISSING) if removable else st.nothing()))
    if feature.nullable and value is None:
        value = MISSING if removable else -1.0  # null is a valid EMF
    if value is MISSING:
        instance.pop(feature.name, None)
    else:
        instance[feature.name] = value
    return instance, feature.name


def test_breaking_any_one_field_gets_a_422_naming_it(client: TestClient, predic_cases: Any) -> None:
    @PROPERTY
    @given(case=broken(predic_cases))
    def check(case: tuple[dict[str, Any], str]) -> None:
        instance, name = case
        r = client.post("/v1/predictions", json={"instances": [instance]})
        assert r.status_code == 422, (instance, r.text)
        detail = r.json()["detail"]
        assert detail, r.text
        for item in detail:
            # instances[0].Light_ISF, or instances[0].Species+EMF for a broken rule.
            named = item["field"].removeprefix("instances[0].").split("+")
            assert name in named, (name, item)
            assert item["msg"] and item["allowed"]

    check()
