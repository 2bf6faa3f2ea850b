"""MkDocs hook: the tables and reference lists of the site, generated from the code.

A page asks for a generated block with a marker on a line of its own:

    <!-- gen: settings -->                  the service's settings (pydantic-settings class)
    <!-- gen: endpoints -->                 the HTTP endpoints (the app's OpenAPI document)
    <!-- gen: params -->                    params.yaml's keys (the typed Params class)
    <!-- gen: cli -->                       every `treesurv` command and option (Typer)
    <!-- gen: metrics -->                   the model's figures (metrics.json)
    <!-- gen: targets -->                   held-out figures against the brief's targets
    <!-- gen: model-card -->                the pipeline's model card (reports/model_card.md)
    <!-- gen: explore -->                   the study report (reports/explore/explore.json)
    <!-- gen: bench SECTION -->             benchmark tables (bench/results.json)
    <!-- gen: reference treesurv.LAYER -->  one mkdocstrings block per module of a package
    <!-- gen: layout -->                    each layer's modules and what they hold
    <!-- gen: contracts -->                 the import-linter contracts (pyproject.toml)
    <!-- gen: tests -->                     every test module and what it tests

so nothing the code already says is copied by hand. An unknown marker, or a
generator that fails, stops the build (`mkdocs build --strict` runs in `make docs`).
Nothing here touches the network: the app is built without a model bundle and only
its OpenAPI document is read.

It also checks what is written by hand: the README's links, figures and command tree,
every repository path and every `treesurv.…` name a page gives, and that each secret
the workflows read is documented.
"""

from __future__ import annotations

import json
import logging
import pkgutil
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer.core

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# Warnings under "mkdocs." count in strict mode: a stale fact stops the build.
log = logging.getLogger("mkdocs.hooks.treesurv")
MARKER = re.compile(r"^<!--[ \t]*gen:[ \t]*([\w-]+)[ \t]*(.*?)[ \t]*-->[ \t]*$", re.MULTILINE)


class GenerationError(RuntimeError):
    """A marker the hook does not know, or a source it cannot read."""


