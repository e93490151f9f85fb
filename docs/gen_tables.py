"""Generate the result tables of the READMEs from the committed result files.

    python docs/gen_tables.py           # rewrite every table between its markers
    python docs/gen_tables.py --check   # exit 1 if a README table differs from its results

Each reproduction lists its tables in ``plugins/<x>/reproduce/tables.toml``; a README holds each
table between ``<!-- table NAME -->`` and ``<!-- /table -->``. A table has one row per method
(the runs of a sweep's ``results.csv`` whose ``key`` column has the row's value, over its seeds;
``results`` may list several sweeps' files, and a row may name its own ``key``: the beta-VAE row
of a sweep over ``train.beta`` beside the rows of a sweep over ``plugins``),
with the mean and sample standard deviation (ddof=1) of each column over the seeds that
finished, the seeds, epochs, data sizes and training wall time, the published number beside
ours, and one verdict per claim, worded from the intervals. A table with ``like = "NAME"`` takes
every key it does not set from the table NAME of the same file (the same rows, columns and claims
in another setting). The verdicts:

* **reproduced**: the paper's ordering holds beyond the spread (the better method's mean plus
  its std is still better than the worse one's mean minus its std);
* **not reproduced**: the opposite ordering holds beyond the spread;
* **inconclusive at this budget**: the intervals overlap.

The throughput table of ``benchmarks/README.md`` (``<!-- table bench_train -->``) is made the same
way from ``benchmarks/results/bench_train.json``, which ``benchmarks/bench_train.py --out`` writes.

``tests/test_docs.py`` fails when a README table differs from what this script writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parent.parent
FINISHED = ("done", "reused")


def spec_files() -> list[Path]:
    return sorted(ROOT.glob("plugins/*/reproduce/tables.toml"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row for row in csv.DictReader(fh) if row.get("status") in FINISHED]


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def verdict(better: tuple[float, float | None], worse: tuple[float, float | None], direction: str) -> str:
    """The claim "``better`` beats ``worse``" (``direction`` ``min``: lower is better) from the
    two intervals: reproduced, not reproduced, or inconclusive at this budget."""
    sign = 1.0 if direction == "min" else -1.0
    (b, b_std), (w, w_std) = better, worse
    if b_std is None or w_std is None:
        return "inconclusive at this budget (fewer than 2 seeds)"
    if sign * (b + sign * b_std) < sign * (w - sign * w_std):
        return "reproduced"
    if sign * (w + sign * w_std) < sign * (b - sign * b_std):
        return "not reproduced"
    return "inconclusive at this budget"


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _cell(values: list[float], digits: int) -> str:
    mean, std = interval(values)
    return _fmt(mean, digits) + ("" if std is None else f" ± {_fmt(std, digits)}")


def _column_cell(members: list[dict[str, str]], column: dict[str, Any]) -> str:
    """A column's cell for one method: mean ± std, or "-" when the method does not log the metric
    (the classifier's MI of a plain VAE)."""
    values = [r.get(column["metric"], "") for r in members]
    if all(v == "" for v in values):
        return "-"
    return _cell([float(v) for v in values], column.get("digits", 2))


def results_files(table: dict[str, Any]) -> list[str]:
    """The results files of a table: one sweep's ``results.csv``, or a list of them."""
    files = table["results"]
    return [files] if isinstance(files, str) else list(files)


def resolve(table: dict[str, Any], tables: list[dict[str, Any]]) -> dict[str, Any]:
    """``table`` with the keys it does not set taken from the table it is ``like``."""
    if "like" not in table:
        return table
    base = next((t for t in tables if t["name"] == table["like"]), None)
    if base is None or "like" in base:
        name, like = table["name"], table["like"]
        raise SystemExit(f"table {name!r}: like = {like!r} names no table without a 'like' of its own")
    return {**base, **table}


def render(table: dict[str, Any]) -> str:
    rows = [row for name in results_files(table) for row in read_rows(ROOT / name)]
    columns = table["columns"]
    head = ["method", "seeds", "best epoch", "train / test rows", *(c["label"] for c in columns)]
    head += ["train time / run", "published"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    groups: dict[str, list[dict[str, str]]] = {}
    for spec in table["rows"]:
        key = spec.get("key", table["key"])
        members = [r for r in rows if r.get(key) == spec["value"]]
        if not members:
            where = ", ".join(results_files(table))
            raise SystemExit(f"{where}: no finished run with {key} = {spec['value']!r}")
        groups[spec["value"]] = members
        seeds = ",".join(r["train.seed"] for r in members)
        epochs = "/".join(r["epoch"] for r in members)
        if members[0].get("train_rows"):
            sizes = f"{int(float(members[0]['train_rows'])):,} / {int(float(members[0]['split_rows'])):,}"
        else:  # results written before eval.json recorded its sizes: the table says them
            sizes = table["sizes"]
        cells = [_column_cell(members, c) for c in columns]
        minutes = statistics.fmean(float(r["train_seconds"]) for r in members) / 60
        lines.append(
            f"| {spec['label']} | {seeds} | {epochs} | {sizes} | "
            + " | ".join(cells)
            + f" | {minutes:.1f} min | {spec.get('published', '')} |"
        )
    out = [table.get("caption", "").strip(), "", *lines] if table.get("caption") else lines
    claims = table.get("claims", [])
    if claims:
        out += ["", "Claims, worded from the intervals (mean ± sample std over the seeds):", ""]
    for claim in claims:
        metric = claim["metric"]
        digits = next((c.get("digits", 2) for c in columns if c["metric"] == metric), 2)
        b = interval([float(r[metric]) for r in groups[claim["better"]]])
        w = interval([float(r[metric]) for r in groups[claim["worse"]]])
        ours = f"{_cell([float(r[metric]) for r in groups[claim['better']]], digits)} vs " + _cell(
            [float(r[metric]) for r in groups[claim["worse"]]], digits
        )
        out.append(
            f"- {claim['text']}: **{verdict(b, w, claim.get('direction', 'min'))}** "
            f"(ours {ours}; published {claim['published']})"
        )
    return "\n".join(out)


MARKER = "<!-- table {name} -->"
END = "<!-- /table -->"


def bench_files() -> list[Path]:
    return sorted((ROOT / "benchmarks" / "results").glob("*.json"))


BENCH_LABELS = {"vaecore": "vaecore trainer", "vaecore+stack": "vaecore + {stack}", "pythae": "pythae `BaseTrainer`"}


def render_bench(result: dict[str, Any]) -> str:
    """A throughput benchmark's table (``benchmarks/bench_train.py --out``): each contender's
    samples/s, its plain loop's, their ratio with its interval, and the null control."""
    lines = [
        f"`{result['command']}` on {result['date']} ({result['machine']}): {result['train_size']} examples an "
        f"epoch, the median over {result['rounds']} rounds after a warm-up, with its 95 % bootstrap interval.",
        "",
        "| contender | samples/s | its plain loop, samples/s | ratio | null control (plain B / A) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["rows"].items():
        label = BENCH_LABELS.get(name, name).format(stack=", ".join(result["stack"]))
        (lo, hi), (null_lo, null_hi) = row["ratio_ci"], row["null_ratio_ci"]
        lines.append(
            f"| {label} | {row['samples_per_s']:.0f} | {row['plain_samples_per_s']:.0f} | "
            f"**{row['ratio']:.3f}** [{lo:.3f}, {hi:.3f}] | {row['null_ratio']:.3f} [{null_lo:.3f}, {null_hi:.3f}] |"
        )
    return "\n".join(lines)


def generated_tables() -> list[tuple[Path, str, str, list[str]]]:
    """Every generated table: its README, name, body and the result files it is made from."""
    out = []
    for spec_path in spec_files():
        tables = tomllib.loads(spec_path.read_text(encoding="utf-8")).get("tables", [])
        for table in (resolve(t, tables) for t in tables):
            out.append((ROOT / table["readme"], table["name"], render(table), results_files(table)))
    for path in bench_files():
        result = json.loads(path.read_text(encoding="utf-8"))
        out.append((ROOT / "benchmarks" / "README.md", path.stem, render_bench(result), [str(path.relative_to(ROOT))]))
    return out


def generated_readmes() -> dict[Path, str]:
    """Each README that holds a table, with every table regenerated."""
    texts: dict[Path, str] = {}
    for readme, name, body, sources in generated_tables():
        text = texts.get(readme) or readme.read_text(encoding="utf-8")
        start = MARKER.format(name=name)
        pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(END), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{readme}: no '{start}' ... '{END}' block for table {name!r}")
        note = f"<!-- generated by docs/gen_tables.py from {', '.join(sources)}; do not edit -->"
        block = f"{start}\n{note}\n\n{body}\n\n{END}"
        texts[readme] = pattern.sub(lambda _m, block=block: block, text)
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a README table is out of date")
    args = parser.parse_args(argv)
    stale = []
    for readme, text in generated_readmes().items():
        if readme.read_text(encoding="utf-8") != text:
            stale.append(readme)
            if not args.check:
                readme.write_text(text, encoding="utf-8")
                print(f"wrote {readme.relative_to(ROOT)}")
    if args.check and stale:
        print("out of date (run python docs/gen_tables.py): " + ", ".join(str(p.relative_to(ROOT)) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
