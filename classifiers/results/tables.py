"""A study's paper table: model x training set by test corpus or layer, pooled UAR [95% speaker CI], Holm marks.

`study_table` pivots the registered runs of a study (their `ProbeResults.summary()` headlines:
`pooled`, `ci_low`, `ci_high`) into a `PaperTable`; it holds the emotion probe runs (`tabulated`),
while the report shows runs of other kinds in their own sections. The study file chooses the pivot:

    [study]
    table = {rows = ["model", "train"], columns = "test", layer = 12}

rows: any of "model", "classifier", "train", "test", "layer" (default: those that vary across the
cells, the columns' dimension left out); columns: "test" or "layer" (default: "test" when the
cells test on more than one corpus, else "layer" when they have more than one layer); layer: with
columns = "test", the layer each cell shows: a number, or "best" (default: the cell's best layer
on its own test predictions, named in the cell; optimistic, and the caption says so).

Differences: each cell is compared with the reference cell of its column, the first row of its
block (rows sharing every row dimension but the last; with one row dimension, the first row of
the table), paired over the same test utterances (`classifiers.results.stats.paired_compare`,
jackknife-t over speakers), Holm-adjusted over every comparison in the table; a dagger marks
p < 0.05 after Holm. Options that differ between cells otherwise alike (e.g. classes "shared" and
"all" for the same train -> test) name the column (columns = "test") or a "setup" row dimension.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from featstore.errors import SerError

#: the dimensions of a table's cells; "setup" (options that tell otherwise alike cells apart) joins when needed
DIMS = ("model", "classifier", "train", "test", "layer")
COLUMN_DIMS = ("test", "layer")
TABLE_KEYS = ("rows", "columns", "layer")
#: run options that may tell two cells with the same (model, classifier, train, test, layer) apart
VARIANT_KEYS = ("classes", "protocol", "seeds", "C", "stat", "shuffle_labels", "params")
DAGGER = "†"
ALPHA = 0.05
#: what the study report's top (the table, folded runs) needs beyond `classifiers.results.report.CSS`
CSS = """table.paper td{white-space:nowrap}table.paper caption{caption-side:bottom;text-align:left;color:#555;
font-size:.9em;padding-top:.4em;max-width:1000px}details.run{border:1px solid #ddd;border-radius:4px;
margin:.5em 0;padding:.1em .8em}details.run>summary{cursor:pointer;font-weight:600;padding:.3em 0}
details.run>summary h2{display:inline;border:0;font-size:1.1em;margin:0}"""


class TableError(SerError):
    """A study table that cannot be made as asked (the message names the key and the fix)."""


def _shown(v) -> str:
    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(v)


def spec_problem(value) -> str | None:
    """What is wrong with a study file's `table` value, in words (None when it is fine)."""
    example = '{rows = ["model", "train"], columns = "test"}'
    if not isinstance(value, dict):
        return f"= {_shown(value)}: expected a table such as {example}"
    unknown = sorted(set(value) - set(TABLE_KEYS))
    if unknown:
        return f"has unknown key(s) {', '.join(unknown)}; use {', '.join(TABLE_KEYS)}, e.g. {example}"
    columns = value.get("columns")
    if columns is not None and columns not in COLUMN_DIMS:
        return f'columns = {_shown(columns)}: expected "test" or "layer"'
    rows = value.get("rows")
    if rows is not None:
        if not (isinstance(rows, list) and rows and all(isinstance(r, str) and r in DIMS for r in rows)
                and len(set(rows)) == len(rows)):
            return f"rows = {_shown(rows)}: expected a list of distinct names among {', '.join(map(_shown, DIMS))}"
        if columns in rows:
            return f'rows = {_shown(rows)}: "{columns}" is the columns; leave it out of rows'
        if columns is None and "test" in rows and "layer" in rows:
            return f'rows = {_shown(rows)}: "test" or "layer" must be the columns; leave one out of rows'
    layer = value.get("layer")
    if layer is not None and not (layer == "best" or (isinstance(layer, int) and not isinstance(layer, bool)
                                                      and layer >= 0)):
        return f'layer = {_shown(layer)}: expected "best" or a layer number (0 or more), e.g. 12'
    if layer is not None and columns == "layer":
        return 'layer: the columns are the layers; leave layer out (or set columns = "test")'
    return None