# --- helpers -------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A value as a Markdown table cell: pipes escaped outside code spans (inside them
    the tables extension leaves pipes alone, and a backslash would show)."""
    text = str(value).replace("\n", " ")
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def _code(value: Any) -> str:
    text = str(value)
    return f"`{text}`" if text else ""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _num(value: Any, digits: int = 3, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    return re.sub(r"\b(?:typing|pathlib|pydantic\.types|collections\.abc)\.", "", text)


def _load_json(relative: str) -> dict[str, Any]:
    path = ROOT / relative
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GenerationError(f"{relative}: {exc}") from exc


# --- the service -----------------------------------------------------------------------


def gen_settings(_: str) -> str:
    from pydantic import SecretStr

    from treesurv.serving.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    rows = []
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.get_default()
        if isinstance(default, SecretStr):
            default = "(secret)"
        shown = "unset" if default is None else _code(json.dumps(default, default=str))
        if isinstance(default, str | Path):
            shown = _code(default)
        rows.append(
            [
                _code(f"{prefix}{name}".upper()),
                _code(_type_name(field.annotation)),
                shown,
                field.description or "",
            ]
        )
    return _table(["environment variable", "type", "default", "what"], rows)


def _openapi() -> dict[str, Any]:
    from treesurv.serving.app import create_app
    from treesurv.serving.settings import Settings

    # No bundle: the document is what a schema-driven client sees before a model is
    # loaded (the survival horizons then have no upper bound: it comes from the bundle).
    with tempfile.TemporaryDirectory() as empty:
        settings = Settings(
            model_dir=Path(empty) / "no-bundle",
            watch_interval=0,
            prediction_log_dir=None,
            drift_report=None,
        )
        return create_app(settings).openapi()


def gen_endpoints(_: str) -> str:
    spec = _openapi()
    by_tag: dict[str, list[list[str]]] = {}
    for path, operations in spec.get("paths", {}).items():
        for method, op in operations.items():
            if method.lower() not in {"get", "post", "put", "patch", "delete"}:
                continue
            tag = (op.get("tags") or ["other"])[0]
            summary = op.get("summary", "")
            description = (op.get("description") or "").strip()
            first = re.split(r"(?<=[.!?])\s", description.replace("\n", " "), maxsplit=1)[0]
            what = summary if not first or first == summary else f"{summary}: {first}"
            if op.get("deprecated"):
                what = f"**deprecated** — {what}"
            statuses = ", ".join(sorted(op.get("responses", {})))
            by_tag.setdefault(tag, []).append([_code(method.upper()), _code(path), what, statuses])
    info = spec.get("info", {})
    out = [
        f"From the OpenAPI document of `treesurv` {info.get('version', '')} "
        f"({sum(len(v) for v in by_tag.values())} operations)."
    ]
    for tag, rows in by_tag.items():
        out += [
            f"### {tag[:1].upper()}{tag[1:]}",
            _table(["method", "path", "what", "answers"], rows),
        ]
    return "\n\n".join(out)


# --- the pipeline's parameters ---------------------------------------------------------


def _yaml_comments() -> dict[str, str]:
    """`section.key` -> the comment written beside it in params.yaml."""
    comments: dict[str, str] = {}
    section = ""
    for line in (ROOT / "params.yaml").read_text().splitlines():
        top = re.match(r"^(\w+):", line)
        if top:
            section = top.group(1)
        item = re.match(r"^(\s*)(\w+):[^#]*#\s*(.+)$", line)
        if item:
            key = item.group(2) if not item.group(1) else f"{section}.{item.group(2)}"
            if len(item.group(1)) <= 2:
                comments[key] = item.group(3).strip()
    return comments


def gen_params(_: str) -> str:
    import yaml
    from pydantic import BaseModel

    from treesurv.core.config import Params

    given = yaml.safe_load((ROOT / "params.yaml").read_text()) or {}
    comments = _yaml_comments()

    def shown(value: Any) -> str:
        if isinstance(value, dict) and value:
            return "(mapping: see params.yaml)"
        if isinstance(value, tuple | list):
            value = list(value)
        return _code(json.dumps(value, default=str))

    rows: list[list[str]] = []
    for name, field in Params.model_fields.items():
        if field.exclude:
            continue
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = annotation()
            doc = (annotation.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            for key, sub in annotation.model_fields.items():
                default = getattr(section, key)
                value = _get(given, f"{name}.{key}")
                rows.append(
                    [
                        _code(f"{name}.{key}"),
                        _code(_type_name(sub.annotation)),
                        shown(default),
                        "" if value is None else shown(value),
                        comments.get(f"{name}.{key}", "")
                        or (doc if key == next(iter(annotation.model_fields)) else ""),
                    ]
                )
        elif name == "paths":
            rows.append(
                [
                    _code("paths.*"),
                    "paths",
                    "one per pipeline file",
                    "(see params.yaml)",
                    "templated into dvc.yaml; mirrored by `treesurv.core.config.DEFAULT_PATHS`",
                ]
            )
        else:
            default = field.get_default(call_default_factory=True)
            rows.append(
                [
                    _code(name),
                    _code(_type_name(annotation)),
                    shown(default),
                    shown(given.get(name)),
                    comments.get(name, ""),
                ]
            )
    return _table(["key", "type", "default (code)", "params.yaml", "what"], rows)


# --- the command line ------------------------------------------------------------------


def _command_group(app: Any) -> typer.core.TyperGroup:
    """The click command group behind the Typer app (its subcommands can be listed)."""
    import typer.core
    import typer.main

    root = typer.main.get_command(app)
    if not isinstance(root, typer.core.TyperGroup):
        raise TypeError(f"the treesurv app is a {type(root).__name__}, not a command group")
    return root


def gen_cli(_: str) -> str:
    # Duck-typed below: Typer ships its own copy of click, so no isinstance checks on
    # click's classes (only on Typer's group, for the root).
    from treesurv.cli.main import app

    root = _command_group(app)
    out: list[str] = []

    def context(command: Any, name: str) -> Any:
        return command.context_class(command, info_name=name)

    def is_group(command: Any) -> bool:
        return hasattr(command, "list_commands")

    def walk(command: Any, path: list[str], level: int) -> None:
        name = " ".join(path)
        ctx = context(command, name)
        help_text = (command.help or command.short_help or "").strip()
        out.append(f"{'#' * level} `{name}`\n")
        if help_text:
            out.append(help_text.split("\n\n")[0].replace("\n", " ") + "\n")
        usage = [name, "[OPTIONS]"]
        rows = []
        for param in command.params:
            if getattr(param, "hidden", False) or param.name in {
                "install_completion",
                "show_completion",
            }:
                continue
            if param.param_type_name == "argument":
                metavar = (param.name or "").upper()
                usage.append(metavar if param.required else f"[{metavar}]")
                names, kind = metavar, "argument"
            else:
                names, kind = ", ".join(param.opts + param.secondary_opts), "option"
            default = param.default
            flag_off = getattr(param, "is_flag", False) and not default
            if callable(default) or default is None or default in ((), []) or flag_off:
                default_text = ""
            else:
                default_text = _code(default)
            what = (getattr(param, "help", "") or "").replace("\n", " ")
            envvar = getattr(param, "envvar", None)
            for var in [envvar] if isinstance(envvar, str) else envvar or []:
                what += f" Environment: `{var}`."
            rows.append([_code(names), kind, default_text, what])
        if is_group(command):
            usage.append("COMMAND [ARGS]...")
        out.append(f"```text\n{' '.join(usage)}\n```\n")
        if rows:
            out.append(_table(["name", "kind", "default", "what"], rows) + "\n")
        if is_group(command):
            for sub_name in command.list_commands(ctx):
                sub = command.get_command(ctx, sub_name)
                if sub is not None and not getattr(sub, "hidden", False):
                    walk(sub, [*path, sub_name], min(level + 1, 4))

    # The top-level commands under their help panels, in the order of the workflow.
    ctx = context(root, "treesurv")
    panels: dict[str, list[str]] = {}
    for sub_name in root.list_commands(ctx):
        sub = root.get_command(ctx, sub_name)
        if sub is not None and not getattr(sub, "hidden", False):
            panel = getattr(sub, "rich_help_panel", None) or "Commands"
            panels.setdefault(panel, []).append(sub_name)
    for panel, names in panels.items():
        out.append(f"## {panel}\n")
        for sub_name in names:
            walk(root.get_command(ctx, sub_name), ["treesurv", sub_name], 3)
    return "\n".join(out)


# --- the model's figures ---------------------------------------------------------------

TARGETS = {  # the design brief's "numbers to beat" on held-out rows
    "roc_auc": (">=", 0.93),
    "brier": ("<=", 0.105),
    "accuracy": (">=", 0.85),
}


def gen_targets(_: str) -> str:
    metrics = _load_json("metrics.json")
    rows = []
    for key, label in (("roc_auc", "ROC AUC"), ("brier", "Brier score"), ("accuracy", "accuracy")):
        value = _get(metrics, f"test.{key}")
        op, target = TARGETS[key]
        met = value is not None and (value >= target if op == ">=" else value <= target)
        rows.append(
            [
                label,
                _num(value),
                f"{'≥' if op == '>=' else '≤'} {target}",
                "met" if met else "**not met**",
            ]
        )
    n = _get(metrics, "test.rows")
    return _table([f"held-out test split ({_num(n)} rows)", "model", "target", ""], rows)


def gen_metrics(_: str) -> str:
    metrics = _load_json("metrics.json")
    cls_rows = []
    for prefix, model in (("", "full (ten features)"), ("planning.", "planning (design only)")):
        for split, label in (
            ("cv", "CV, stratified"),
            ("cv_group", "CV, grouped by plot"),
            ("test", "held-out test"),
        ):
            m = _get(metrics, f"{prefix}{split}") or {}
            cls_rows.append(
                [
                    model,
                    label,
                    _num(m.get("rows")),
                    _num(m.get("roc_auc")),
                    _num(m.get("brier")),
                    _num(m.get("log_loss")),
                    _num(m.get("accuracy")),
                    _num(m.get("ece")),
                ]
            )
    surv_rows = []
    for variant in ("full", "planning"):
        s = _get(metrics, f"survival.{variant}") or {}
        for split, label in (("cv", "CV, stratified"), ("test", "held-out test")):
            m = s.get(split) or {}
            cal = _get(s, f"calibration_error.{split}") or {}
            surv_rows.append(
                [
                    f"{variant} ({s.get('model', '?')})",
                    label,
                    _num(m.get("rows")),
                    _num(m.get("concordance")),
                    _num(m.get("concordance_without_plot")),
                    _num(m.get("integrated_brier")),
                    _num(m.get("integrated_brier_km")),
                    " / ".join(_num(v) for v in cal.values()) or "–",
                ]
            )
    days = " / ".join(
        k.removeprefix("day_") for k in (_get(metrics, "survival.full.calibration_error.cv") or {})
    )
    return "\n\n".join(
        [
            "**Classifiers** (P(death during the study)):",
            _table(
                ["model", "evaluation", "rows", "ROC AUC", "Brier", "log loss", "accuracy", "ECE"],
                cls_rows,
            ),
            "**Survival models** (P(alive on day t); longest follow-up "
            f"{_num(_get(metrics, 'survival.max_days'), 1)} days):",
            _table(
                [
                    "model",
                    "evaluation",
                    "rows",
                    "concordance",
                    "concordance without the plot",
                    "integrated Brier",
                    "IBS of one Kaplan-Meier curve",
                    f"calibration error, days {days}",
                ],
                surv_rows,
            ),
        ]
    )


def gen_model_card(_: str) -> str:
    path = ROOT / "reports" / "model_card.md"
    try:
        text = path.read_text()
    except OSError as exc:
        raise GenerationError(f"reports/model_card.md: {exc}") from exc
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]  # the page has its own title
    # One level down, so the card sits under the page's "Model card" heading.
    return "\n".join(("#" + line) if line.startswith("#") else line for line in lines)


# The study report's folder; its figures are added to the site beside the page.
EXPLORE = ROOT / "reports" / "explore"


def gen_explore(_: str) -> str:
    """The study report as Markdown: each section's figure, sentence, note and table,
    from the JSON the pipeline's `explore` stage wrote (figures: `on_files`)."""
    report = _load_json("reports/explore/explore.json")
    parts = []
    for s in report["sections"]:
        if not (EXPLORE / s["figure"]).is_file():
            raise GenerationError(f"reports/explore/{s['figure']}: missing")
        table = s["table"]
        rows = [[_report_cell(v) for v in row] for row in table["rows"]]
        parts += [
            f"## {s['title']}",
            f"![{s['title']}]({s['figure']})",
            f"**{s['sentence']}**",
            *([s["note"]] if s.get("note") else []),
            _table([str(c) for c in table["columns"]], rows),
        ]
    return "\n\n".join(parts)


