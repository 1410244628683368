"""What `rd-engine eval` writes: the table (Markdown and JSON) and a per-frame AbsRel plot per sequence.

Everything is rendered in memory first, then written into one result folder through
`rd_engine.io.files.atomic_output`: the folder appears whole or not at all, so an interrupted or failed
run leaves nothing half-written under a final name.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.files import atomic_output
from rd_engine.settings import PRESETS
from rd_engine.version import __version__


@dataclass
class SequenceResult:
    """One sequence's row.

    Attributes:
        id: The sequence (its split list's name).
        frames: Frames in the split.
        absrel: Mean per-frame AbsRel.
        delta1: Mean per-frame delta1.
        scale: Fitted scale (prediction to inverse depth).
        shift: Fitted shift.
        pixels: Valid pixels over the sequence.
        frame_absrel: Per-frame AbsRel (None where a frame has no valid pixel).
        frame_delta1: Per-frame delta1 (None likewise).
        prediction: Where the prediction came from (a file, or "rd-engine run").
    """

    id: str
    frames: int
    absrel: float
    delta1: float
    scale: float
    shift: float
    pixels: int
    frame_absrel: list[float | None]
    frame_delta1: list[float | None]
    prediction: str


@dataclass
class EvalReport:
    """One method on one benchmark split.

    Attributes:
        benchmark: Benchmark name.
        split: Split name (or folder).
        root: Dataset root.
        method: Row label of the method.
        model: Model (checkpoint or engine folder), where known.
        backend: Inference backend, where known.
        settings: Run settings (rd-engine's), where known.
        protocol: The protocol's parameters (space of the fit, caps, crop).
        sequences: Per-sequence rows.
        absrel: Mean over sequences.
        delta1: Mean over sequences.
        rd_engine_version: The version that scored it.
    """

    benchmark: str
    split: str
    root: str
    method: str
    model: str | None
    backend: str | None
    settings: dict | None
    protocol: dict
    sequences: list[SequenceResult]
    absrel: float
    delta1: float
    rd_engine_version: str = field(default=__version__)

    def to_json(self) -> str:
        data = asdict(self)
        data["settings_label"] = settings_label(self.settings)
        return json.dumps(data, indent=2, allow_nan=False)


def frame_list(values: np.ndarray) -> list[float | None]:
    """Per-frame values for JSON: NaN (no valid pixel) becomes None."""
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, np.float64)]


def _value(key: str, value) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if key == "seed" and value is None:
        return "random"
    return str(value)


def settings_label(settings: dict | None) -> str:
    """One line naming a method's engine settings: the preset they match (and what differs), then the values.

    The preset is the recorded one (engine runs), else the preset whose every value the settings match
    (rd-engine's saved ``.npz`` metadata); "not recorded" for other methods' predictions.
    """
    if not settings:
        return "not recorded"
    preset = settings.get("preset")
    if preset not in PRESETS:
        preset = next((n for n, v in PRESETS.items() if all(settings.get(k) == x for k, x in v.items())), None)
    if preset is None:
        head = "no preset"
    else:
        changed = [k for k, x in PRESETS[preset].items() if k in settings and settings[k] != x]
        head = f"preset {preset}" + (f" with {', '.join(changed)} changed" if changed else "")
    keys = ("res", "dilations", "cap_dilation", "refine_step", "dtype", "align", "align_iters", "seed")
    values = [f"{k} {_value(k, settings[k])}" for k in keys if k in settings]
    if "mode" in settings:
        values.append(settings["mode"] + (f" lag {settings['lag']}" if settings.get("lag") is not None else ""))
    elif "lag" in settings:
        values.append(f"lag {settings['lag']}")
    return f"{head}: {', '.join(values)}"


def markdown(report: EvalReport) -> str:
    """The table: one row per sequence, then the mean; the method, model, backend and settings above it."""
    lines = [
        f"### {report.benchmark} ({report.split}): {report.method}",
        "",
        f"- model: {report.model or 'not recorded'}; backend: {report.backend or 'not recorded'}",
        f"- settings (every row): {settings_label(report.settings)}",
        f"- protocol: {report.protocol['summary']}",
        "",
        "| sequence | frames | AbsRel | delta1 |",
        "|---|---:|---:|---:|",
    ]
    for s in report.sequences:
        lines.append(f"| {s.id} | {s.frames} | {s.absrel:.4f} | {s.delta1:.4f} |")
    lines.append(f"| **mean of {len(report.sequences)}** | | **{report.absrel:.4f}** | **{report.delta1:.4f}** |")
    return "\n".join(lines) + "\n"


def render_plot(result: SequenceResult, title: str) -> bytes:
    """PNG bytes of one sequence's per-frame AbsRel (the paper's Figure 5 kind of plot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y = np.array([np.nan if v is None else v for v in result.frame_absrel], np.float64)
    fig = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.arange(len(y)), y, lw=1.2, label=f"per frame (mean {result.absrel:.4f})")
    ax.axhline(result.absrel, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("frame")
    ax.set_ylabel("AbsRel")
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, max(1, len(y) - 1))
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def output_stem(report: EvalReport) -> str:
    """``<benchmark>_<method>``, with characters unfit for file names replaced."""
    safe = "".join(c if c.isalnum() or c in "-_.+" else "-" for c in report.method)
    return f"{report.benchmark}_{safe}"


def write_report(report: EvalReport, out_dir: Path) -> Path:
    """Write the result folder ``out_dir/<benchmark>_<method>/`` in one atomic step.

    It holds ``table.md``, ``table.json`` and ``plots/<sequence>.png``; it appears whole (replacing an
    earlier result of the same name) or not at all.

    Args:
        report: The scored method.
        out_dir: The output folder (created if missing).

    Returns:
        The result folder.
    """
    final = Path(out_dir) / output_stem(report)
    title = f"{report.method}: {report.benchmark}"
    plots = {f"{s.id}.png": render_plot(s, f"{title} {s.id}") for s in report.sequences}
    with atomic_output(final, folder=True) as tmp:
        (tmp / "plots").mkdir()
        for name, png in plots.items():
            (tmp / "plots" / name).write_bytes(png)
        (tmp / "table.json").write_text(report.to_json() + "\n")
        (tmp / "table.md").write_text(markdown(report))
    return final


def load_table(path: Path) -> dict:
    """A ``table.json`` written by `write_report` (or its result folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "table.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable table.json ({e})") from None
    keys = ("benchmark", "split", "method", "absrel", "delta1", "protocol")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise UserError(f"{path}: not a table.json of rd-engine eval (it needs {', '.join(keys)})")
    return data


def compare_markdown(tables: list[dict]) -> str:
    """One row per method, AbsRel and delta1 per benchmark split side by side ("-" where not scored).

    Each row names its engine settings (`settings_label`; "not recorded" for other methods' predictions).

    Raises:
        UserError: If two tables of one benchmark split were scored with different protocol parameters.
    """
    columns: dict[tuple[str, str], dict] = {}
    rows: dict[str, dict] = {}
    for t in tables:
        key = (t["benchmark"], t["split"])
        protocol = {k: v for k, v in t["protocol"].items() if k != "summary"}
        if columns.setdefault(key, protocol) != protocol:
            raise UserError(f"{t['method']}: {key[0]} ({key[1]}) was scored with another protocol than the others")
        label = settings_label(t.get("settings"))
        row = rows.setdefault(t["method"], {"model": t.get("model"), "backend": t.get("backend"), "settings": label})
        if row["settings"] != label:
            raise UserError(f"{t['method']}: two results of this name were made with different settings; rename one")
        row[key] = (t["absrel"], t["delta1"], len(t.get("sequences", [])))
    head = ["method", "model", "backend", "settings"]
    head += [f"{b} ({s}) {m}" for b, s in columns for m in ("AbsRel", "delta1")]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|" + "---:|" * (2 * len(columns))]
    for method, row in rows.items():
        cells = [method, row["model"] or "-", row["backend"] or "-", row["settings"]]
        for key in columns:
            cells += [f"{row[key][0]:.4f}", f"{row[key][1]:.4f}"] if key in row else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