# ---------------------------------------------------------------------------------------------
# the pivot
# ---------------------------------------------------------------------------------------------

@dataclass
class Entry:
    """One setting of one registered run: its headline (`ProbeResults.summary` row)."""

    model: str
    classifier: str
    train: str
    test: str
    layer: str
    options: dict
    run: str
    summary: dict
    cols: dict | None = field(default=None, repr=False)
    setup: str = ""

    def get(self, dim: str) -> str:
        return self.setup if dim == "setup" else getattr(self, dim)

    @property
    def pooled(self):
        return self.summary.get("pooled")


@dataclass
class Cell:
    """A table cell: the entry it shows, whether its layer is named in it, and its comparison."""

    entry: Entry
    layer_shown: bool = False
    reference: tuple | None = None   # the row it is compared with (None: it is a reference, or alone)
    comparison: dict | None = None    # diff, low, high, p, p_holm (a - reference)
    note: str = ""                    # why it was not compared

    @property
    def significant(self) -> bool:
        return self.comparison is not None and self.comparison["p_holm"] < ALPHA


def _layer_sort(layer: str):
    return (0, int(layer), "") if str(layer).lstrip("-").isdigit() else (1, 0, str(layer))


def _layer_label(layer: str) -> str:
    return f"layer {layer}" if str(layer).lstrip("-").isdigit() else str(layer)


def _model_of(run: dict, results) -> str:
    return str(run.get("model") or (run.get("config") or {}).get("model") or results.meta.get("model") or "")


def tabulated(run: dict) -> bool:
    """Whether the paper table holds `run`: an emotion probe (not a dimensional one, scored by CCC;
    not a matrix, neighbours, fine-tuning or evaluation run, which the report shows in their own sections)."""
    config = run.get("config") or {}
    return run.get("kind", "probe") == "probe" and config.get("target", "emotion") == "emotion"


def entries(runs: Sequence[tuple[dict, object]]) -> list[Entry]:
    """Every setting with a pooled score of `runs` ((registry row, ProbeResults) pairs), in study order;
    runs the table does not hold (`tabulated`) are left out."""
    from classifiers.results.predictions import concat

    out = []
    for run, results in runs:
        if not tabulated(run):
            continue
        cols = concat(results.predictions) if results.predictions else None
        config = run.get("config") or {}
        options = {k: config.get(k) for k in VARIANT_KEYS}
        for row in results.summary():
            if row.get("pooled") is None:
                continue
            out.append(Entry(_model_of(run, results), str(row["classifier"]), str(row["train_set"]),
                             str(row["test_set"]), str(row["layer"]), options, str(run.get("id", "")), row, cols))
    _mark_setups(out)
    return out


def _setup_text(key: str, value) -> str:
    if value is None:
        return f"{key} default"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or f"{key} default"
    if isinstance(value, bool):
        return key if value else f"no {key}"
    return f"{key} {value}"


def _mark_setups(found: Sequence[Entry]) -> None:
    """Each entry's `setup`: the options that differ between entries otherwise alike."""
    groups: dict = {}
    for e in found:
        groups.setdefault((e.model, e.classifier, e.train, e.test, e.layer), []).append(e)
    for group in groups.values():
        keys = [k for k in VARIANT_KEYS if len({_shown(e.options.get(k)) for e in group}) > 1]
        for e in group:
            e.setup = ", ".join(_setup_text(k, e.options.get(k)) for k in keys)