def _report_cell(value: Any) -> str:
    """A report table's cell as its page shows it (four significant digits)."""
    if isinstance(value, float):
        return f"{value:,.4g}"
    return _num(value)


def on_files(files: Any, config: Any, **_: Any) -> Any:
    """The study report's figures, at the site's root beside the page that shows them."""
    from mkdocs.structure.files import File

    for path in sorted(EXPLORE.glob("explore-*.png")):
        files.append(File.generated(config, path.name, abs_src_path=str(path)))
    return files


# --- benchmarks ------------------------------------------------------------------------


def _latency(m: dict[str, Any]) -> str:
    return (
        f"p50 {_num(m.get('p50_ms'), 2)} ms, p99 {_num(m.get('p99_ms'), 2)} ms, "
        f"max {_num(m.get('max_ms'), 1)} ms"
    )


def _served(m: dict[str, Any]) -> str:
    return (
        f"{_num(m.get('rps'), 0)} req/s, p99 {_num(m.get('p99_ms'), 1)} ms, "
        f"{_num(m.get('cpu_us_per_request'), 0)} µs CPU"
    )


def _bench_http(r: dict[str, Any], key: str = "http") -> str:
    h = r.get(key)
    if not h:
        raise GenerationError(f"bench/results.json has no {key!r} (run make bench)")
    batch = h.get("rows_per_request", 1) > 1
    rows = []
    apps = (
        ("real", "treesurv"),
        ("v2", "treesurv, `/v2` infer (JSON tensors)"),
        ("v2_binary", "treesurv, `/v2` infer (binary tensors)"),
        ("bare", "bare FastAPI app (validation only)"),
    )
    for app, label in apps:
        if app.startswith("v2") and app not in h:
            continue
        m = h.get(app) or {}
        rows.append(
            [
                label,
                _num(m.get("rps"), 0),
                *([_num(m.get("rows_per_s"), 0)] if batch else []),
                _num(m.get("p50_ms"), 2),
                _num(m.get("p99_ms"), 2),
                _num(m.get("errors")),
                _num(m.get("requests")),
            ]
        )
    note = (
        f"`POST /v1/predictions`, {_num(h.get('rows_per_request', 1))} instance(s) per request; "
        f"{h.get('generator', 'wrk')}, {_num(h.get('connections'))} connections, "
        f"{_num(h.get('workers'))} worker, median of "
        f"{_num(h.get('rounds'))} × {_num(h.get('duration_s'), 0)} s. "
        f"Throughput ratio to the bare app: **{_num(h.get('ratio'), 2)}**"
        + (f" (`/v2` JSON: **{_num(h['ratio_v2'], 2)}**" if "ratio_v2" in h else "")
        + (f", binary: **{_num(h['ratio_v2_binary'], 2)}**" if "ratio_v2_binary" in h else "")
        + (")" if "ratio_v2" in h else "")
        + ". "
        f"Measured {h.get('measured', r.get('measured', '–'))}."
    )
    if "model_rows_per_s" in h:
        note += (
            " The served model alone, in process and one thread, scores "
            f"**{_num(h['model_rows_per_s'], 0)} rows/s** on the same batches."
        )
    header = ["server", "req/s", *(["rows/s"] if batch else []), "p50 ms", "p99 ms"]
    return note + "\n\n" + _table([*header, "errors", "requests"], rows)


