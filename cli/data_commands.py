"""`keel data …`: profile a dataset and mix format-mimicking safety data into it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dataformats import Conversation, validate_jsonl
from sap_core.safety.mixer import DEFAULT_CONTRAST_RATIO

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.callback()
def main() -> None:
    """Profile and mix datasets."""


def read_dataset(path: Path) -> list[Conversation]:
    """Validated conversations of a JSONL file; prints the first errors and exits 1 if invalid."""
    with path.open("rb") as handle:
        report = validate_jsonl(handle, keep=True)
    if not report.ok:
        for error in report.errors[:10]:
            # soft_wrap: one line per error however long the path (scripts grep these lines).
            console.print(f"[red]{path}:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1)
    return report.conversations


def _short(text: str, limit: int = 70) -> str:
    flat = text.replace("\n", "\\n")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@app.command("profile")
def profile(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Customer JSONL dataset"),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON"),
) -> None:
    """Print the format profile the safety mixer will imitate."""
    from sap_core.safety.profiler import profile_dataset

    result = profile_dataset(read_dataset(file))
    data = result.to_dict()
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table("property", "value", title=f"format profile: {file.name}")
    table.add_row("rows", str(result.rows))
    table.add_row("multi-turn rows", f"{result.multi_turn_fraction:.0%}")
    table.add_row("rows with a system prompt", f"{result.system_prompt_fraction:.0%}")
    for text, count in result.system_prompts[:3]:
        table.add_row(f"  system prompt ×{count}", _short(text))
    table.add_row("user prefix", repr(result.user_prefix))
    table.add_row("user suffix", repr(result.user_suffix))
    if result.options is not None:
        table.add_row(
            "options",
            f"{' '.join(result.options.labels)} as '{result.options.open}A{result.options.close}'"
            f" ({result.options.layout}, {result.options_fraction:.0%} of rows)",
        )
        table.add_row("after options", repr(result.options_suffix))
    table.add_row("answer style", result.answer_style)
    if result.answer_prefix:
        table.add_row("answer prefix", repr(result.answer_prefix))
    if result.labels:
        table.add_row("labels", ", ".join(result.labels))
    chars = result.answer_chars
    table.add_row(
        "answer chars", f"mean {chars['mean']}, min {chars['min']:g}, max {chars['max']:g}"
    )
    chars = result.user_chars
    table.add_row("variable part chars", f"mean {chars['mean']}, max {chars['max']:g}")
    console.print(table)


@app.command("mix")
def mix(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Customer JSONL dataset"),
    ratio: float = typer.Option(..., help="Safety rows per customer row (k = floor(r*n + 0.5))"),
    out: Path = typer.Option(..., help="Mixed chat JSONL to write"),
    seed: int = typer.Option(0, help="Mixing seed"),
    corpus_dir: Path | None = typer.Option(
        None, help="Built safety corpus (keel safety build-corpus); default: template refusals"
    ),
    refusal_source: str = typer.Option("model", help="model | template"),
    contrast_ratio: float = typer.Option(
        DEFAULT_CONTRAST_RATIO,
        help="Helpful benign look-alike rows per safety row (against over-refusal)",
    ),
    report: Path | None = typer.Option(None, help="Write the mix report JSON here"),
) -> None:
    """Render safety examples in FILE's format and write the shuffled mix to OUT."""
    from sap_core.errors import SapError
    from sap_core.safety.corpus import load_corpus, template_corpus
    from sap_core.safety.mixer import MixConfig, mix_dataset, to_jsonl

    customer = read_dataset(file)
    try:
        config = MixConfig(
            ratio=ratio,
            seed=seed,
            refusal_source=refusal_source,
            contrast_ratio=contrast_ratio,
        )
        corpus = load_corpus(corpus_dir) if corpus_dir else template_corpus()
        mixed, mix_report = mix_dataset(customer, corpus, config)
    except SapError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_jsonl(mixed), encoding="utf-8")
    data = mix_report.to_dict()
    if report is not None:
        report.write_text(json.dumps(data, indent=2), encoding="utf-8")
    table = Table("count", "rows", title=f"mix: {file.name} -> {out.name}")
    for name, count in data["counts_by_source"].items():
        table.add_row(name, str(count))
    table.add_row("total", str(data["total_rows"]))
    console.print(table)
    console.print(f"answer style: {data['profile']['answer']['style']}, seed {seed}")
    if data["examples"]:
        # Examples carry a placeholder instead of the harmful request: safe to print.
        console.print("first rendered safety example:")
        console.print_json(json.dumps(data["examples"][0]))
