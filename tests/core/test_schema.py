"""The schema is the one list of features, categories and rules."""

from __future__ import annotations

from treesurv.core import schema


def test_ten_features_with_the_original_api_names() -> None:
    assert schema.FEATURE_NAMES == (
        "Species",
        "Light_ISF",
        "Soil",
        "Sterile",
        "Conspecific",
        "AMF",
        "EMF",
        "Phenolics",
        "Lignin",
        "NSC",
    )
    assert set(schema.TRAITS) == {"AMF", "EMF", "Phenolics", "Lignin", "NSC"}


def test_outcomes_are_never_features() -> None:
    assert not set(schema.LEAKY) & set(schema.FEATURE_NAMES)


def test_example_obeys_every_rule() -> None:
    example = dict(schema.EXAMPLE)
    for f in schema.FEATURES:
        value = example[f.name]
        if f.kind == "categorical":
            assert value in f.categories
        else:
            assert f.minimum is not None and f.maximum is not None
            assert f.minimum <= value <= f.maximum
    assert schema.rule_violations(example) == []


def test_rule_violations_for_instances() -> None:
    row = dict(schema.EXAMPLE, Species="Acer saccharum", Conspecific="Heterospecific")
    assert [r.name for r in schema.rule_violations(row)] == ["emf_matches_species"]
    row["EMF"] = None
    assert schema.rule_violations(row) == []
    row.update(Soil="Sterile")
    assert {r.name for r in schema.rule_violations(row)} == {
        "sterile_matches_soil",
        "conspecific_matches_soil",
    }


def test_every_species_has_a_mycorrhizal_type() -> None:
    assert set(schema.SPECIES_MYCO) == set(schema.SPECIES)
    assert set(schema.SPECIES) <= set(schema.SOIL_SOURCES) | {"Prunus serotina"}


def test_schema_document_lists_categories_once() -> None:
    doc = schema.schema_document()
    by_name = {f["name"]: f for f in doc["features"]}
    assert by_name["Soil"]["categories"] == list(schema.SOIL_SOURCES)
    assert by_name["EMF"]["nullable"] is True
    assert doc["target"]["name"] == "Event"


def test_the_field_plot_is_an_optional_input_beside_the_ten_features() -> None:
    site = schema.schema_document()["site"]
    assert site["name"] == schema.GROUP == "Plot"
    assert (site["type"], site["minimum"], site["maximum"]) == ("integer", 1, 18)
    assert site["nullable"] and "survival" in site["used_by"]
    assert schema.SITE.allowed() == "a whole number from 1 to 18"
    # Not one of the ten features: the classifiers, drift and batch scoring never see it.
    assert schema.SITE.name not in schema.FEATURE_NAMES
    assert (*schema.FEATURE_NAMES, "Plot") == schema.INPUT_NAMES
    assert tuple(range(1, 19)) == schema.PLOTS