def _bench_coldstart(r: dict[str, Any]) -> str:
    c = r.get("coldstart")
    if not c:
        raise GenerationError("bench/results.json has no 'coldstart' (run make bench)")
    rows = [
        [
            "treesurv: `/readyz` 200 (exact answers, NumPy walk)",
            f"{_num(c.get('real_ready_s'), 2)} s",
        ],
        [
            "treesurv: kernels compiled (full speed)",
            f"{_num(c.get('real_full_speed_s'), 2)} s",
        ],
        ["bare FastAPI app: first 200", f"{_num(c.get('bare_ready_s'), 2)} s"],
    ]
    note = (
        f"From exec to the first 200, one uvicorn worker, median of {_num(c.get('rounds'))} "
        f"fresh starts each, alternating. Ratio to the bare app: "
        f"**{_num(c.get('ratio'), 2)}**. Measured {c.get('measured', '–')}."
    )
    return note + "\n\n" + _table(["server", "time"], rows)


def _bench_inprocess(r: dict[str, Any]) -> str:
    p = r.get("inprocess") or {}
    s, b, f = p.get("single") or {}, p.get("batch") or {}, p.get("file") or {}
    rows = [
        [
            "one prediction (`predict_one`)",
            f"median {_num(s.get('median_us'), 1)} µs, p99 {_num(s.get('p99_us'), 1)} µs",
            "sklearn `predict_proba`, one-row DataFrame: median "
            f"{_num((s.get('sklearn_one_row_dataframe_median_us') or 0) / 1000, 1)} ms",
            f"{_num(s.get('calls'))} calls over {_num(s.get('rows'))} rows",
        ],
        [
            f"batch in memory ({_num(b.get('rows'))} rows)",
            f"{_num(b.get('compiled_rows_per_s'), 0)} rows/s",
            f"sklearn: {_num(b.get('sklearn_rows_per_s'), 0)} rows/s",
            f"×{_num(b.get('speedup'), 2)}; max abs. difference {b.get('max_abs_diff', '–'):.0e}"
            if b.get("max_abs_diff") is not None
            else "",
        ],
        [
            f"`treesurv predict`, {_num(f.get('rows'))}-row CSV "
            f"({_num(f.get('input_mib'), 0)} MiB): read, validate, score, write",
            f"{_num(f.get('us_per_row'), 1)} µs/row, peak RSS {_num(f.get('peak_rss_mib'), 0)} MiB",
            "sklearn `predict_proba` in memory: "
            f"{_num(f.get('sklearn_predict_proba_us_per_row'), 1)} µs/row",
            f"×{_num(f.get('speedup_vs_sklearn'), 2)} per row",
        ],
    ]
    return f"Measured {p.get('measured', '–')}, model {p.get('model_version', '–')}.\n\n" + _table(
        ["what", "treesurv", "reference", ""], rows
    )


