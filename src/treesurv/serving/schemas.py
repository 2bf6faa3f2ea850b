"""Request and response models of the API, generated from `treesurv.core.schema`.

`Instance` is built field by field from `schema.FEATURES`: categories become
`Literal[...]`, ranges `ge`/`le`, and the cross-field rules run through
`schema.rule_violations`. No category or range is written here a second time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)
from pydantic.config import JsonDict, JsonValue
from pydantic_core import PydanticCustomError

from treesurv.core import schema

RULE_ERROR = "rule_violation"


def _field(feature: schema.Feature, omittable: bool = False) -> tuple[Any, Any]:
    """The pydantic type and Field of one feature; an omittable one defaults to None
    (an explicit null is still refused unless the feature is nullable)."""
    common: dict[str, Any] = {"description": feature.description, "examples": [feature.example]}
    if feature.kind == "categorical":
        return Literal[feature.categories], Field(..., **common)
    if feature.unit:
        common["description"] = f"{feature.description} Unit: {feature.unit}."
    number: dict[str, Any] = {
        "ge": feature.minimum,
        "le": feature.maximum,
        "strict": True,  # a JSON number; "0.1" or true is a wrong type, not a value
    }
    base: Any = int if feature.whole else float
    kind: Any = base | None if feature.nullable else base
    if feature.whole:  # e.g. the field plot: 3.5, "3" or true are wrong types
        kind = Annotated[kind, BeforeValidator(_whole)]
    else:
        number["allow_inf_nan"] = False
    if feature.nullable:
        return kind, Field(None, **number, **common)
    return kind, Field(None if omittable else ..., **number, **common)


def _whole(value: Any) -> Any:
    # JSON Schema's "integer" includes 3.0 (schema-driven clients send it); a
    # fraction, text or a boolean stays what it is and fails the strict int.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Traits every full-model instance gives; EMF follows the species (a schema rule).
REQUIRED_TRAITS = tuple(t for t in schema.TRAITS if not schema.FEATURES_BY_NAME[t].nullable)
# Trait presence as JSON Schema: all required traits given (full model) or none (planning).
FULL_MODE: JsonDict = {"required": list(REQUIRED_TRAITS)}
PLANNING_MODE: JsonDict = {"not": {"anyOf": [{"required": [t]} for t in REQUIRED_TRAITS]}}


def rule_branches(planning: bool = False, legacy: bool = False) -> list[JsonValue]:
    """The cross-field rules as JSON Schema: one branch per Species x Soil pair, fixing
    what the rules imply (Sterile, Conspecific, whether EMF is given). The OpenAPI
    document thus says exactly which instances are valid, so generated clients and
    schema-driven fuzzers (schemathesis) see the same rules as `rule_violations`.

    With `planning`, each pair has two branches: all traits given (full model) or
    none of them (planning model, where EMF is absent too). With `legacy` (the
    original API), EMF 0 also stands for "no EMF" for AMF species."""
    non_sterile = next(s for s in schema.STERILE if s != "Sterile")
    branches: list[JsonValue] = []
    for species in schema.SPECIES:
        amf = schema.SPECIES_MYCO[species] == "AMF"
        for soil in schema.SOIL_SOURCES:
            design: dict[str, JsonValue] = {
                "Species": {"const": species},
                "Soil": {"const": soil},
                "Sterile": {"const": "Sterile" if soil == "Sterile" else non_sterile},
                "Conspecific": {"const": schema.expected_conspecific(species, soil)},
            }
            no_emf: JsonDict = (
                {"anyOf": [{"type": "null"}, {"const": 0}]} if legacy else {"type": "null"}
            )
            full: JsonDict = {
                "properties": {**design, "EMF": no_emf if amf else {"type": "number"}}
            }
            if not amf:
                full["required"] = ["EMF"]
            if not planning:
                branches.append(full)
                continue
            full["required"] = [*REQUIRED_TRAITS, *full.get("required", [])]  # type: ignore[misc]
            branches.append(full)
            branches.append({"properties": {**design, "EMF": {"type": "null"}}, **PLANNING_MODE})
    return branches


class _InstanceBase(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [schema.EXAMPLE], "anyOf": rule_branches()},
    )

    def _broken_rules(self) -> list[schema.Rule]:
        return schema.rule_violations(self.__dict__)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Any:
        broken = self._broken_rules()
        if broken:
            columns = sorted({c for rule in broken for c in rule.columns}, key=_order)
            raise PydanticCustomError(
                RULE_ERROR,
                "{values}: {rules}",
                {
                    "columns": ",".join(columns),
                    "values": ", ".join(f"{c}={self.__dict__[c]!r}" for c in columns),
                    "rules": "; ".join(rule.message for rule in broken),
                },
            )
        return self


def _order(name: str) -> int:
    return schema.FEATURE_NAMES.index(name)


def _instance_model() -> type[BaseModel]:
    fields = {f.name: _field(f) for f in schema.FEATURES}
    return create_model(  # type: ignore[call-overload]
        "Instance",
        __base__=_InstanceBase,
        __doc__="One seedling: the ten inputs of the model.",
        **fields,
    )


class _PlanningInstanceBase(_InstanceBase):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [schema.EXAMPLE],
            "anyOf": rule_branches(planning=True),
        }
    )

    def _broken_rules(self) -> list[schema.Rule]:
        broken = super()._broken_rules()
        if any(self.__dict__[t] is None for t in schema.TRAITS if t != "EMF"):
            # No traits (planning) or some missing (refused, naming them): the rule
            # tying EMF to the species is not what the client needs to hear.
            broken = [r for r in broken if not set(r.columns) & set(schema.TRAITS)]
        return broken


def _planning_instance_model() -> type[BaseModel]:
    # Traits may be omitted: an instance without any is answered by the planning model.
    fields = {f.name: _field(f, omittable=f.trait) for f in schema.FEATURES}
    fields[schema.SITE.name] = _field(schema.SITE)
    return create_model(  # type: ignore[call-overload]
        "PredictionInstance",
        __base__=_PlanningInstanceBase,
        __doc__=(
            "One seedling: the five design fields, and either all five traits "
            f"({', '.join(schema.TRAITS)}; EMF only for EMF species) for the full model, "
            "or none of them for the planning model; optionally its field plot "
            f"({schema.SITE.name}, used by the survival models)."
        ),
        **fields,
    )


class _LegacyInstanceBase(_InstanceBase):
    """The original API's instance: its clients sent EMF 0 for the AMF species, which
    have no ectomycorrhiza; there 0, null and an omitted EMF all mean "no EMF"."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [schema.EXAMPLE], "anyOf": rule_branches(legacy=True)}
    )

    @model_validator(mode="before")
    @classmethod
    def _emf_zero_means_none(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and isinstance(data.get("Species"), str)
            and schema.SPECIES_MYCO.get(data["Species"]) == "AMF"
            and type(data.get("EMF")) in (int, float)
            and data["EMF"] == 0
        ):
            return {**data, "EMF": None}
        return data


