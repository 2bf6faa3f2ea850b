"""The single source of truth for the model's inputs.

Everything that knows a feature name, a category or a range reads it from here:
data validation (pandera), the feature encoder, the API's request models, the
model card and the web form. A category is listed once in the whole code base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

FeatureKind = Literal["categorical", "numeric"]

SPECIES: Final = ("Acer saccharum", "Prunus serotina", "Quercus alba", "Quercus rubra")
# Mycorrhizal type of each seedling species: AMF species have no ectomycorrhizal
# colonisation, so EMF is empty for them in the study.
SPECIES_MYCO: Final = {
    "Acer saccharum": "AMF",
    "Prunus serotina": "AMF",
    "Quercus alba": "EMF",
    "Quercus rubra": "EMF",
}
SOIL_SOURCES: Final = (
    "Acer rubrum",
    "Acer saccharum",
    "Populus grandidentata",
    "Prunus serotina",
    "Quercus alba",
    "Quercus rubra",
    "Sterile",
)
STERILE: Final = ("Non-Sterile", "Sterile")
CONSPECIFIC: Final = ("Conspecific", "Heterospecific", "Sterilized")


@dataclass(frozen=True)
class Feature:
    """One model input: its type, what it may hold and what it means."""

    name: str
    kind: FeatureKind
    description: str
    categories: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    trait: bool = False  # measured on the seedling at harvest or death
    nullable: bool = False
    example: Any = None
    whole: bool = False  # a whole number (JSON integer)
    null_means: str = ""  # what an empty value stands for, said in error messages

    def allowed(self) -> str:
        """Human-readable statement of the allowed values, used in error messages."""
        if self.kind == "categorical":
            return "one of " + ", ".join(repr(c) for c in self.categories)
        number = "a whole number" if self.whole else "a number"
        return f"{number} from {self.minimum:g} to {self.maximum:g}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": "string"
            if self.kind == "categorical"
            else ("integer" if self.whole else "number"),
            "description": self.description,
            "trait": self.trait,
            "nullable": self.nullable,
        }
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        else:
            out["minimum"] = self.minimum
            out["maximum"] = self.maximum
            out["unit"] = self.unit
        return out


FEATURES: Final[tuple[Feature, ...]] = (
    Feature(
        "Species",
        "categorical",
        "Species of the seedling.",
        categories=SPECIES,
        example="Quercus rubra",
    ),
    Feature(
        "Light_ISF",
        "numeric",
        "Light level: fraction of intercepted solar radiation at the seedling.",
        minimum=0.0,
        maximum=1.0,
        unit="fraction",
        example=0.106,
    ),
    Feature(
        "Soil",
        "categorical",
        "Species of the adult tree the soil inoculum came from, or Sterile.",
        categories=SOIL_SOURCES,
        example="Prunus serotina",
    ),
    Feature(
        "Sterile",
        "categorical",
        "Whether the soil inoculum was sterilised.",
        categories=STERILE,
        example="Non-Sterile",
    ),
    Feature(
        "Conspecific",
        "categorical",
        "Soil from the same species as the seedling, another species, or sterilised.",
        categories=CONSPECIFIC,
        example="Heterospecific",
    ),
    Feature(
        "AMF",
        "numeric",
        "Arbuscular mycorrhizal colonisation of the roots.",
        minimum=0.0,
        maximum=100.0,
        unit="%",
        trait=True,
        example=24.45,
    ),
    Feature(
        "EMF",
        "numeric",
        "Ectomycorrhizal colonisation of the roots; empty for AMF species "
        "(Acer saccharum, Prunus serotina), required for EMF species (Quercus).",
        minimum=0.0,
        maximum=100.0,
        unit="%",
        trait=True,
        nullable=True,
        null_means="for AMF species",
        example=28.19,
    ),
    Feature(
        "Phenolics",
        "numeric",
        "Phenolic compounds in the tissue (can be negative after blank correction).",
        minimum=-5.0,
        maximum=20.0,
        unit="nmol gallic acid equivalents / mg extract",
        trait=True,
        example=3.36,
    ),
    Feature(
        "Lignin",
        "numeric",
        "Lignin content of the tissue.",
        minimum=0.0,
        maximum=100.0,
        unit="% dry mass",
        trait=True,
        example=24.74,
    ),
    Feature(
        "NSC",
        "numeric",
        "Non-structural carbohydrates in the tissue.",
        minimum=0.0,
        maximum=100.0,
        unit="% dry mass",
        trait=True,
        example=15.01,
    ),
)

FEATURE_NAMES: Final = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: Final = {f.name: f for f in FEATURES}
CATEGORICAL: Final = tuple(f.name for f in FEATURES if f.kind == "categorical")
NUMERIC: Final = tuple(f.name for f in FEATURES if f.kind == "numeric")
TRAITS: Final = tuple(f.name for f in FEATURES if f.trait)
DESIGN: Final = tuple(f.name for f in FEATURES if not f.trait)

TARGET: Final = "Event"
ID: Final = "No"
GROUP: Final = "Plot"
TIME: Final = "Time"
# Outcomes of the study: they are known only after death or harvest and leak the
# target, so they must never become features.
LEAKY: Final = ("Census", "Time", "Harvest", "Alive", "No")
# The other columns of the study's file; accepted and carried along, never used.
STUDY_EXTRA: Final = (
    "Plot",
    "Subplot",
    "Light_Cat",
    "Core",
    "Adult",
    "Myco",
    "SoilMyco",
    "PlantDate",
    "Census",
    "Time",
    "Harvest",
    "Alive",
)

EXAMPLE: Final[dict[str, Any]] = {f.name: f.example for f in FEATURES}

# The study's field plots. Seedlings in some plots died weeks later than like
# seedlings elsewhere (a site effect no other input carries), so the survival
# models take the plot as an optional input: given, the answer is for that plot;
# omitted, for a typical site (any seedling outside the study). The classifiers
# never use it.
PLOTS: Final = tuple(range(1, 19))
SITE: Final = Feature(
    GROUP,
    "numeric",
    "Field plot of the study (a whole number from 1 to 18) the seedling grows in; the "
    "survival models use its site effect. Omit it (or null) for a seedling elsewhere: "
    "the answer is then for a typical site.",
    minimum=PLOTS[0],
    maximum=PLOTS[-1],
    nullable=True,
    example=3,
    whole=True,
    null_means="for a typical site",
)
# What a request instance may hold: the ten features and the optional plot.
INPUT_NAMES: Final = (*FEATURE_NAMES, SITE.name)
INPUTS_BY_NAME: Final = {**FEATURES_BY_NAME, SITE.name: SITE}


@dataclass(frozen=True)
class Rule:
    """A cross-field rule that a valid row obeys."""

    name: str
    columns: tuple[str, ...]
    message: str


RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "emf_matches_species",
        ("Species", "EMF"),
        "EMF is empty for AMF species (Acer saccharum, Prunus serotina) "
        "and required for EMF species (Quercus alba, Quercus rubra)",
    ),
    Rule(
        "sterile_matches_soil",
        ("Soil", "Sterile"),
        "Sterile is 'Sterile' exactly when Soil is 'Sterile'",
    ),
    Rule(
        "conspecific_matches_soil",
        ("Species", "Soil", "Conspecific"),
        "Conspecific is 'Sterilized' for sterile soil, 'Conspecific' when Soil equals "
        "Species, 'Heterospecific' otherwise",
    ),
)


def expected_conspecific(species: str, soil: str) -> str:
    """The Conspecific value implied by the seedling species and the soil source."""
    if soil == "Sterile":
        return "Sterilized"
    return "Conspecific" if soil == species else "Heterospecific"


# Design fields whose value follows from Species and Soil (see RULES): a what-if
# that changes the soil changes them too, and the web form fills them in.
IMPLIED: Final = ("Sterile", "Conspecific")


def implied_values(species: str, soil: str) -> dict[str, str]:
    """The Sterile and Conspecific values the rules require for a species and soil."""
    return {
        "Sterile": "Sterile" if soil == "Sterile" else "Non-Sterile",
        "Conspecific": expected_conspecific(species, soil),
    }


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rule_violations(row: dict[str, Any]) -> list[Rule]:
    """Cross-field rules a single instance breaks (used by the API and the form)."""
    broken: list[Rule] = []
    species, soil = row.get("Species"), row.get("Soil")
    if species in SPECIES_MYCO:
        emf_missing = is_missing(row.get("EMF"))
        if emf_missing != (SPECIES_MYCO[species] == "AMF"):
            broken.append(RULES[0])
    sterile = row.get("Sterile")
    if soil is not None and sterile is not None and (soil == "Sterile") != (sterile == "Sterile"):
        broken.append(RULES[1])
    consp = row.get("Conspecific")
    if (
        species in SPECIES_MYCO
        and soil in SOIL_SOURCES
        and consp
        and consp != expected_conspecific(str(species), str(soil))
    ):
        broken.append(RULES[2])
    return broken


def schema_document() -> dict[str, Any]:
    """The schema as a JSON-able document (served by the API, written into bundles)."""
    return {
        "features": [f.to_dict() for f in FEATURES],
        "site": {**SITE.to_dict(), "used_by": "the survival models only; optional"},
        "rules": [
            {"name": r.name, "columns": list(r.columns), "message": r.message} for r in RULES
        ],
        "target": {
            "name": TARGET,
            "values": [0, 1],
            "meaning": "1 = the seedling died, 0 = harvested or alive at the end (censored)",
        },
    }