def _bench_soak(r: dict[str, Any]) -> str:
    rows = []
    s = r.get("soak")
    if s:
        mem = s.get("memory") or {}
        rows.append(
            [
                f"soak: {_num(s.get('duration_s'), 0)} s at {_num(s.get('target_rps'), 0)} req/s "
                f"({_num((s.get('batch_share') or 0) * 100, 0)} % of requests "
                f"batches of {_num(s.get('batch_size'))})",
                _num(s.get("requests")),
                _num(s.get("errors")),
                _latency(s),
                f"RSS {_num(mem.get('rss_start_mib'), 1)} → {_num(mem.get('rss_end_mib'), 1)} MiB "
                f"(growth {_num(mem.get('growth'), 1)} %)",
                s.get("measured", "–"),
            ]
        )
    w = r.get("swaps")
    if w:
        versions = ", ".join(f"{k}: {_num(v)}" for k, v in (w.get("versions") or {}).items())
        rows.append(
            [
                f"{_num(w.get('swaps'))} model swaps under load at "
                f"{_num(w.get('target_rps'), 0)} req/s, "
                f"a tampered bundle placed before each",
                _num(w.get("requests")),
                _num(w.get("errors")),
                _latency(w),
                f"answers by version {versions}; "
                f"from the tampered bundle: {_num(w.get('tampered_served'))}; "
                f"refused reloads {_num(w.get('reload_failures_metric'), 0)}",
                w.get("measured", "–"),
            ]
        )
    z = r.get("fuzz")
    if z:
        statuses = ", ".join(f"{k} × {_num(v)}" for k, v in (z.get("statuses") or {}).items())
        rows.append(
            [
                f"fuzzing (`{z.get('command', 'bench/fuzz.py')}`, "
                f"{_num(z.get('operations'))} operations)",
                _num(z.get("cases")),
                f"{_num(z.get('server_errors'))} 5xx, {_num(z.get('findings'))} check failures",
                "",
                statuses,
                z.get("measured", "–"),
            ]
        )
    return _table(["run", "requests", "errors", "latency", "memory / outcome", "measured"], rows)