def _legacy_instance_model() -> type[BaseModel]:
    fields = {f.name: _field(f) for f in schema.FEATURES}
    return create_model(  # type: ignore[call-overload]
        "LegacyInstance",
        __base__=_LegacyInstanceBase,
        __doc__=(
            "One seedling, as the original API took it: the ten inputs; for AMF species "
            "(Acer saccharum, Prunus serotina) EMF is 0, null or omitted."
        ),
        **fields,
    )


if TYPE_CHECKING:
    Instance: TypeAlias = _InstanceBase
    PredictionInstance: TypeAlias = _InstanceBase
    LegacyInstance: TypeAlias = _InstanceBase
else:
    Instance = _instance_model()
    PredictionInstance = _planning_instance_model()
    LegacyInstance = _legacy_instance_model()

MAX_VARIANTS = 50  # values of one what-if


def _value_schema(feature: schema.Feature) -> JsonDict:
    if feature.kind == "categorical":
        return {"enum": list(feature.categories)}
    return {"type": "number", "minimum": feature.minimum, "maximum": feature.maximum}


def compare_branches() -> list[JsonValue]:
    """What a what-if may vary, as JSON Schema: one branch per field. Sterile and
    Conspecific follow Species and Soil, so they are never varied; a trait only when
    the instance gives the traits (the full model answers)."""
    branches: list[JsonValue] = []
    for feature in schema.FEATURES:
        if feature.name in schema.IMPLIED:
            continue
        values: JsonDict = {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_VARIANTS,
            "items": _value_schema(feature),
        }
        properties: JsonDict = {
            "vary": {"const": feature.name},
            "values": {"anyOf": [values, {"type": "null"}]},
        }
        if feature.trait:
            properties["instance"] = FULL_MODE
        branches.append({"properties": properties})
    return branches


# A request is answered by one model: its instances all give the traits or all omit them.
ONE_MODEL: JsonDict = {"anyOf": [{"items": FULL_MODE}, {"items": PLANNING_MODE}]}
DESIGN_EXAMPLE: dict[str, Any] = {k: schema.EXAMPLE[k] for k in schema.DESIGN}
Days = Annotated[float, Field(strict=True, allow_inf_nan=False)]
ModelName = Literal["full", "planning"]