@dataclass
class PaperTable:
    """The pivot of a study: `rows` (tuples over `row_dims`) x `columns` (labels), `cells` by (row, column)."""

    title: str
    row_dims: list[str]
    column: str                      # "test" or "layer"
    rows: list[tuple]
    columns: list[str]
    cells: dict
    constants: dict                  # dimension -> its one value over the table (said in the caption)
    layer_rule: str = ""             # "best": each cell's best layer, named in it; "best:K": each best at K; "K": layer K
    n_compared: int = 0
    uncompared: list = field(default_factory=list)   # (row, column, why)
    ci_method: str = ""
    caption_extra: list = field(default_factory=list)

    # -- text of the parts ---------------------------------------------------------------------

    def header(self) -> list[str]:
        return [*self.row_dims, *(_layer_label(c) if self.column == "layer" else c for c in self.columns)]

    def cell_parts(self, row: tuple, column: str) -> tuple[str, str, str, str] | None:
        """(value, mark, "[low, high]", layer note) of a cell, None when it is empty."""
        cell = self.cells.get((row, column))
        if cell is None:
            return None
        s = cell.entry.summary
        ci = "(no CI)" if s.get("ci_low") is None or s.get("ci_high") is None else \
            f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        layer = f"(L{cell.entry.layer})" if cell.layer_shown else ""
        return f"{s['pooled']:.3f}", DAGGER if cell.significant else "", ci, layer

    def cell_text(self, row: tuple, column: str) -> str:
        """"0.712† [0.650, 0.770] (L6)", or "–" for an empty cell."""
        parts = self.cell_parts(row, column)
        if parts is None:
            return "–"
        value, mark, ci, layer = parts
        return " ".join(x for x in (value + mark, ci, layer) if x)

    def reference_text(self) -> str:
        if len(self.row_dims) == 1:
            return f"the first row ({self.row_dims[0]} {self.rows[0][0]})" if self.rows else ""
        last, same = self.row_dims[-1], ", ".join(self.row_dims[:-1])
        firsts = list(dict.fromkeys(r[-1] for r in self.rows if self._block_first(r)))
        return f"the first {last} of the rows with the same {same} ({', '.join(firsts)})"

    def _block_first(self, row: tuple) -> bool:
        return next(r for r in self.rows if r[:-1] == row[:-1]) == row

    def caption(self) -> list[str]:
        """What the table shows, one sentence a line (the marks, the layer rule, what is constant)."""
        where = ", ".join(f"{d} {v}" for d, v in self.constants.items())
        method = self.ci_method or "jackknife-t"
        lines = [f"UAR pooled over folds and seeds [95% CI over speakers, {method}]"
                 + (f"; {where}" if where else "") + "."]
        picked = "picked on these test predictions: optimistic; fix one with table = {layer = k}"
        if self.layer_rule == "best":
            lines.append(f"(Lk): the cell's layer, its best ({picked}).")
        elif self.layer_rule.startswith("best:"):
            lines.append(f"Layer {self.layer_rule[5:]} in every cell, each cell's best ({picked}).")
        elif self.layer_rule:
            lines.append(f"Layer {self.layer_rule} in every cell.")
        if self.n_compared:
            n = self.n_compared
            lines.append(f"{DAGGER} p < {ALPHA:g} after Holm over {n} comparison{'s' * (n != 1)}, against the "
                         f"column's reference, {self.reference_text()}: paired jackknife-t over speakers on the same "
                         f"test utterances" + (" (exploratory: layers picked on test data)"
                                               if self.layer_rule.startswith("best") else "") + ".")
        else:
            lines.append("No differences tested: no column has two rows to compare.")
        if self.uncompared:
            why = sorted({w for _, _, w in self.uncompared})
            lines.append(f"{len(self.uncompared)} cell(s) not compared with their reference: {'; '.join(why)}.")
        return lines + list(self.caption_extra)

    # -- formats -----------------------------------------------------------------------------------

    def _body(self) -> list[list[str]]:
        return [[*row, *(self.cell_text(row, c) for c in self.columns)] for row in self.rows]

    def markdown(self) -> str:
        """A pipe table (GitHub/pandoc), the title above and the caption below."""
        head = [_md(h) for h in self.header()]
        align = [":--"] * len(self.row_dims) + ["--:"] * len(self.columns)
        lines = [f"**{_md(self.title)}**", "", "| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in self._body()]
        return "\n".join([*lines, "", *(_md(line) + "  " for line in self.caption())]).rstrip() + "\n"

    def latex(self, label: str = "") -> str:
        """A booktabs table (\\usepackage{booktabs}): \\toprule, \\midrule, \\bottomrule, names escaped."""
        k, n = len(self.row_dims), len(self.columns)
        head = " & ".join(_tex(h) for h in self.header()) + r" \\"
        body = []
        for row in self.rows:
            cells = [_tex(v) for v in row]
            for c in self.columns:
                parts = self.cell_parts(row, c)
                if parts is None:
                    cells.append("--")
                    continue
                value, mark, ci, layer = parts
                cells.append(value + (r"$^\dagger$" if mark else "") + f" {ci}" + (f" {layer}" if layer else ""))
            body.append(" & ".join(cells) + r" \\")
        caption = " ".join(_tex(line) for line in self.caption())
        return "\n".join([
            "% " + _tex_comment(self.title) + " (written by ser; needs \\usepackage{booktabs})",
            r"\begin{table}[t]", r"\centering", r"\caption{" + caption + "}",
            *([r"\label{" + label + "}"] if label else []),
            r"\begin{tabular}{" + "l" * k + "r" * n + "}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
            r"\end{tabular}", r"\end{table}", ""])

    @property
    def long_columns(self) -> tuple[str, ...]:
        """The columns of `long_rows` (CSV_FIELDS): what `classifiers.results.records.to_frame` keeps."""
        return CSV_FIELDS

    def long_rows(self) -> list[dict]:
        """One dict per filled cell (the CSV's rows, `to_frame`'s input): the row's dimensions, the
        column, the score and CI, the layer, the run, and the comparison with its reference."""
        out = []
        for row in self.rows:
            for c in self.columns:
                cell = self.cells.get((row, c))
                if cell is None:
                    continue
                e, s, cmp = cell.entry, cell.entry.summary, cell.comparison or {}
                out.append(dict(model=e.model, classifier=e.classifier, train=e.train, test=e.test, layer=e.layer,
                                setup=e.setup, row=" / ".join(row), column=c, pooled=s.get("pooled"),
                                ci_low=s.get("ci_low"), ci_high=s.get("ci_high"), ci_level=s.get("ci_level"),
                                ci_method=s.get("ci_method"), n_speakers=s.get("n_speakers"),
                                n_folds=s.get("n_folds"), n_seeds=s.get("n_seeds"), n_classes=s.get("n_classes"),
                                chance=s.get("chance"), run=e.run,
                                reference=" / ".join(cell.reference) if cell.reference else "",
                                diff=cmp.get("diff"), diff_low=cmp.get("low"), diff_high=cmp.get("high"),
                                p=cmp.get("p"), p_holm=cmp.get("p_holm"),
                                significant=cell.significant if cell.comparison else None, note=cell.note))
        return out

    def csv_text(self) -> str:
        rows = self.long_rows()
        fields = list(CSV_FIELDS)
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in fields})
        return buf.getvalue()

    def frame(self):
        """The table's cells as a pandas DataFrame (one row per cell, `CSV_FIELDS`); pandas optional."""
        from classifiers.results.records import to_frame

        return to_frame(self.long_rows(), columns=CSV_FIELDS)

    def rich(self):
        """The table for the terminal (`classifiers.results.records.table`: words never split, key: value when narrow)."""
        from classifiers.results.records import table

        t = table(*self.header(), title=self.title, caption="\n".join(self.caption()), caption_justify="left")
        for r in self._body():
            t.add_row(*r)
        return t

    def html(self, heading: str | None = None) -> str:
        """A <table class="paper"> with its caption under an <h2> (`heading`, default the title): the
        top of the study report."""
        k = len(self.row_dims)
        th = "".join(f'<th class="{"l" if i < k else ""}">{html.escape(h)}</th>' for i, h in enumerate(self.header()))
        body = []
        for row in self.rows:
            tds = [f'<td class="l">{html.escape(v)}</td>' for v in row]
            for c in self.columns:
                cell, parts = self.cells.get((row, c)), self.cell_parts(row, c)
                if parts is None:
                    tds.append("<td>–</td>")
                    continue
                value, mark, ci, layer = parts
                if mark:
                    cmp = cell.comparison
                    tip = (f"{cmp['diff']:+.3f} [{cmp['low']:+.3f}, {cmp['high']:+.3f}] against "
                           f"{' / '.join(cell.reference)}, p (Holm) {cmp['p_holm']:.3g}")
                    mark = f'<span class="sig" title="{html.escape(tip)}">{mark}</span>'
                tds.append(f"<td>{value}{mark} {html.escape(ci)}{(' ' + html.escape(layer)) if layer else ''}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        caption = "<br>".join(html.escape(line) for line in self.caption())
        return (f'<h2>{html.escape(self.title if heading is None else heading)}</h2><table class="paper"><caption>{caption}</caption>'
                f"<tr>{th}</tr>{''.join(body)}</table>")


CSV_FIELDS = ("model", "classifier", "train", "test", "layer", "setup", "row", "column", "pooled", "ci_low", "ci_high",
              "ci_level", "ci_method", "n_speakers", "n_folds", "n_seeds", "n_classes", "chance", "run", "reference",
              "diff", "diff_low", "diff_high", "p", "p_holm", "significant", "note")

def _md(text: str) -> str:
    """`text` safe in a Markdown table cell (pipes and emphasis escaped); the CI brackets kept readable."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_") \
        .replace("`", "\\`")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DAGGER: r"$^\dagger$",
        "→": r"$\rightarrow$", "×": r"$\times$", "−": "-", "–": "--", "±": r"$\pm$", "≤": r"$\leq$",
        "<": r"$<$", ">": r"$>$"}


def _tex(text: str) -> str:
    """`text` as LaTeX: specials escaped (`_` -> `\\_`, ...), the few non-ASCII signs ser writes as math."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _tex_comment(text: str) -> str:
    return str(text).replace("\n", " ")


def _varies(found: Sequence[Entry], dim: str) -> bool:
    return len({e.get(dim) for e in found}) > 1


def default_columns(found: Sequence[Entry]) -> str:
    """"test" when the cells test on more than one corpus (or setup), else "layer" when they have
    more than one layer, else "test"."""
    if len({(e.test, e.setup) for e in found}) > 1:
        return "test"
    return "layer" if _varies(found, "layer") else "test"


def study_table(runs: Sequence[tuple[dict, object]], spec: dict | None = None, *, title: str = "",
                where: str = "[study] table") -> PaperTable:
    """The paper table of `runs` ((registry row, ProbeResults) pairs, in study order) as `spec` asks
    ({rows, columns, layer}, see the module doc; {} for the defaults). TableError (one line, naming
    `where`) when the runs cannot fill it: rows that leave out something that varies, a layer no
    run has."""
    spec = dict(spec or {})
    problem = spec_problem(spec)
    if problem:
        raise TableError(f"{where} {problem}")
    found = entries(runs)
    if not found:
        raise TableError("no registered run of the study has a pooled score to tabulate")
    column = spec.get("columns") or default_columns(found)
    collapse = column == "test" and "layer" not in (spec.get("rows") or [])
    setup_dim = column == "layer" and _varies(found, "setup")
    if spec.get("rows"):
        row_dims = list(spec["rows"])
        left = [d for d in ("model", "classifier", "train", "test") if d != column and d not in row_dims
                and _varies(found, d)]
        if left:
            values = sorted({e.get(left[0]) for e in found})
            raise TableError(f"{where} rows = {_shown(row_dims)} leave out {left[0]}, which varies across the "
                             f"cells ({', '.join(values)}); add {_shown(left[0])} to rows")
    else:
        row_dims = [d for d in ("model", "classifier", "train", "test", "layer")
                    if d != column and _varies(found, d) and not (d == "layer" and collapse)] or ["train"]
    if setup_dim:
        row_dims.append("setup")
    layer_rule = ""
    if collapse:
        asked = spec.get("layer", "best")
        if asked != "best":
            have = {e.layer for e in found}
            if str(asked) not in have:
                raise TableError(f"{where} layer = {asked}: no run of the study has layer {asked} (they have "
                                 f"{', '.join(sorted(have, key=_layer_sort))}); choose one of those")
            found = [e for e in found if e.layer == str(asked)]
            layer_rule = str(asked)
        elif _varies(found, "layer"):
            layer_rule = "best"
        else:
            layer_rule = found[0].layer

    def column_of(e: Entry) -> str:
        if column == "layer":
            return e.layer
        return f"{e.test} ({e.setup})" if e.setup else e.test

    groups: dict = {}
    for e in found:
        groups.setdefault((tuple(e.get(d) for d in row_dims), column_of(e)), []).append(e)
    rows = list(dict.fromkeys(r for r, _ in groups))
    columns = list(dict.fromkeys(c for _, c in groups))
    if column == "layer":
        columns.sort(key=_layer_sort)
    cells = {}
    for key, group in groups.items():
        if layer_rule == "best":
            best = max(group, key=lambda e: e.pooled)   # the first of equals: the study's order
            cells[key] = Cell(best, layer_shown=len({e.layer for e in group}) > 1)
        else:
            cells[key] = Cell(group[0])                 # the same setting in two runs: the first run's
    picked = {c.entry.layer for c in cells.values()}
    if layer_rule == "best" and len(picked) == 1:       # every cell at the same layer: said once, in the caption
        best_everywhere = any(c.layer_shown for c in cells.values())
        for c in cells.values():
            c.layer_shown = False
        layer_rule = f"best:{next(iter(picked))}" if best_everywhere else next(iter(picked))
    elif layer_rule == "best":                          # name each cell's layer
        for c in cells.values():
            c.layer_shown = True
    constants = {d: found[0].get(d) for d in ("model", "classifier", "train", "test")
                 if d not in row_dims and d != column and not _varies(found, d)}
    methods = {str(c.entry.summary.get("ci_method")) for c in cells.values() if c.entry.summary.get("ci_low") is not None}
    t = PaperTable(title=title or "UAR [95% speaker CI]", row_dims=row_dims, column=column, rows=rows,
                   columns=columns, cells=cells, constants=constants, layer_rule=layer_rule,
                   ci_method=next(iter(methods)) if len(methods) == 1 else "")
    _compare(t)
    return t


def _side(e: Entry) -> dict:
    from classifiers.results.compare import setting_rows

    p = setting_rows(e.cols, (e.train, e.test, e.classifier, e.layer))
    return p


def _compare(t: PaperTable) -> None:
    """Each cell against the reference cell of its column (the first row of its block with a score
    there): paired jackknife-t over speakers, Holm over the table."""
    from classifiers.results.compare import label_order
    from classifiers.results.stats import StatsError, holm, paired_compare

    done = []
    for c in t.columns:
        refs: dict = {}
        for row in t.rows:
            cell = t.cells.get((row, c))
            if cell is None:
                continue
            block = row[:-1]
            if block not in refs:
                refs[block] = row
                continue
            ref = t.cells[(refs[block], c)]
            cell.reference = refs[block]
            if cell.entry.cols is None or ref.entry.cols is None:
                cell.note = "no per-utterance predictions (run before ser kept them)"
            else:
                a, b = _side(cell.entry), _side(ref.entry)
                sides = [dict(id=p["id"], y_true=p["label"], y_pred=p["predicted"], speaker=p["speaker"])
                         for p in (a, b)]
                try:
                    cmp = paired_compare(*sides, label_order(a, b), metric="uar")
                except StatsError as e:
                    cell.note = _first_line(e)
                else:
                    cell.comparison = dict(diff=cmp.diff, low=cmp.low, high=cmp.high, p=cmp.p)
                    done.append(cell)
            if cell.note:
                t.uncompared.append((row, c, cell.note))
    for cell, p in zip(done, holm([c.comparison["p"] for c in done]) if done else []):
        cell.comparison["p_holm"] = float(p)
    t.n_compared = len(done)


def _first_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text.rstrip(".")


def table_paths(report: str | Path) -> dict[str, Path]:
    """Where a study's table files go: beside its report, the same name with .md, .tex and .csv."""
    report = Path(report)
    return {fmt: report.with_suffix(suffix) for fmt, suffix in (("markdown", ".md"), ("latex", ".tex"),
                                                                 ("csv", ".csv"))}


def check_table_paths(report: str | Path, option: str = "the study table") -> dict[str, Path]:
    """`table_paths`, each checked as an output before any work (`featstore.outputs.check_output`)."""
    from featstore.outputs import check_output

    return {fmt: check_output(p, option=option, suffixes=(p.suffix,)) for fmt, p in table_paths(report).items()}


def write_table(t: PaperTable, report: str | Path, *, label: str = "") -> list[Path]:
    """Write `t` as Markdown, LaTeX and CSV beside `report` (each whole or not at all); return the paths."""
    from featstore.outputs import write_text

    paths = check_table_paths(report)
    return [write_text(paths["markdown"], t.markdown()), write_text(paths["latex"], t.latex(label=label)),
            write_text(paths["csv"], t.csv_text())]