def _bench_log(r: dict[str, Any]) -> str:
    p = r.get("prediction_log") or {}
    rows = []
    for key in ("single", "batch_100"):
        w = p.get(key) or {}
        on, off = w.get("on") or {}, w.get("off") or {}
        rows.append(
            [
                f"{_num(w.get('instances_per_request'))} instance(s) per request",
                _served(on),
                _served(off),
                f"**{_num(w.get('ratio'), 3)}**",
                _num(w.get("cpu_ratio"), 3),
            ]
        )
    written = p.get("log") or {}
    note = (
        f"{_num(p.get('connections'))} connections, {_num(p.get('workers'))} worker, "
        f"{_num(p.get('duration_s'), 0)} s rounds, a fresh pair of servers each round; "
        f"{_num(written.get('predictions_served'), 0)} predictions answered, "
        f"{_num(written.get('logged'), 0)} logged, {_num(written.get('dropped'), 0)} dropped. "
        f"Measured {p.get('measured', '–')}."
    )
    return (
        note
        + "\n\n"
        + _table(
            ["workload", "log on", "log off", "throughput on/off", "CPU per request on/off"], rows
        )
    )


def _bench_overload(r: dict[str, Any]) -> str:
    o = r.get("overload")
    if not o:
        raise GenerationError("bench/results.json has no 'overload' (run make bench)")
    rows = []
    for name, label in (("admission", "admission control (defaults)"), ("unbounded", "no bound")):
        run = o.get(name) or {}
        u, x = run.get("unloaded") or {}, run.get("overload") or {}
        failures = sum((x.get("failures") or {}).values())
        rows.append(
            [
                label,
                f"{_num(u.get('rows_per_s'), 0)} rows/s, p99 {_num(u.get('p99_ms'), 0)} ms",
                f"{_num(x.get('served_rows_per_s'), 0)} rows/s "
                f"(**{_num(run.get('served_ratio'), 2)}×**)",
                f"{_num(x.get('served_p99_ms'), 0)} ms (**{_num(run.get('p99_ratio'), 2)}×**)",
                f"{_num(x.get('shed'))} of {_num(x.get('offered'))}",
                _num(failures),
                f"{_num(x.get('probe_max_ms'), 0)} ms",
                f"{_num(x.get('rss_max_mib'), 0)} MiB",
                f"{_num(run.get('recovered_s'), 2)} s"
                if run.get("recovered_s") is not None
                else f"not within {_num(o.get('recovery_limit_s', 60), 0)} s",
            ]
        )
    x_admission = (o.get("admission") or {}).get("overload") or {}
    rounds = (o.get("admission") or {}).get("rounds") or []
    spread = ", ".join(_num(r.get("served_ratio"), 2) for r in rounds) or "–"
    note = (
        f"{_num(o.get('factor'), 0)}× the unloaded request rate of {_num(o.get('rows'))}-row "
        f"batches for {_num(o.get('duration_s'), 0)} s, one worker, open loop; a client "
        f"gives up after {_num(o.get('client_timeout_s'), 0)} s. The load generator took "
        f"{_num(x_admission.get('client_cores'), 2)} of the two cores under overload, the "
        f"server {_num(x_admission.get('server_cores'), 2)}. With admission control, the round "
        f"with the median served ratio of {len(rounds)} (served ratios {spread}). "
        f"Measured {o.get('measured', '–')}."
    )
    header = [
        "server",
        "unloaded",
        "served under overload",
        "p99 of served",
        "shed (503)",
        "timeouts and resets",
        "slowest /readyz",
        "peak RSS",
        "ready and at full speed after",
    ]
    return note + "\n\n" + _table(header, rows)