class PredictionRequest(BaseModel):
    """One to `max_batch` seedlings, answered in the same order."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"instances": [schema.EXAMPLE]}]}
    )

    instances: list[PredictionInstance] = Field(..., min_length=1, json_schema_extra=ONE_MODEL)
    horizon_days: Days | None = Field(
        None,
        description="With it, death_probability is P(dead by this day) from the survival "
        "model (0 to the study's follow-up, see GET /v1/model); without it, P(death during "
        "the study) from the classifier.",
        examples=[60],
    )


class SurvivalRequest(BaseModel):
    """Seedlings and the days to give their survival probability on."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"instances": [schema.EXAMPLE], "horizons": [30, 60]}]},
    )

    instances: list[PredictionInstance] = Field(..., min_length=1, json_schema_extra=ONE_MODEL)
    horizons: list[Days] | None = Field(
        None,
        description="Days from 0 to the study's follow-up, each once (answered sorted by day); "
        "default: the bundle's grid up to the end of the study.",
        examples=[[30, 60, 90]],
    )


class CompareRequest(BaseModel):
    """One seedling and the field to vary: its risk under each option."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"instance": DESIGN_EXAMPLE, "vary": "Soil"}],
            "anyOf": compare_branches(),
        },
    )

    instance: PredictionInstance
    vary: str = Field(
        description="The field to vary: a categorical one goes over all its categories, "
        "a numeric one over `values` or `steps` points of the observed range.",
        examples=["Soil"],
    )
    values: list[Any] | None = Field(
        None, description="The values to try (default: all categories / an even grid)."
    )
    steps: int | None = Field(
        None,
        description=f"Grid points for a numeric field (default 11), 2 to {MAX_VARIANTS}.",
        examples=[11],
        json_schema_extra={"minimum": 2, "maximum": MAX_VARIANTS},
    )
    horizon_days: Days | None = Field(
        None, description="Risk = P(dead by this day) from the survival model.", examples=[60]
    )


class Prediction(BaseModel):
    death_probability: float = Field(description="P(the seedling dies), calibrated.")
    survival_probability: float = Field(description="1 - death_probability.")
    predicted_event: Literal[0, 1] = Field(
        description="1 when death_probability reaches the model's decision threshold."
    )


class PredictionResponse(BaseModel):
    model_version: str
    model: ModelName = Field(
        "full", description="full: all ten inputs; planning: design fields only (no traits)."
    )
    horizon_days: float | None = None
    predictions: list[Prediction]


class SurvivalPoint(BaseModel):
    day: float
    survival_probability: float


class SurvivalPrediction(BaseModel):
    survival: list[SurvivalPoint] = Field(description="P(alive on each day), non-increasing.")
    median_survival_days: float | None = Field(
        description="First day with P(alive) <= 0.5; null if beyond the study's follow-up."
    )


class SurvivalResponse(BaseModel):
    model_version: str
    model: ModelName
    predictions: list[SurvivalPrediction]


class Variant(BaseModel):
    value: Any
    death_probability: float | None = Field(description="null when the variant breaks a rule")
    best: bool = False
    error: str | None = None


class CompareResponse(BaseModel):
    model_version: str
    model: ModelName
    vary: str
    horizon_days: float | None
    best: Any = Field(description="The value with the lowest death probability.")
    variants: list[Variant]


class LegacyResponse(BaseModel):
    """The original API's answer: 1.0 when the seedling is predicted to die."""

    Event: float = Field(description="1.0 (dies) or 0.0 (survives).", examples=[1.0])


class ModelInfo(BaseModel):
    name: str
    version: str
    created: str | None
    decision_threshold: float
    metrics: dict[str, Any]
    feature_schema: dict[str, Any] = Field(
        serialization_alias="schema", description="Features, categories, ranges and rules."
    )
    card: str = Field(description="The model card (Markdown).")
    manifest: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    model_version: str | None = None
    reason: str | None = Field(None, description="Why the service is not ready.")
    last_reload_error: str | None = Field(
        None, description="The last refused bundle (the previous model kept serving)."
    )


class ReloadResult(BaseModel):
    status: Literal["reloaded", "unchanged"]
    model_version: str
    previous_version: str | None


class ErrorItem(BaseModel):
    field: str = Field(description="Where the problem is, e.g. instances[0].Species.")
    value: Any = Field(None, description="The value received (absent: null).")
    allowed: str = Field(description="What would be accepted.")
    msg: str
    type: str
    loc: list[str | int]


class ErrorResponse(BaseModel):
    detail: list[ErrorItem] | str