def _bench_workers(r: dict[str, Any]) -> str:
    w = r.get("workers")
    if not w:
        raise GenerationError("bench/results.json has no 'workers' (run make bench)")
    rows = []
    for key, label in (("single", "one instance"), ("batch_1000", "1,000 instances")):
        s = w[key]
        full = [x["full_speed_s"] for x in s["two"]["runs"]]
        rows.append(
            [
                label,
                _num(s["connections"]),
                _num(s["one"]["rps"], 0),
                _num(s["two"]["rps"], 0),
                f"**{_num(s['ratio'], 2)}**",
                _num(max(full), 1),
            ]
        )
    note = (
        f"{_num(w['cpus'])} cores; {w['generator']} on the same machine. Medians of "
        f"{_num(len(w['single']['one']['runs']))} alternating runs per worker count."
    )
    header = ["requests of", "connections", "1 worker req/s", "2 workers req/s", "ratio"]
    return note + "\n\n" + _table([*header, "2 workers at full speed after (s)"], rows)


BENCH: dict[str, Callable[[dict[str, Any]], str]] = {
    "http-batch": lambda r: _bench_http(r, "http_batch"),
    "coldstart": _bench_coldstart,
    "workers": _bench_workers,
    "overload": _bench_overload,
    "http": _bench_http,
    "inprocess": _bench_inprocess,
    "soak": _bench_soak,
    "prediction-log": _bench_log,
}


def gen_bench(arg: str) -> str:
    if arg not in BENCH:
        raise GenerationError(f"bench: unknown section {arg!r}; known: {', '.join(BENCH)}")
    return BENCH[arg](_load_json("bench/results.json"))


# --- the API reference -----------------------------------------------------------------


def _modules(package: str) -> Iterator[str]:
    """Every public module of a package, found on disk (nothing is imported)."""
    directory = SRC.joinpath(*package.split("."))
    if not (directory / "__init__.py").is_file():
        raise GenerationError(f"reference: {package} is not a package under src/")
    for info in sorted(pkgutil.iter_modules([str(directory)]), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        yield name
        if info.ispkg:
            yield from _modules(name)


def gen_reference(arg: str) -> str:
    package = arg.strip()
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false"]
    blocks += [f"::: {module}" for module in _modules(package)]
    return "\n\n".join(blocks)


def _first_line(path: Path) -> str:
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError):
        return ""
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def gen_layout(arg: str) -> str:
    """Each layer's modules with the first paragraph of their docstring (read, not imported)."""
    root = arg.strip() or "treesurv"
    rows = []
    for info in sorted(pkgutil.iter_modules([str(SRC / root)]), key=lambda i: i.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        package = f"{root}.{info.name}"
        rows.append(
            [
                f"**[{info.name}](reference/{info.name}.md)**",
                _first_line(SRC / root / info.name / "__init__.py"),
            ]
        )
        for module in _modules(package):
            relative = module.split(".")[2:]
            path = SRC.joinpath(root, info.name, *relative)
            file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
            rows.append([_code(".".join(relative)), _first_line(file)])
    return _table(["layer / module", "what it holds"], rows)


def gen_contracts(_: str) -> str:
    """The import-linter contracts of pyproject.toml, as declared."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config.get("tool", {}).get("importlinter", {}).get("contracts", [])
    if not contracts:
        return ""
    rows = []
    for c in contracts:
        kind = c.get("type", "")
        if kind == "layers":
            rule = " → ".join(_code(x) for x in c.get("layers", []))
        elif kind == "forbidden":
            rule = (
                ", ".join(_code(x) for x in c.get("source_modules", []))
                + " never import "
                + ", ".join(_code(x) for x in c.get("forbidden_modules", []))
            )
        elif kind == "independence":
            rule = "independent: " + ", ".join(_code(x) for x in c.get("modules", []))
        else:
            rule = "; ".join(
                f"{k}: " + ", ".join(_code(x) for x in (v if isinstance(v, list) else [v]))
                for k, v in c.items()
                if k not in {"name", "type", "id"}
            )
        rows.append([c.get("name", ""), kind, rule])
    return (
        "The contracts declared in `pyproject.toml` (`[tool.importlinter]`), checked by "
        "`lint-imports` in `make lint`:\n\n" + _table(["contract", "type", "rule"], rows)
    )


def gen_tests(_: str) -> str:
    """Each test module with the first sentence of its docstring, folder by folder."""
    tests = ROOT / "tests"
    rows = []
    for folder in sorted(
        p for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    ):
        for module in sorted(folder.glob("test_*.py")):
            first = re.split(r"(?<=[.!?])\s", _first_line(module), maxsplit=1)[0]
            rows.append([_code(module.relative_to(ROOT).as_posix()), first])
    return _table(["module", "what it tests"], rows)


GENERATORS: dict[str, Callable[[str], str]] = {
    "settings": gen_settings,
    "endpoints": gen_endpoints,
    "params": gen_params,
    "cli": gen_cli,
    "targets": gen_targets,
    "metrics": gen_metrics,
    "model-card": gen_model_card,
    "explore": gen_explore,
    "bench": gen_bench,
    "reference": gen_reference,
    "layout": gen_layout,
    "contracts": gen_contracts,
    "tests": gen_tests,
}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    def expand(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name not in GENERATORS:
            raise GenerationError(f"{page.file.src_path}: unknown generated block {name!r}")
        # Blank lines around the block: a table must not run into what follows.
        return "\n" + GENERATORS[name](arg).strip("\n") + "\n"

    _check_repo_paths(markdown, page.file.src_path)
    _check_dotted_names(markdown, page.file.src_path)
    return MARKER.sub(expand, markdown)


# --- checks: what is written by hand must still be true -------------------------------

REPO_PATH = re.compile(r"`((?:src|tests|bench|bin|deploy|requirements|\.github)/[\w./-]+)`")


def _check_repo_paths(markdown: str, where: str) -> None:
    """Every repository path a page names in backticks exists (tests and modules move)."""
    for match in REPO_PATH.finditer(markdown):
        path = match.group(1).rstrip("/.")
        if not (ROOT / path).exists():
            log.warning("%s names `%s`, which is not in the repository", where, path)


DOTTED = re.compile(r"`(treesurv(?:\.\w+)+)`")


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def _check_dotted_names(markdown: str, where: str) -> None:
    """Every `treesurv.module.name` a page names still exists (modules move, names change)."""
    for name in sorted(set(DOTTED.findall(markdown))):
        if not _resolves(name):
            log.warning("%s names `%s`, which does not exist", where, name)


def _check_readme() -> None:
    """The README is not generated (GitHub shows it as written), so it is checked here:
    its relative links resolve, its metrics equal metrics.json, its command tree names
    every top-level command."""
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (ROOT / target.split("#")[0]).exists():
            log.warning("README.md links to %s, which does not exist", target)
    _check_repo_paths(readme, "README.md")
    _check_dotted_names(readme, "README.md")
    metrics = _load_json("metrics.json")
    for label, key in (("ROC AUC", "roc_auc"), ("Brier score", "brier"), ("accuracy", "accuracy")):
        row = re.search(rf"^\| {re.escape(label)} \| ([0-9.]+) \|", readme, re.MULTILINE)
        expected = f"{_get(metrics, f'test.{key}'):.3f}"
        if row is None or row.group(1) != expected:
            log.warning(
                "README.md: the %s row should read %s (metrics.json test.%s)", label, expected, key
            )
    from treesurv.cli.main import app

    root = _command_group(app)
    ctx = root.context_class(root, info_name="treesurv")
    tree = readme.split("```text", 1)[-1].split("```", 1)[0]
    for name in root.list_commands(ctx):
        if not re.search(rf"── {re.escape(name)}\b", tree):
            log.warning("README.md: the command tree lacks `treesurv %s`", name)


def _check_secrets() -> None:
    """Every secret a workflow reads is in the secrets table of the lifecycle page."""
    page = (ROOT / "docs" / "lifecycle.md").read_text()
    for workflow in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for name in sorted(set(re.findall(r"secrets\.([A-Z0-9_]+)", workflow.read_text()))):
            if name != "GITHUB_TOKEN" and f"`{name}`" not in page:
                log.warning("docs/lifecycle.md lacks the secret %s (%s)", name, workflow.name)


def on_pre_build(**_: Any) -> None:
    _check_readme()
    _check_secrets()
