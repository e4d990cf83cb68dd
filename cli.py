"""`ser`: the command line. Thin: parse, call a library function, print.

Every error a user can cause is a `SerError` whose message names the fix; it is caught once
here and printed on one line (`ser --debug ...` shows the traceback).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from classifiers.runs.configs import (
    EvaluateConfig,
    MatrixConfig,
    NeighborsConfig,
    ProbeConfig,
    layer_spec_problem,
    names_problem,
)
from classifiers.runs.targets import TARGETS
from featstore.folds import PROTOCOLS
from featstore.options import ExtractConfig, help_text, seed_spec_problem

app = typer.Typer(help="ser: wav2vec2-family feature store and fast probes for speech emotion recognition.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
store_app = typer.Typer(help="Inspect and export feature stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")
# markup off: paths, labels and messages are printed literally ("x[/].h5" stays whole); styles are explicit
console = Console(markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)  # one problem, one line
_state = {"debug": False}


def reflow_help(doc: str) -> str:
    """A docstring as help text: the lines of each paragraph joined, so the terminal wraps them at
    its own width; lines starting "Example", "- " or "* ", indented lines and the lines after a
    line ending ":" stay lines of their own."""
    import inspect

    paragraphs = []
    for para in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in para.split("\n"):
            if (not lines or line[:1].isspace() or lines[-1][:1].isspace() or lines[-1].endswith(":")
                    or line.lstrip().startswith(("Example", "- ", "* "))):
                lines.append(line)
            else:
                lines[-1] = f"{lines[-1].rstrip()} {line.strip()}"
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _typer_help() -> None:
    """Help as people read it, fixed here once for every command. (1) typer (0.2x) prints a type
    column for every option, `<bool>` included beside flags (`TyperOption.display_type_rich` does
    not skip `is_flag`), though a flag takes no value: flags get no type. (2) docstrings are
    hard-wrapped in the source and typer keeps those breaks, so help wrapped raggedly at 80
    columns: each command's help is `reflow_help`ed as typer builds the command."""
    from typer import core
    from typer import main as typer_main

    shown = core.TyperOption.display_type_rich
    if getattr(shown, "_ser", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and not self.count else shown(self, ctx)

    build = typer_main.get_command_from_info

    def get_command_from_info(command_info, *args, **kwargs):
        if command_info.help is None and command_info.callback is not None and command_info.callback.__doc__:
            command_info.help = reflow_help(command_info.callback.__doc__)
        return build(command_info, *args, **kwargs)

    display_type_rich._ser = True
    core.TyperOption.display_type_rich = display_type_rich
    typer_main.get_command_from_info = get_command_from_info


_typer_help()


def _tagged(tag: str, message, style: str = "yellow") -> None:
    """One stderr line: `tag` styled, then `message` exactly as given (never parsed as markup)."""
    err.print(Text.assemble((tag, style), " " if message != "" else "", str(message)), highlight=False)


def _error(e) -> None:
    _tagged("error:", e, "bold red")


def friendly(fn):
    """Print a SerError as one line and exit 2; --debug re-raises it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from featstore.errors import SerError

        try:
            return fn(*args, **kwargs)
        except SerError as e:
            if _state["debug"]:
                raise
            _error(e)
            raise typer.Exit(2) from None

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """ser's own warnings (e.g. FoldWarning) as one `warning:` line; others as Python prints them."""
    if category.__module__.split(".")[0] in ("featstore", "classifiers") and not _state["debug"]:
        _tagged("warning:", message)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")):
    _state["debug"] = debug
    warnings.showwarning = _show_warning


def deprecated_alias(old: str, new: str, *, short: str | None = None):
    """Keep an option's old spelling one release (issue 22, item 8: one meaning per option name).

    Placed below `@friendly` (above `@_with_formats`), e.g. `@deprecated_alias("--model",
    "--trained", short="-m")` on a command that declares only `--trained`: a hidden `--model`/`-m`
    (the new option's type, checks and metavar) reaches the new parameter with one `warning:` line;
    both spellings given (even the new one at its default) are one `error:` line, exit 2; a
    required new option stays required. Value options only (a --x/--no-x flag needs its own).
    """
    import inspect
    import typing

    def decorate(fn):
        hints = typing.get_type_hints(fn)
        params = [p.replace(annotation=hints[p.name]) for p in inspect.signature(fn).parameters.values()]
        target = next(p for p in params if isinstance(p.default, typer.models.OptionInfo)
                      and new in (p.default.param_decls or ()))
        required = target.default.default is ...
        alias = f"{target.name}__{old.lstrip('-').replace('-', '_')}"
        params[params.index(target)], hidden = _alias_options(target, hints[target.name], alias, old, short, required)
        context = inspect.Parameter(f"{alias}__ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

        @functools.wraps(fn)
        def wrapper(**kwargs):
            ctx = kwargs.pop(context.name)            # typer passes the click context to a typer.Context parameter
            old_value = kwargs.pop(alias)
            if _alias_given(ctx, target.name, alias, old, new):
                kwargs[target.name] = old_value
            elif required and kwargs[target.name] is None:
                ctx.fail(f"Missing option '{new}'.")  # click's own words and usage box, exit 2
            return fn(**kwargs)

        wrapper.__signature__ = inspect.Signature([*params, hidden, context])
        wrapper.__annotations__ = {p.name: p.annotation for p in [*params, hidden, context]}
        return wrapper

    return decorate


def _alias_given(ctx, name: str, alias: str, old: str, new: str) -> bool:
    """Whether the old spelling was given (one warning line); both spellings: one error line, exit 2."""
    command = " ".join(["ser", *ctx.command_path.split()[1:]])
    given = {n: getattr(ctx.get_parameter_source(n), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
             for n in (name, alias)}
    if given[alias] and given[name]:
        _error(f"{old} and {new} are one option of {command} ({old} is its old spelling): give {new} only")
        raise typer.Exit(2)
    if given[alias]:
        _tagged("warning:", f"{old} is deprecated for {command}: use {new} (the old spelling goes in the next release)")
    return given[alias]


def _alias_options(target, annotation, alias: str, old: str, short: str | None, required: bool):
    """(the new option without a default of its own when required, the hidden old spelling: a copy
    of it with the same type, checks (callback, min/max) and metavar, no default, no envvar)."""
    import copy
    import inspect

    info = copy.copy(target.default)
    info.default = None if required else info.default
    if required:                     # click's * marks only options it enforces itself: say it in words
        info.help = f"{info.help or ''} (required)".lstrip()
    old_info = copy.copy(info)
    old_info.param_decls = (old, short) if short else (old,)
    old_info.default, old_info.hidden, old_info.envvar = None, True, None
    return target.replace(default=info), inspect.Parameter(alias, inspect.Parameter.KEYWORD_ONLY,
                                                           annotation=annotation | None, default=old_info)


def _human(n: float) -> str:
    from featstore.units import human_size

    return human_size(n)


def _corpus(corpus: str | None) -> str:
    """The registered corpus name given (or configured); a misspelt one fails here, with a suggestion."""
    from featstore.config import default_corpus
    from featstore.corpora import get_corpus
    from featstore.errors import SerError

    corpus = corpus or default_corpus()
    if not corpus:
        raise SerError("no corpus given: pass --corpus NAME (see `ser corpora`) or set a default with "
                       "`ser config set corpus ravdess`")
    return get_corpus(corpus).name


def _root(corpus: str, root: Path | None) -> Path:
    from featstore.config import resolve_root

    return resolve_root(corpus, root)


def _model(model: str | None) -> str:
    from featstore.config import default_model

    return model or default_model()


def _cache(cache: Path | None) -> Path:
    from featstore.config import default_cache

    return Path(cache) if cache else default_cache()


def _device_opt(device: str | None) -> str:
    """The device option (or config default), validated before any heavy import."""
    from featstore.config import default_device
    from featstore.device import check_device

    return check_device(device or default_device())


CORPUS_OPT = typer.Option(None, "--corpus", "-c", help="Corpus name (see `ser corpora`); default: config `corpus`.")
ROOT_OPT = typer.Option(None, "--root", "-r", help="Unpacked corpus directory; default: config, $SER_DATA/<corpus>, data dir.")
MODEL_OPT = typer.Option(None, "--model", "-m", help="Hub id or local model directory; default: config `model` or facebook/wav2vec2-base.")
# Parse-time checks: a nonsense value is one line before any heavy import or any work.
def _whole_number(v) -> int:
    """Every int option's parser: Python's int() of the text. typer's default (a pydantic int) reads "0-2" as -2,
    so `--n 0-5` was refused as `--n -5`, a number nobody typed."""
    if isinstance(v, int):
        return v
    try:
        return int(str(v).strip())
    except ValueError:
        raise typer.BadParameter(f"{v!r} is not a whole number") from None


def _rule(check):
    """A typer callback applying `check(value) -> problem or None` to a given (non-None) option value."""

    def callback(param: typer.CallbackParam, value):
        if value is None or param.name is None:
            return value
        for v in value if isinstance(value, list | tuple) else [value]:
            problem = check(v)
            if problem:
                _error(f"{param.opts[0]} {repr(v) if isinstance(v, str) else v}: {problem}")
                raise typer.Exit(2)
        return value

    return callback


def _finite_positive(v: float) -> str | None:
    return None if math.isfinite(v) and v > 0 else "must be a finite number above 0"


def _target(v: str) -> str | None:
    """--target: a name of `classifiers.runs.dimensional.TARGETS`."""
    return None if v in TARGETS else f"choose one of {', '.join(TARGETS)}"


def _at_least(low: int):
    return lambda v: None if v >= low else f"must be at least {low}"


def _layer_spec(v: str) -> str | None:
    """all, 12, 3-9 or 6,12 (`classifiers.runs.configs.layer_spec_problem`: one check for every command)."""
    return layer_spec_problem(v)


_names = names_problem


def _output(suffixes: tuple[str, ...] = (), directory: bool = False):
    """A callback checking an output path (featstore.outputs.check_output) before any work."""

    def check(v) -> str | None:
        from featstore.outputs import OutputError, check_output

        try:
            check_output(v, option="", suffixes=suffixes, directory=directory)
        except OutputError as e:
            return str(e).lstrip(" ").split(": ", 1)[-1]
        return None

    return check


FINITE = _rule(_finite_positive)
AT_LEAST_1 = _rule(_at_least(1))
NOT_NEGATIVE = _rule(_at_least(0))
LAYERS = _rule(_layer_spec)
OUT_DIR = _rule(_output(directory=True))


def _figure_formats(v: str) -> str | None:
    from classifiers.results.plots import FigureFormatError, parse_formats

    try:
        parse_formats(v)
    except FigureFormatError as e:
        return str(e).split(": ", 1)[-1]
    return None


FORMAT_OPT = typer.Option(None, "--format", callback=_rule(_figure_formats), metavar="png,pdf,svg",
                          help="Figure formats, e.g. png,pdf (default png): every figure is written in each.")


def _with_formats(fn):
    """Run a command whose `fmt` parameter is FORMAT_OPT with its figures in those formats."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kwargs.get("fmt") is None:
            return fn(*args, **kwargs)
        from classifiers.results.plots import figure_formats

        with figure_formats(kwargs["fmt"]):
            return fn(*args, **kwargs)

    return wrapper


def _config_parameter(f, kind):
    """The typer option of config field `f` (type `kind`): `--head-lr` for `head_lr` or the field's
    `flag`, its short flag, default, help and parse-time `check`; a repeatable option for a `many`
    field; a `--x/--no-x` pair for a bool."""
    import inspect

    simple = (int, float, str, bool, int | None, float | None, str | None)
    meta = f.metadata
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    names = [f"{flag}/--no-{flag[2:]}" if kind is bool else flag] + ([meta["short"]] if meta.get("short") else [])
    many = meta.get("many")
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY,
        annotation=list[str] | None if many else kind if kind in simple else str | None,
        default=typer.Option(None if many else f.default, *names, help=help_text(f),
                             callback=_rule(meta["check"]) if meta.get("check") else None,
                             parser=_whole_number if kind in (int, int | None) else None))


def _config_options(config_cls, *, first: bool = False):
    """Give a command one option per CLI field of the dataclass `config_cls` (`_config_parameter`);
    the command receives them as one dict, `options` (a repeatable option not given is left out,
    so the field's default holds). `first`: the config's options come before the command's own in --help."""
    import dataclasses
    import inspect
    import typing

    hints = typing.get_type_hints(config_cls)
    extra = [_config_parameter(f, hints[f.name]) for f in dataclasses.fields(config_cls) if f.metadata.get("cli", True)]
    names = [p.name for p in extra]
    many = {f.name for f in dataclasses.fields(config_cls) if f.metadata.get("many")}

    def decorate(fn):
        hints_fn = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints_fn[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(fn).parameters.values() if p.name != "options"]

        @functools.wraps(fn)
        def wrapper(**kwargs):
            return fn(**{k: v for k, v in kwargs.items() if k not in names},
                      options={k: kwargs[k] for k in names if not (k in many and kwargs[k] is None)})

        ordered = extra + own if first else own + extra
        wrapper.__signature__ = inspect.Signature(ordered)
        wrapper.__annotations__ = {p.name: p.annotation for p in ordered}
        return wrapper

    return decorate


def _out_file(*suffixes: str):
    return _rule(_output(suffixes))


def _npz_out(param: typer.CallbackParam, value):
    """--out of an .npz export: a name without a suffix gets .npz (numpy's rule), then it is checked."""
    if value is not None and not Path(value).suffix and not Path(value).is_dir():
        value = Path(value).with_suffix(".npz")
    return _out_file(".npz")(param, value)


def _cache_dir(v) -> str | None:
    """--cache is read (and written by extract): never a file or a system path; it may be read-only."""
    from featstore.outputs import is_system_path

    resolved = Path(v).expanduser().resolve()
    if is_system_path(resolved):
        return f"a system path ({resolved}) cannot hold feature stores; choose a directory of yours"
    if resolved.exists() and not resolved.is_dir():
        return "is not a directory; give the directory that holds (or will hold) the stores"
    return None


CACHE_OPT = typer.Option(None, "--cache", callback=_rule(_cache_dir), help="Store directory; default: $SER_CACHE, config `cache`, or ./cache.")


def _backbone_dir(v) -> str | None:
    return None if Path(v).expanduser().is_dir() else ("no such directory; pass the directory that holds the "
                                                        "backbone's config.json and weights")


BACKBONE_OPT = typer.Option(None, "--backbone", callback=_rule(_backbone_dir), metavar="DIR",
                            help="The backbone of a saved probe or a LoRA adapter export, where it is now (it moved "
                                 "and is not found by its weights hash).")


def _check_device_option(value: str | None) -> str | None:
    """Parse-time check of --device, so a typo costs milliseconds, not a torch import."""
    from featstore.device import DeviceError, check_device

    if value is None:
        return None
    try:
        return check_device(value)
    except DeviceError as e:
        _error(e)
        raise typer.Exit(2) from e


DEVICE_OPT = typer.Option(None, "--device", callback=_check_device_option,
                          help="auto, cpu or cuda[:N]; default: config `device` or auto.")
DB_OPT = typer.Option(None, "--db", help="Run registry (SQLite); default: $SER_DB, config `db`, else one per user "
                                          "(~/.local/share/ser/ser.db).")


def _threads_spec(v: int) -> str | None:
    """--threads N: N >= 1, checked at parse time (no torch import)."""
    from featstore.threads import ThreadsError, check_threads

    try:
        check_threads(v)
    except ThreadsError as e:
        return str(e)
    return None


def _threads_help() -> str:
    from featstore.threads import HELP

    return HELP


THREADS_OPT = typer.Option(None, "--threads", parser=_whole_number, callback=_rule(_threads_spec), metavar="N", help=_threads_help())


def _threads(threads: int | None) -> int:
    """Apply --threads (else $SER_THREADS, config `threads`, the CPUs usable here) before any heavy import."""
    from featstore.threads import apply_threads

    return apply_threads(threads)


def _db(db: Path | None) -> Path:
    from featstore.config import default_db

    return Path(db) if db else default_db()


# ---------------------------------------------------------------------------------------------
# corpora, manifests, folds, synthetic corpora
# ---------------------------------------------------------------------------------------------

@app.command()
@friendly
def corpora(labels: bool = typer.Option(False, "--labels", help="Print the label mapping table instead."),
            long: bool = typer.Option(False, "--long", help="Also each corpus' class names, layout on disk, why "
                                      "its standard folds, source and licence.")):
    """List the supported corpora, one line each (--long: with layout, folds' reason, source and licence;
    --labels: every corpus code -> canonical label).

    Example: ser corpora --long
    """
    from featstore.corpora import REGISTRY
    from featstore.labels import canonical_order, mapping_table

    if labels:
        t = _table("corpus", "code", "canonical label", title="label mapping")
        for row in mapping_table():
            t.add_row(*row)
        console.print(t)
        return
    if not long:
        t = _table("corpus", "lang", "speakers", "classes", "utterances", "standard folds",
                   title="supported corpora", caption="ser corpora --long: class names, layout, why these folds, "
                   "source and licence", caption_justify="left")
        for c in REGISTRY:
            t.add_row(c.name, c.language, str(c.n_speakers or "?"), str(len(set(canonical_order(c.labels.values())))),
                      str(c.expected_count or "?"), c.protocol.name)
        console.print(t)
        return
    t = _table("corpus", "lang", "speakers", "classes", "utterances", "layout", "standard folds",
              "source / licence", title="supported corpora", show_lines=True)
    for c in REGISTRY:
        classes = ", ".join(canonical_order(c.labels.values()))
        t.add_row(c.name, c.language, str(c.n_speakers or "?"), classes, str(c.expected_count or "?"),
                  c.layout_hint, f"{c.protocol.name}: {c.protocol.why}",
                  f"{c.source.page or c.source.verified}\n{c.source.licence}")
    console.print(t)


@app.command()
@friendly
def models():
    """The backbone families, how each numbers its layers, known models and whether a local copy is here.

    Example: ser models
    """
    from rich.table import Column

    from featstore.backbones import FAMILIES, describe_model, models_table
    from featstore.config import default_model

    t = _table("family", Column("model", overflow="fold"), "layers", "hidden", "local copy")
    for r in models_table():
        t.add_row(r["family"], r["model"], str(r["layers"]), str(r["hidden_size"]), "yes" if r["local"] else "no")
    console.print(t)
    console.print("layer numbering (--layer k, --frames k):", highlight=False)
    conventions: dict[str, list[str]] = {}
    for f in FAMILIES:
        conventions.setdefault(f"[{f.input_kind}] {f.layers}", []).append(f.name)
    from rich.padding import Padding

    for text, names in conventions.items():    # wrapped at spaces, indented
        console.print(Padding(Text(f"{', '.join(names)} {text}"), (0, 0, 0, 2)), highlight=False)
    mine = describe_model(default_model())
    what = (mine["error"] or f"{mine['family']}, {mine['layers']} layers x {mine['hidden_size']}, local copy: yes"
            if mine["local"] else "no local copy (downloaded on first use unless HF_HUB_OFFLINE is set)")
    console.print(Text(f"configured model: {mine['model']}: {what}"), highlight=False)


def _print_problems(problems, limit: int = 50) -> None:
    for p in problems[:limit]:
        _tagged("skipped", f"{p.path}: {p.reason}")
    if len(problems) > limit:
        _tagged(f"... and {len(problems) - limit} more problems", "")
    if problems:
        reasons = Counter(p.reason.split(":")[0].split(" (")[0] for p in problems)
        _tagged("skipped in all:", "; ".join(f"{n} × {r}" for r, n in reasons.most_common()))


@app.command()
@friendly
def manifest(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the utterance table (.csv or .jsonl)."),
):
    """Read a corpus: counts per label and speaker, and every problem found.

    Example: ser manifest --corpus ravdess --root /data/RAVDESS --out ravdess.csv
    """
    from featstore.corpora import load_manifest
    from featstore.labels import canonical_order
    from featstore.outputs import atomic_output, check_output

    if out:
        out = check_output(out, option="--out", suffixes=(".csv", ".jsonl"))  # before the corpus is read
    corpus = _corpus(corpus)
    m = load_manifest(corpus, _root(corpus, root), progress=True)
    labels = m.label_counts()
    t = _table("label", "utterances", title=f"{m.corpus}: {len(m)} utterances, "
              f"{len(m.speaker_counts())} speakers, {sum(u.duration for u in m) / 3600:.2f} h")
    for label in canonical_order(labels):
        t.add_row(label, str(labels[label]))
    console.print(t)
    speakers = m.speaker_counts()
    console.print("speakers: " + ", ".join(f"{s} {n}" for s, n in sorted(speakers.items())), highlight=False)
    _print_problems(m.problems)
    if out:
        with atomic_output(out) as tmp:  # whole or not at all; a full disk is one line
            m.write(tmp)
        console.print(f"wrote {out}")


FOLDS_PROTOCOL_OPT = typer.Option("standard", "--protocol", "-p",
                                  help=f"{', '.join(PROTOCOLS)}.")


def _print_folds(m, fl, name: str) -> int:
    """The fold table (train/test counts, test speakers and labels, leaked speakers); the leaks' total."""
    from featstore.folds import fold_summary

    t = _table("fold", "train", "test", "test speakers", "test labels", "leaked speakers",
               title=f"{m.corpus}: protocol {name}, {len(fl)} folds")
    leaked_any = 0
    for row in fold_summary(m.utterances, fl):
        leaked = row["leaked_speakers"]
        leaked_any += leaked
        spk = row["test_speakers"]
        spk_text = ", ".join(spk[:8]) + (f" (+{len(spk) - 8})" if len(spk) > 8 else "")
        t.add_row(row["fold"], str(row["n_train"]), str(row["n_test"]), spk_text,
                  ", ".join(f"{k} {v}" for k, v in row["test_labels"].items()),
                  Text(str(leaked), style="red") if leaked else "0")
    console.print(t)
    return leaked_any


@app.command()
@friendly
def folds(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    protocol: str = FOLDS_PROTOCOL_OPT,
    seed: int = typer.Option(0, "--seed", parser=_whole_number, callback=NOT_NEGATIVE, help="Seed for speaker-kfold."),
):
    """Speakers and counts per fold, with a speaker-leakage check.

    Example: ser folds --corpus ravdess --root /data/RAVDESS --protocol luna5
    """
    from featstore.corpora import get_corpus, load_manifest
    from featstore.folds import check_protocol, make_folds

    corpus = _corpus(corpus)
    protocol = check_protocol(protocol)
    m = load_manifest(corpus, _root(corpus, root))
    _print_problems(m.problems, limit=10)
    name = protocol
    if protocol == "standard":
        standard = get_corpus(corpus).protocol
        name = standard.name
        console.print(f"standard protocol for {corpus}: {name} ({standard.why})", highlight=False)
    fl = make_folds(m.utterances, name, seed=seed)
    if _print_folds(m, fl, name):
        _tagged("warning:", f"protocol {name} is not speaker-independent on {m.corpus}: "
                  "speakers occur in both train and test")
    else:
        console.print("speaker overlap between train and test: 0 in every fold")


@app.command()
@friendly
def synth(
    like: str = typer.Option(..., "--like", help="Corpus whose layout, names, rates and durations to copy."),
    out: Path = typer.Option(..., "--out", "-o", callback=OUT_DIR, help="Directory to write the tree into."),
    n: int | None = typer.Option(None, "--n", parser=_whole_number, callback=AT_LEAST_1,
                                 help="Number of files (balanced over speakers and labels)."),
    seed: int = typer.Option(0, "--seed", parser=_whole_number, callback=NOT_NEGATIVE, help="Random seed (same seed, same bytes)."),
    max_duration: float | None = typer.Option(None, "--max-duration", callback=FINITE,
                                              help="Cap every file at S seconds."),
    sample_rate: int | None = typer.Option(None, "--sample-rate", parser=_whole_number, callback=AT_LEAST_1,
                                           help="Override every file's sample rate."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace an earlier synthetic corpus in --out (only the files it wrote)."),
):
    """Write a synthetic corpus in the real layout, with prosody-separable emotions.

    Example: ser synth --like ravdess --out /tmp/ravdess --n 240 --seed 0
    """
    from featstore.synth import synthesize

    res = synthesize(like, out, n=n, seed=seed, max_duration=max_duration, sample_rate=sample_rate, progress=True,
                     overwrite=overwrite)
    console.print(res.summary(), highlight=False)


# ---------------------------------------------------------------------------------------------
# extraction and stores
# ---------------------------------------------------------------------------------------------

def _executor_spec(v: str) -> str | None:
    """`--executor` checked at parse time (no Dask import)."""
    from classifiers.runs.executor import executor_problem

    return executor_problem(v)


def _torchrun():
    """The torchrun process group this process belongs to (None when not started by torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None    # one process: no torch import needed to learn it
    from featstore.extract import torchrun

    return torchrun()


@app.command()
@friendly
@_config_options(ExtractConfig)
def extract(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    model: str | None = MODEL_OPT,
    cache: Path | None = CACHE_OPT,
    device: str | None = DEVICE_OPT,
    executor: str | None = typer.Option(None, "--executor", callback=_rule(_executor_spec),
                                        help="Several corpora (--corpus a,b,c) or shards as tasks: local (one after "
                                             "another), local:N, dask://HOST:PORT or slurm."),
    threads: int | None = THREADS_OPT,
    options: dict | None = None,
):
    """Extract every layer of a model over a corpus into a crash-safe HDF5 store.

    Re-running resumes an interrupted run, extracts only new utterances of a grown corpus,
    and is a no-op when the store is complete. Under `torchrun --nproc-per-node N` each
    process extracts one shard. The options are `featstore.options.ExtractConfig`'s fields.

    Example: ser extract --corpus ravdess --root /data/RAVDESS --model facebook/wav2vec2-base
    """
    _threads(threads)
    config = ExtractConfig(**options)
    if executor is not None or (corpus and "," in corpus):
        return _extract_tasks(corpus, root, model, cache, device, executor, config)
    corpus, model, cache, device = _corpus(corpus), _model(model), _cache(cache), _device_opt(device)
    _extract_one(corpus, _root(corpus, root), model, cache, device, config)


def _extract_one(corpus: str, root: Path, model: str, cache: Path, device: str, config) -> None:
    """One corpus (one shard of it under torchrun or --shard) into its store, with one line on what was done."""
    from dataclasses import replace

    from featstore.corpora import load_manifest

    dist = _torchrun()
    if dist:
        config, device = replace(config, shard=dist.rank, shards=dist.world_size), dist.device(device)
    m = load_manifest(corpus, root, progress=config.shard == 0)
    tag = f"[shard {config.shard}/{config.shards}] " if config.shards > 1 else ""
    if not dist and _extract_up_to_date(m, model, cache, config, tag):
        return
    from featstore.extract import extract_manifest

    res = extract_manifest(m, model=model, cache=cache, device=device, **config.options(), progress=config.shard == 0
                           or not dist, on_skip=lambda s: _tagged("skipped", f"{s.path}: {s.reason}"),
                           on_wait=lambda line: _tagged("waiting", line))
    if dist:
        dist.barrier()
    _print_extracted(res, tag)
    if config.shards > 1 and (config.shard == 0 or not dist):
        console.print(f"read all shards as one store: ser store info {res.store.parent / (m.corpus + '.h5')}")


def _extract_up_to_date(m, model: str, cache: Path, config, tag: str) -> bool:
    """A no-op re-run answers from the model's files and the store, without torch (True: nothing to do)."""
    from featstore.modelfiles import model_slug
    from featstore.plan import quick_config, quick_up_to_date
    from featstore.store import store_path

    quick = quick_config(model, dtype=config.dtype, frames=config.frames, max_seconds=config.max_seconds)
    path = store_path(cache, model_slug(model), m.corpus, config.shard, config.shards)
    already = quick_up_to_date(m, path, quick, shard=config.shard, shards=config.shards)
    if already is not None:
        console.print(f"{tag}{path}: up to date ({already} utterances), nothing to extract", highlight=False)
    return already is not None


def _print_extracted(res, tag: str) -> None:
    """What an extraction did: frame layers added, labels refreshed, utterances extracted, or nothing."""
    if res.frames_added:
        console.print(f"{tag}{res.store}: added frame layers {','.join(map(str, res.frames_added))} "
                      f"(pooled features unchanged)", highlight=False)
        if not res.extracted and not res.skipped:
            return
    if res.relabelled:
        console.print(f"{tag}{res.store}: {res.relabelled} labels brought up to the corpus' labels as read now "
                      f"(features unchanged; runs registered over the old labels no longer match it)", highlight=False)
        if not res.extracted and not res.skipped and not res.frames_added:
            return
    if res.up_to_date:
        console.print(f"{tag}{res.store}: up to date ({res.already} utterances), nothing to extract")
        return
    console.print(f"{tag}{res.store}: extracted {res.extracted} utterances ({res.audio_seconds:.0f} s of audio, "
                  f"{res.speed:.1f} audio-s/s), {res.already} already there, {len(res.skipped)} skipped",
                  highlight=False)


def _extract_tasks(corpus, root, model, cache, device, executor, config) -> None:
    """`ser extract --corpus a,b,c` and/or `--executor`: one task per (corpus, shard), one line each."""
    from classifiers.runs.executor import extract_corpora, parse_executor
    from featstore.errors import SerError

    spec = parse_executor(executor)
    names = [_corpus(c.strip()) for c in (corpus or "").split(",") if c.strip()] or [_corpus(None)]
    if root is not None and len(names) > 1:
        raise SerError(f"--root names one corpus' directory, but --corpus names {len(names)}; set each root "
                       f"with `ser config set corpora.NAME.root DIR` and leave out --root")
    if config.shard:
        raise SerError("--shard picks one shard for one process; with --executor every shard runs as its own task, "
                       "leave out --shard")
    roots = [_root(c, root) for c in names]
    failures = []

    def on_done(outcome):
        r = outcome.result
        if not outcome.ok:
            failures.append(outcome)
            _tagged("failed:", f"{outcome.task.label}: {outcome.error}", "bold red")
        elif r.get("up_to_date"):
            console.print(f"{r['store']}: up to date ({r['already']} utterances), nothing to extract",
                          highlight=False)
        else:
            console.print(f"{r['store']}: extracted {r['extracted']} utterances ({r['audio_seconds']:.0f} s of "
                          f"audio) in {r['seconds']:.1f} s, {r['already']} already there, {r['skipped']} skipped",
                          highlight=False)

    def on_start(link):
        console.print(f"executor {spec}: Dask dashboard {link}", highlight=False, soft_wrap=True)

    outcomes = extract_corpora(names, roots, model=_model(model), cache=_cache(cache), device=_device_opt(device),
                               spec=spec, shards=config.shards, on_done=on_done, on_start=on_start,
                               options={k: v for k, v in config.options().items() if k not in ("shards", "shard")})
    console.print(f"{len(outcomes) - len(failures)} of {len(outcomes)} extraction task(s) done", highlight=False)
    if failures:
        raise typer.Exit(1)


@store_app.command("ls")
@friendly
def store_ls(cache: Path | None = CACHE_OPT):
    """List the stores in the cache.

    Example: ser store ls --cache cache
    """
    from featstore.store import list_stores

    cache = _cache(cache)
    rows = list_stores(cache)
    if not rows:
        console.print(f"no stores under {cache} (run `ser extract` first)")
        return
    t = _table("model", "corpus", "utterances", "layers", "size", "status", "path")
    for r in rows:   # one model id per weights (list_stores); other ids its stores recorded follow the table
        t.add_row(r["model"] or r["model_slug"], r["corpus"], str(r["utterances"]), str(r["layers"]),
                  _human(r["size"]), r["status"], r["path"])
    console.print(t)
    aliases: dict[str, set[str]] = {}
    for r in rows:
        if r["recorded"] and r["recorded"] != r["model"]:
            aliases.setdefault(r["model"], set()).add(r["recorded"])
    for model, names in aliases.items():   # one model, one id: what else its stores recorded
        console.print(f"{model}: also recorded as {', '.join(sorted(names))} (same weights)", highlight=False,
                      soft_wrap=True)


@store_app.command("info")
@friendly
def store_info_cmd(path: Path = typer.Argument(..., help="A store file (or <corpus>.h5 of a sharded store).")):
    """Counts, layers, size, configuration and skipped utterances of a store.

    Example: ser store info cache/facebook--wav2vec2-base/ravdess.h5
    """
    from featstore.labels import canonical_order
    from featstore.store import store_info

    info = store_info(path)
    cfg = info["config"]
    t = _table(show_header=False, title=str(path))
    for k, v in [("model", cfg.get("model_id")), ("revision", cfg.get("revision") or "-"),
                 ("weights sha256", cfg.get("weights_sha256", "")[:16] + "…"), ("model type", cfg.get("model_type")),
                 ("dtype", cfg.get("dtype")), ("layers", f"{info['layers']} (0..{info['layers'] - 1})"),
                 ("hidden size", info["hidden_size"]), ("frame layers", ", ".join(map(str, info["frame_layers"])) or "none"),
                 ("utterances", info["utterances"]), ("speakers", info["speakers"]),
                 ("audio", f"{info['seconds'] / 3600:.2f} h"),
                 ("labels", ", ".join(f"{k} {info['labels'][k]}" for k in canonical_order(info["labels"]))),
                 ("size", _human(info["size"])), ("files", "\n".join(info["paths"])),
                 ("created", info["attrs"].get("created")), ("code version", info["attrs"].get("code_version")),
                 ("layer convention", cfg.get("layer_convention")), ("skipped", len(info["skipped"])),
                 ("integrity", "checksummed (format 3: metadata, Fletcher-32 per chunk and sha256 per pooled layer, "
                               "verified on every read)" if info.get("format_version", 0) >= 3
                  else "data checksummed, metadata not (format 2: chunk indexes and attributes unchecksummed)"
                  if info["checksums"]
                  else "unverified: written before checksums; `ser store verify` checks that it reads end to end"),
                 ("digest", info.get("digest") or "not recorded (written before format 3)")]:
        t.add_row(k, str(v))
    console.print(t)
    for _uid, p, reason in info["skipped"]:
        console.print(f"  skipped {p}: {reason}", highlight=False)


@store_app.command("verify")
@friendly
def store_verify(path: Path = typer.Argument(..., help="A store file (or <corpus>.h5 of a sharded store).")):
    """Read a store end to end and report what is damaged (exit 2 if anything is).

    Example: ser store verify cache/facebook--wav2vec2-base/ravdess.h5
    """
    from featstore.store import StoreError, verify_store

    report = verify_store(path)
    for line in report.damaged:
        err.print(f"damaged: {line}", highlight=False)
    if not report.ok:
        raise StoreError(f"{path}: {len(report.damaged)} damaged; delete the damaged file and re-run the "
                         f"`ser extract` that made it")
    if report.unverified:
        how = (f"readable, but {len(report.unverified)} datasets have no checksums (written before format 2): "
               f"their numbers cannot be proven intact")
    elif report.partial:
        how = ("data checksums verified, but written before format 3: its chunk indexes and root attributes have "
               "no checksums (a moved chunk or an edited config would pass); re-extract to a new --cache for format 3")
    else:
        how = "checksums and content digests verified"
    console.print(f"{path}: intact, {len(report.files)} file(s), {_human(report.bytes_read)} read, {how}",
                  highlight=False, soft_wrap=True)


def _one_layer(what: str):
    """A --layer callback for a command that reads exactly one layer: the spec every --layer takes
    (12, all, 3-9, 6,12; `_layer_spec`) read by the probe's parser (`featstore.store.parse_layers`),
    and more than one layer refused in one line, `what` saying why ("ser store export writes one
    layer"). The command receives the layer as an int; the model's depth is checked when it is read."""

    def callback(param: typer.CallbackParam, value):
        if value is None or param.name is None:
            return value
        LAYERS(param, value)                                    # nonsense and negative layers: one line
        import re

        from featstore.store import StoreError, parse_layers

        wide = any(int(b) - int(a) > 1 for a, b in re.findall(r"(\d+)-(\d+)", value))   # never expanded
        try:
            layers = [] if value.strip() == "all" or wide else parse_layers(value, 1 << 30)
        except StoreError as e:                                 # an empty range, e.g. 9-3
            _error(e)
            raise typer.Exit(2) from None
        if len(layers) != 1:
            _error(f"--layer {value!r}: {what}: give one, e.g. --layer 12")
            raise typer.Exit(2)
        return layers[0]

    return callback


@store_app.command("export")
@friendly
def store_export(
    path: Path = typer.Argument(..., help="A store file."),
    layer: str = typer.Option(..., "--layer", "-l", callback=_one_layer("ser store export writes one layer"),
                              metavar="K", help="The one layer to write, e.g. 12 (counted from 0 as every --layer)."),
    stat: str = typer.Option("mean", "--stat", help="mean, std or mean+std."),
    out: Path = typer.Option(..., "--out", "-o", callback=_npz_out,
                             help="The .npz file to write (arrays id, X, label, speaker, corpus); .npz is added to a "
                                  "name without a suffix."),
):
    """Export one layer's pooled features as .npz.

    Example: ser store export cache/facebook--wav2vec2-base/ravdess.h5 --layer 12 --out l12.npz
    """
    from featstore.store import export_layer

    console.print(f"wrote {export_layer(path, layer, out, stat)}")


# ---------------------------------------------------------------------------------------------
# probes and neighbours
# ---------------------------------------------------------------------------------------------

def _table(*columns, **kw):
    """A rich Table that folds long values instead of cutting them (classifiers.results.records.table)."""
    from classifiers.results.records import table

    return table(*columns, **kw)


def _print_table(head, rows, title: str = "") -> None:
    from classifiers.results.records import table

    t = table(*head, title=title)
    for r in rows:
        t.add_row(*r)
    console.print(t)


def _print_files(files) -> None:
    """One written file per line (long paths stay whole)."""
    console.print("wrote:\n  " + "\n  ".join(str(f) for f in files), highlight=False, soft_wrap=True)


def _print_classes(results) -> None:
    """What cross-corpus harmonisation did: shared/training-only classes and rows left out."""
    for tset, info in results.meta.get("classes", {}).items():
        line = f"{tset}: classes {info['policy']}"
        if info["policy"] == "shared":
            line += f" (trained on and predicted among {', '.join(info['shared']) or 'none'})"
        if info["train_only"]:
            left = "left out of training" if info["policy"] == "shared" else "can be predicted, never true"
            line += f"; training-only classes ({left}): {', '.join(info['train_only'])}"
        if info["test_only"]:
            line += f"; test-only classes: {', '.join(info['test_only'])}"
        console.print(line, highlight=False)
    for fold, dropped in results.dropped_train.items():
        console.print(f"{fold}: training rows left out: " + ", ".join(f"{k} ({v})" for k, v in dropped.items()),
                      highlight=False)
    for fold, dropped in results.dropped.items():
        console.print(f"{fold}: test rows dropped (class not trained on): "
                      + ", ".join(f"{k} ({v})" for k, v in dropped.items()), highlight=False)


OVERWRITE_OPT = typer.Option(False, "--overwrite", help="Replace the results already in --out.")
FORCE_OPT = typer.Option(False, "--force", help="Run again (into a new folder) even if the registry holds this exact run.")


def _old_seeds_count(v: str) -> str | None:
    """`--seeds N`, a count (read as text: typer's int reads "0-2" as -2)."""
    if v.strip().isdigit() and int(v) >= 1:
        return None
    hint = "" if seed_spec_problem(v) else f"; for the seeds {v.strip()} write --seed {v.strip()}"
    return f"a count of at least 1 (deprecated: --seeds N is the old spelling of --seed 0-(N-1)){hint}"


SEEDS_OPT = typer.Option(None, "--seeds", callback=_rule(_old_seeds_count), hidden=True,
                         help="Deprecated: --seed 0-(N-1).")


def _old_seeds(seeds: str | None, options: dict) -> dict:
    """The deprecated `ser probe --seeds N` as `--seed 0-(N-1)`, with one warning line; both: one error line."""
    if seeds is None:
        return options
    if options.get("seed", "0") != "0":
        _error("--seeds and --seed are one option of ser probe (--seeds N is the old spelling of --seed 0-(N-1)): "
               "give --seed only")
        raise typer.Exit(2)
    from featstore.options import seeds_spec

    spec = seeds_spec(list(range(int(seeds))))
    _tagged("warning:", f"--seeds is deprecated for ser probe: use --seed {spec} (the old spelling goes in the next "
                        f"release)")
    return {**options, "seed": spec}


MATRIX_OPT = typer.Option(None, "--matrix", callback=_rule(names_problem),
                          help="Transfer matrix over corpora at one --layer, e.g. ravdess,emodb,emovo,cremad.")
PROBE_OUT_OPT = typer.Option(None, "--out", "-o", callback=OUT_DIR, help="Results directory (default: probe-... named "
                             "by the settings, in the results root).")
SAVE_PROBE_OPT = typer.Option(None, "--save-probe", callback=OUT_DIR, help="Also fit the probe on all of --corpus at "
                              "one --layer and save it for `ser predict` (logreg only).")


@app.command()
@friendly
@_config_options(ProbeConfig, first=True)
@_with_formats
def probe(
    matrix: str | None = MATRIX_OPT,
    model: str | None = MODEL_OPT,
    cache: Path | None = CACHE_OPT,
    device: str | None = DEVICE_OPT,
    out: Path | None = PROBE_OUT_OPT,
    overwrite: bool = OVERWRITE_OPT,
    save_probe: Path | None = SAVE_PROBE_OPT,
    db: Path | None = DB_OPT,
    force: bool = FORCE_OPT,
    fmt: str | None = FORMAT_OPT,
    threads: int | None = THREADS_OPT,
    seeds: str | None = SEEDS_OPT,
    options: dict | None = None,
):
    """Probe cached features: layer sweeps, multi-corpus training, cross-corpus transfer.

    Every run is registered (--db): an identical one is shown unless --force. Several --train sets: differences
    against the first (speaker CI, paired p, Holm). Options: ProbeConfig's fields (MatrixConfig's with --matrix).

    Examples:
      ser probe --layer 12                          (every cached corpus, side by side)
      ser probe --corpus ravdess --train ravdess --train ravdess,emodb --train ravdess,emodb,emovo
      ser probe --train ravdess,emodb --test cremad --layer 12 --classes shared
      ser probe --matrix ravdess,emodb,emovo,cremad --layer 12
      ser probe --corpus iemocap --target avd       (CCC per layer for arousal, valence, dominance)
    """
    _threads(threads)
    from classifiers.results.registry import Registry

    config = ProbeConfig(model=model, **_old_seeds(seeds, options))
    config.check_savable(save_probe, matrix=bool(matrix))
    run = dict(cache=_cache(cache), registry=Registry(_db(db)), force=force, overwrite=overwrite, progress=True,
               command=_command(), out=out)
    if matrix:
        return _probe_matrix(MatrixConfig.from_probe(config, matrix), device=_device_opt(device), **run)
    if config.dimensional:
        return _probe_dimensions(config, config.run(**run), run["registry"])
    _probe_sweep(config, save_probe=save_probe, device=_device_opt(device), **run)


def _print_registered(reg, registry) -> None:
    """Whether a run was computed and registered, or an identical registered run is shown."""
    run = reg.run
    if reg.reused:
        console.print(f"run {run['id']} ({run['created']}) already holds this configuration over these stores: "
                      f"showing it (--force runs it again)", highlight=False)
    else:
        console.print(f"registered run {run['id']} in {registry.path}", highlight=False)


def _probe_sweep(config, *, save_probe, out, cache, registry, **run) -> None:
    """`ser probe` of a categorical target: one registered run per test corpus (every cached one
    when none is named), their summary side by side, training-set differences, a saved probe."""
    from classifiers.results.records import ProbeResults, summary_table
    from featstore.store import cached_corpora

    corpora = (cached_corpora(cache, config.model) if config.corpus is None and not config.train and not config.test
               else [config.corpus])
    runs, combined = [], ProbeResults()
    for c in corpora:
        reg = config.for_corpus(c).run(cache=cache, registry=registry, out=out / c if out and len(corpora) > 1
                                       else out, **run)
        runs.append(reg)
        combined.extend(reg.results)
        _print_classes(reg.results)
        _print_registered(reg, registry)
    console.print(summary_table(combined, title=f"probe, model {config.model}"))
    if len(config.train) > 1:
        _print_differences(combined, against=config.train[0])
    _print_files([f for r in runs for f in r.files] or [r.run["out"] for r in runs])
    if save_probe:
        from classifiers.runs.probe import fit_and_save_probe

        path = fit_and_save_probe(save_probe, config.train or [runs[0].results.meta["corpus"]], layer=config.layers,
                                  stat=config.stat, model=config.model, cache=cache, C=config.C, device=run["device"])
        console.print(f"saved probe: {path} (use: ser predict FILE... --trained {save_probe})", highlight=False)


def _probe_matrix(config, *, registry, **run) -> None:
    """`ser probe --matrix`: every corpus against every other at one layer, registered (kind
    "matrix"), UAR or, with a dimensional --target, CCC per cell."""
    reg, details = config.run(registry=registry, **run)
    _print_registered(reg, registry)
    if config.dimensional:
        from classifiers.runs.dimensional import matrix_table

        m = reg.results
        console.print(matrix_table(m, title=f"transfer {config.target} ({config.classifier}), model {config.model}, "
                                            f"layer {m.meta['layer']} (CCC on [-1, 1]; CI: jackknife-t over test "
                                            f"speakers)"))
        _print_files([reg.run["out"]])
        return
    k = next(iter(details.values()))["layer"]
    _print_matrix(details, config.corpora, title=f"transfer, model {config.model}, layer {k} ({config.classifier})")
    for (a, b), d in details.items():
        for dropped in d["dropped"].values():
            console.print(f"{a} → {b}: test rows dropped (class not shared): "
                          + ", ".join(f"{c} ({v})" for c, v in dropped.items()), highlight=False)
    _print_files(reg.files or [reg.run["out"]])


def _probe_dimensions(config, reg, registry) -> None:
    """`ser probe --target DIM`: the regressor per layer, registered like every probe (classifiers.runs.dimensional)."""
    from classifiers.runs.dimensional import summary_lines, summary_table

    meta = reg.results.meta
    _print_registered(reg, registry)
    if meta.get("left_out"):
        console.print("left out (no " + "/".join(meta["dimensions"]) + " annotation): "
                      + ", ".join(f"{c} {n}" for c, n in meta["left_out"].items()), highlight=False)
    console.print(summary_table(reg.results, title=f"probe {config.target} ({config.classifier}), model {config.model}, "
                                                   f"{meta['protocol']} (CCC on [-1, 1]; CI: jackknife-t over test "
                                                   f"speakers)"))
    for line in summary_lines(reg.results):
        console.print(line, highlight=False)
    _print_files([reg.run["out"]])


def _print_matrix(details: dict, corpora: list, title: str) -> None:
    """The transfer matrix of pooled UAR, then one row per cell: the headline (pooled UAR, 95%
    speaker CI), mean ± std over the diagonal's folds, classes and chance."""
    from classifiers.results.records import headline_table
    from classifiers.runs.probe import pooled_matrix

    P = pooled_matrix(details, corpora)
    _print_table(["train \\ test", *corpora],
                 [[a, *["–" if P[i, j] != P[i, j] else f"{P[i, j]:.3f}" for j in range(len(corpora))]]
                  for i, a in enumerate(corpora)], title=f"{title}: pooled UAR")
    rows = [dict(d, train_set=a, test_set=b, classifier=d.get("classifier", "")) for (a, b), d in details.items()]
    console.print(headline_table(rows, lead=lambda r: [f"{r['train_set']} → {r['test_set']}"],
                                 lead_columns=["train → test"], layer=False, best=False, others=False,
                                 title=f"{title}: cells"))


def _print_differences(results, against: str, metric: str = "uar") -> None:
    """Each training set minus `against`, per classifier and layer: difference, CI, p, Holm."""
    from classifiers.results.compare import train_set_differences

    rows = train_set_differences(results, metric)
    _print_table(["classifier", "layer", "training set", f"Δ {metric.upper()} vs {against}", "95% speaker CI", "p",
                  "p (Holm)"],
                 [[r["classifier"], str(r["layer"]), r["train_set"], f"{r['diff']:+.3f}", f"[{r['low']:+.3f}, {r['high']:+.3f}]",
                   f"{r['p']:.3g}", f"{r['p_holm']:.3g}"] for r in rows],
                 title=f"training sets against {against} (paired, same test utterances; Holm over {len(rows)} tests)")


@app.command()
@friendly
@_config_options(NeighborsConfig, first=True)
@_with_formats
def neighbors(
    model: str | None = MODEL_OPT,
    cache: Path | None = CACHE_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", callback=OUT_DIR, help="Results directory (default: "
                                    "neighbors-... named by the settings, in the results root)."),
    overwrite: bool = OVERWRITE_OPT,
    db: Path | None = DB_OPT,
    force: bool = FORCE_OPT,
    fmt: str | None = FORMAT_OPT,
    threads: int | None = THREADS_OPT,
    options: dict | None = None,
):
    """What each layer encodes: neighbour purity (emotion, speaker, gender, language, corpus),
    speaker-independent kNN accuracy and cross-corpus retrieval, with exact faiss search.

    Every run is registered (the run registry, one per user; scores: the kNN records); an identical configuration
    over identical stores shows the registered run unless --force. The options are
    `classifiers.runs.configs.NeighborsConfig`'s fields.

    Example: ser neighbors --corpus ravdess,emodb --layer all --k 10
    """
    _threads(threads)
    from classifiers.results.registry import Registry
    from classifiers.results.runfiles import command_line

    config = NeighborsConfig(model=model, **options)
    registry = Registry(_db(db))
    nb = config.run(cache=_cache(cache), registry=registry, force=force, out=out, overwrite=overwrite, progress=True,
                    command=command_line())
    _print_registered(nb, registry)
    _print_neighbors(nb, config)


def _print_neighbors(nb, config) -> None:
    """A neighbours run's tables: purity vs chance, kNN classification, cross-corpus retrieval."""
    k, model = config.k, config.model
    report = nb.report
    _print_table(*report.table_rows(knn=False), title=f"neighbour purity (k={k}) vs chance, "
                                                      f"{', '.join(report.corpora)}, model {model}")
    if report.knn:
        from classifiers.results.records import summary_table

        console.print(summary_table(nb.results, title=f"kNN emotion classification (k={k}, {report.protocol})"))
    head, rows = report.cross_rows()
    if rows:
        t = _table(*head, title="cross-corpus retrieval (each pair a single split: no std)",
                   caption="classes: shared by both corpora; chance UAR 1/classes. kNN UAR: 95% CI over the query "
                           "corpus' speakers.", caption_justify="left")
        for r in rows:
            t.add_row(*r)
        console.print(t)
    if nb.reused:
        console.print(f"folder: {nb.run['out']}", highlight=False, soft_wrap=True)
    else:
        _print_files(nb.files)


# ---------------------------------------------------------------------------------------------
# configuration and downloads
# ---------------------------------------------------------------------------------------------

config_app = typer.Typer(help="Show or change defaults: model, cache, device, data roots.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@friendly
def config_show():
    """Every setting, its value and where it comes from.

    Example: ser config show
    """
    from featstore.config import config_path, show

    t = _table("key", "value", "source", title=str(config_path()))
    for key, value, source in show():
        t.add_row(key, "" if value is None else str(value), source)
    console.print(t)


@config_app.command("set")
@friendly
def config_set(key: str = typer.Argument(..., help="e.g. model, cache, device, data, corpus, corpora.ravdess.root"),
               value: str = typer.Argument(..., help="The value.")):
    """Set a default.

    Example: ser config set corpora.ravdess.root /data/RAVDESS
    """
    from featstore.config import set_value

    console.print(f"{key} = {value}  ({set_value(key, value)})", highlight=False)


@config_app.command("unset")
@friendly
def config_unset(key: str = typer.Argument(..., help="The key to remove.")):
    """Remove a setting (its default applies again).

    Example: ser config unset model
    """
    from featstore.config import unset_value

    console.print(f"{key} removed" if unset_value(key) else f"{key} was not set")


@app.command()
@friendly
def download(
    corpus: str | None = typer.Argument(None, help="Corpus to download (see --list)."),
    to: Path | None = typer.Option(None, "--to", help="Target directory (default <data dir>/<corpus>)."),
    url: str | None = typer.Option(None, "--url", help="Another URL or a local archive of the same corpus."),
    md5: str | None = typer.Option(None, "--md5", help="Expected MD5 of the archive."),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected SHA-256 of the archive."),
    force: bool = typer.Option(False, "--force", help="Download again even if the corpus is there."),
    list_: bool = typer.Option(False, "--list", help="List where each corpus comes from."),
):
    """Download and unpack a corpus (resumable, checksummed, safe extraction), then check it.

    Corpora behind a licence or registration print where and how to obtain them instead.
    Example: ser download ravdess
    """
    from featstore.download import SOURCE_COLUMNS, sources
    from featstore.download import download as fetch_corpus

    if list_ or not corpus:
        t = _table(*SOURCE_COLUMNS, title="corpus sources")
        for row in sources():
            t.add_row(*[row[c] for c in SOURCE_COLUMNS])
        console.print(t)
        return
    if to is not None:
        from featstore.outputs import check_output

        check_output(to, option="--to", directory=True)
    res = fetch_corpus(corpus, to, url=url, md5=md5, sha256=sha256, force=force, progress=True)
    console.print(res.summary(), highlight=False)


# ---------------------------------------------------------------------------------------------
# fine-tuning and prediction
# ---------------------------------------------------------------------------------------------

def _finetune_config_cls():
    from classifiers.finetuning.finetune import FinetuneConfig

    return FinetuneConfig


@app.command()
@friendly
@_config_options(_finetune_config_cls())
@_with_formats
def finetune(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    train: str | None = typer.Option(None, "--train", help="Training corpora, e.g. ravdess,emodb (tested on --corpus' folds)."),
    model: str | None = MODEL_OPT,
    protocol: str | None = typer.Option(None, "--protocol", "-p", help="Fold protocol; default: the corpus' standard one."),
    device: str | None = DEVICE_OPT,
    out: Path | None = typer.Option(None, "--out", "-o", callback=OUT_DIR, help="Run directory (default: finetune-... in the results root)."),
    db: Path | None = DB_OPT,
    fmt: str | None = FORMAT_OPT,
    threads: int | None = THREADS_OPT,
    options: dict | None = None,
):
    """Fine-tune the model end to end over speaker-independent folds (model selection on
    validation speakers, never the test fold); resumes an interrupted run.

    Checkpoints' optimizer.pt, scheduler.pt and rng_state.pth are pickles (torch.load with
    weights_only=True on resume): resume only runs you wrote; exported <fold>/model/ hold none.
    The finished run is registered (kind finetune, every fold's test predictions) for `ser results
    compare`; running it again resumes and registers the folder anew.

    Example: ser finetune --corpus ravdess --model facebook/wav2vec2-large-xlsr-53 --protocol luna5 --epochs 6
    """
    _threads(threads)
    from classifiers.finetuning.finetune import FinetuneConfig, default_run_dir, finetune_data
    from classifiers.finetuning.finetune import finetune as run_finetune
    from featstore.device import check_device

    corpus, model = _corpus(corpus), _model(model)
    config = FinetuneConfig(model=model, device=check_device(_device_opt(device)), **options)
    data = finetune_data(corpus, root=root, train=train or "", protocol=protocol)
    _print_problems(data.problems, limit=10)
    res = run_finetune(data.utterances, data.folds, config, out_dir=out or default_run_dir(data.name, data.protocol,
                       config), protocol=data.protocol)
    _print_finetune(res, config, f"{model} on {data.name} ({data.protocol}")
    _register_finetune(db, res, data, config)


def _register_finetune(db, res, data, config) -> None:
    """Every finished fine-tune is registered, once per run folder (a re-run replaces its row)."""
    from classifiers.results.registry import Registry, register_finetune
    from classifiers.results.runfiles import command_line

    registry = Registry(_db(db))
    run_id = register_finetune(registry, res, data.utterances, data.folds, config, corpus=data.corpus,
                               train=data.extra, protocol=data.protocol, command=command_line())
    if run_id:
        console.print(f"registered run {run_id} in {registry.path} (ser results show {run_id})", highlight=False)


def _print_finetune(res, config, what: str) -> None:
    """A fine-tune's scores: each test fold, the pooled headline (classes, dimensions), restricted folds."""
    from classifiers.finetuning.finetune import to_probe_results
    from classifiers.results.records import summary_table

    dims = config.dims
    cols = (["WA", "UAR", "macro-F1"] if res.labels else []) + [f"CCC {d}" for d in dims] + (["mean CCC"] if dims else [])
    keys = (["wa", "uar", "macro_f1"] if res.labels else []) + [f"ccc_{d}" for d in dims] + (["ccc"] if dims else [])
    target = f", target {config.target}" if dims else ""
    t = _table("fold", "test utterances", *cols, title=f"fine-tuned {what}{target}): each test fold")
    for f in res.folds:
        t.add_row(str(f.fold), str(f.n_test), *[f"{f.metrics[k]:.3f}" for k in keys])
    console.print(t)
    if res.folds and res.labels:
        console.print(summary_table(to_probe_results(res), title=f"fine-tuned {what})"))
    if res.folds and dims:
        _print_finetune_dimensions(res, f"fine-tuned {what}){target}")
    for f in res.folds:
        if f.restricted:
            console.print(f"{f.fold}: trained classes {', '.join(f.training_only)} are not declared by the test "
                          f"corpora; restricted to {', '.join(f.restricted['labels'])}: WA {f.restricted['wa']:.3f}, "
                          f"UAR {f.restricted['uar']:.3f}, macro-F1 {f.restricted['macro_f1']:.3f}", highlight=False,
                          soft_wrap=True)
    console.print("wrote " + ", ".join(str(p) for p in res.files.values()), highlight=False, soft_wrap=True)


def _print_finetune_dimensions(res, title: str) -> None:
    t = _table("dimension", "CCC pooled over folds [95% CI]", "Pearson r", "RMSE", "CCC folds mean ± std",
               title=f"{title}: test predictions of every fold (ratings on [-1, 1]; CI: jackknife-t over test speakers)")
    for d, r in res.dimension_summary().items():
        ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None else " (no CI)"
        t.add_row(d, f"{r['ccc']:.3f}{ci}", f"{r['pearson']:.3f}", f"{r['rmse']:.3f}",
                  f"{r['ccc_folds_mean']:.3f} ± {r['ccc_folds_std']:.3f}")
    console.print(t)


TRAINED_HELP = "A fine-tuned model directory or a saved probe (--save-probe)."
TRAINED_OPT = typer.Option(..., "--trained", help=TRAINED_HELP)
PREDICT_JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table (the CSV's fields: file, predicted, "
                                "p_<class> per class, the value per dimension of a --target model, model).")
PREDICT_OUT_OPT = typer.Option(None, "--out", "-o", callback=_out_file(),
                               help="Also write a CSV file: file, predicted, p_<class> per class, <dimension> "
                                    "values (a --target model), model.")
PREDICT_TARGET_OPT = typer.Option(None, "--target", callback=_rule(_target),
                                  help=f"Which outputs: {', '.join(TARGETS)} (default: every output the model has).")


@app.command()
@friendly
@deprecated_alias("--model", "--trained", short="-m")
def predict(
    files: list[Path] = typer.Argument(..., help="Audio files."),
    trained: Path = TRAINED_OPT,
    as_json: bool = PREDICT_JSON_OPT,
    out: Path | None = PREDICT_OUT_OPT,
    device: str | None = DEVICE_OPT,
    backbone: Path | None = BACKBONE_OPT,
    threads: int | None = THREADS_OPT,
    target: str | None = PREDICT_TARGET_OPT,
):
    """Emotion probabilities per file, from a fine-tuned model or a saved probe; a model fine-tuned with
    --target prints its arousal / valence / dominance values on [-1, 1] (beside the classes' with --multitask);
    --target keeps the classes (emotion) or the dimensions named.

    Example: ser predict clip1.wav clip2.wav --trained RUN/luna-0/model --out preds.csv
    """
    _threads(threads)
    device = _device_opt(device)                       # a typo costs milliseconds, not a torch import
    from classifiers.finetuning.inference import predict_files
    from featstore.serialize import dumps

    found = predict_files(files, trained, target=target, device=device, backbone=backbone)
    if out is not None:
        found.write_csv(out)
    if as_json:       # the CSV's fields: file, predicted, p_<class> per class, <dimension> values, model
        print(dumps(found.records(), indent=1))
        return
    # a table where it fits, else one `file: ...` block per file (classifiers.results.records.table): never cut
    _print_table(*found.table(), title=f"{', '.join(found.dims)} on [-1, 1] (low to high)" if found.dims else "")
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


# ---------------------------------------------------------------------------------------------
# word alignment
# ---------------------------------------------------------------------------------------------

CTC_MODEL_OPT = typer.Option(None, "--ctc-model", help="CTC model (Wav2Vec2ForCTC hub id or directory); default: with "
                             "--show/--example the one that aligned the corpus, else $SER_CTC_MODEL, else one per "
                             "language (English, German).")
MAX_SECONDS_OPT = typer.Option(30.0, "--max-seconds", callback=FINITE, help="Clips longer than this are aligned in windows.")
SHOW_OPT = typer.Option(None, "--show", metavar="ID", help="Print the cached words of this utterance id.")
EXAMPLE_OPT = typer.Option(None, "--example", metavar="ID", help="Save a word-swap example of this utterance id.")
EXAMPLE_OUT_OPT = typer.Option(Path("wordswap-example"), "--out", "-o", callback=OUT_DIR,
                               help="Directory --example writes: original, donor and result WAVs, boundaries PNG.")
EXAMPLE_SEED_OPT = typer.Option(0, "--seed", parser=_whole_number, callback=NOT_NEGATIVE, help="Seed of --example's donor and word draw.")


@app.command()
@friendly
@deprecated_alias("--model", "--ctc-model", short="-m")
def align(
    corpus: str | None = CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    ctc_model: str | None = CTC_MODEL_OPT,
    cache: Path | None = CACHE_OPT,
    device: str | None = DEVICE_OPT,
    max_seconds: float = MAX_SECONDS_OPT,
    show: str | None = SHOW_OPT,
    example: str | None = EXAMPLE_OPT,
    out: Path = EXAMPLE_OUT_OPT,
    seed: int = EXAMPLE_SEED_OPT,
    threads: int | None = THREADS_OPT,
):
    """Word boundaries by CTC forced alignment, cached beside the stores (resumable). --show ID prints an utterance's
    words, --example ID saves a word swap (WAVs + PNG), by default in ID's corpus with the CTC model that aligned it.

    Example: ser align --corpus ravdess --ctc-model facebook/wav2vec2-base-960h; ser align --show ravdess-03-01-05-01-01-01-01
    """
    _threads(threads)
    from classifiers.finetuning.wordswap import WordSwap, save_example  # light: numpy and featstore.align
    from featstore.align import align_corpus, corpus_of, ctc_model_for, find_utterance, show_alignment
    from featstore.corpora import load_manifest

    if show:          # the corpus from the utterance id, the model from the alignments cached for it
        found = show_alignment(_cache(cache), show, corpus=corpus, model=ctc_model)
        return (console.print(f"{show}: not aligned: {found.error}", highlight=False) if found.error
                else _print_table(*found.table(), title=f"{show}: {found.text}"))
    corpus = _corpus(corpus or (corpus_of(example) if example else None))
    m = load_manifest(corpus, _root(corpus, root))
    _print_problems(m.problems, limit=10)
    ctc_model = ctc_model_for(_cache(cache), corpus, m.utterances, model=ctc_model, utterance_id=example)  # checks ID
    run = align_corpus(m.utterances, ctc_model, cache=_cache(cache), device=_device_opt(device),
                       max_seconds=max_seconds, progress=True)
    for why in run.failure_lines(limit=10):
        _tagged("not aligned:", why)
    console.print(run.summary(), highlight=False)
    if example:       # a word swap of that utterance: original, donor and result WAVs, the boundaries PNG
        swapper = WordSwap(1.0, model=ctc_model).bind(m.utterances, sample_rate=16000, cache=_cache(cache))
        _print_files(save_example(swapper, find_utterance(m.utterances, example, corpus), out, seed=seed).values())


# ---------------------------------------------------------------------------------------------
# the run registry, comparisons, reports, studies, scoring saved models
# ---------------------------------------------------------------------------------------------

results_app = typer.Typer(help="The run registry: list, show, compare and export registered runs.",
                          no_args_is_help=True)
app.add_typer(results_app, name="results")
study_app = typer.Typer(help="Run a whole comparison declared in one TOML study file.", no_args_is_help=True)
app.add_typer(study_app, name="study")


def _run_kinds() -> tuple[str, ...]:
    """The run kinds, from the one list in the registry module (read without numpy)."""
    from classifiers.results.registry import KINDS

    return KINDS


def _run_kind(v: str) -> str | None:
    return None if v in _run_kinds() else f"use one of {', '.join(_run_kinds())}"


def _run_where(run: dict) -> str:
    """What a run trained and tested on, from its configuration: "ravdess | ravdess,emodb → cremad",
    a matrix's corpora "ravdess × emodb", a fine-tuned run's corpus (and extra training corpora)."""
    cfg = run["config"]
    if run["kind"] == "matrix":
        return " × ".join(cfg.get("corpora") or [])
    if run["kind"] == "finetune" and cfg.get("train"):
        return "+".join([cfg.get("corpus") or "", *cfg["train"]]) + f" → {cfg.get('corpus')}"
    where = " | ".join(cfg.get("train") or []) or cfg.get("corpus") or ""
    return where + (f" → {cfg['test']}" if cfg.get("test") else "")


@results_app.command("ls")
@friendly
def results_ls(
    corpus: str | None = typer.Option(None, "--corpus", "-c", help="Only runs on this corpus."),
    model: str | None = typer.Option(None, "--model", "-m", help="Only runs of this model (substring)."),
    classifier: str | None = typer.Option(None, "--classifier", help="Only runs of this classifier."),
    kind: str | None = typer.Option(None, "--kind", callback=_rule(_run_kind),
                                    help=f"Only runs of this kind: {', '.join(_run_kinds())}."),
    db: Path | None = DB_OPT,
):
    """List registered runs with their kind and best mean score over folds (UAR; CCC for a dimension).

    Example: ser results ls --corpus ravdess --kind matrix
    """
    from classifiers.results.registry import Registry

    registry = Registry(_db(db))
    rows = []
    for r in registry.runs(corpus=corpus, model=model, classifier=classifier, kind=kind):
        uar = registry.best_mean(r["id"])
        ccc = registry.best_mean(r["id"], "ccc") if uar is None else None   # a dimensional run
        best = f"UAR {uar:.3f}" if uar is not None else f"CCC {ccc:.3f}" if ccc is not None else "–"
        rows.append([r["id"], r["created"][:16].replace("T", " "), r["kind"], r["corpus"] or "", r["model"] or "",
                     r["classifier"] or "", _run_where(r), best])
    from classifiers.results.records import table

    t = table("run", "created", "kind", "corpus", "model", "classifier", "train", "best mean",
              title=f"{len(rows)} run(s) in {registry.path}")
    t.columns[0].no_wrap = True  # ids are what the other verbs take: never folded
    for r in rows:
        t.add_row(*r)
    console.print(t)


def _run_table(run: dict, results):
    """A registered run's headline table: pooled UAR with its speaker CI, or CCC for emotion dimensions."""
    from classifiers.finetuning.finetune import is_dimension_run, registered_dimension_table
    from classifiers.runs.study import is_dimensional

    title = f"run {run['id']}: CCC on [-1, 1], jackknife-t speaker CI"
    if is_dimension_run(run):           # a fine-tune on emotion dimensions, or such a model evaluated
        return registered_dimension_table(run, title=title)
    if is_dimensional(run):
        from classifiers.runs.dimensional import matrix_table, summary_table

        return (matrix_table if run["kind"] == "matrix" else summary_table)(results, title=title)
    from classifiers.results.records import summary_table

    return summary_table(results, title=f"run {run['id']}")


@results_app.command("show")
@friendly
def results_show(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough) or its results folder."), db: Path | None = DB_OPT):
    """One run: configuration, stores, scores (pooled UAR with its 95% speaker CI, mean ± std over folds),
    and its configuration as the TOML [[cells]] entry of a study file that would re-create it.

    Example: ser results show 3fa9c2
    """
    from classifiers.results.registry import Registry
    from classifiers.runs.study import load_run

    run = Registry(_db(db)).run(run_id)
    results = load_run(run)             # damaged or missing files: one line, before any table
    _print_table(["key", "value"], [[k, str(run[k])] for k in ("id", "kind", "created", "command", "model", "corpus",
                                                                 "classifier", "code_version", "out", "predictions")]
                 + [["config", str(run["config"])]] + [["store", str(s)] for s in run["stores"]], title=f"run {run['id']}")
    console.print(_run_table(run, results))
    from classifiers.results.records import study_cell

    console.print(f"# the study file cell of run {run['id']} ({run['kind']}):\n{study_cell(run['kind'], run['config'])}",
                  highlight=False, soft_wrap=True)


@results_app.command("rerun")
@friendly
def results_rerun(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough) or its results folder."),
    cache: Path | None = CACHE_OPT,
    device: str | None = DEVICE_OPT,
    db: Path | None = DB_OPT,
    threads: int | None = THREADS_OPT,
):
    """Execute a registered probe, matrix (emotion or dimensions), neighbors or evaluate run again from
    its stored configuration, into a new folder, and say whether every score is identical. Its stores
    (and an evaluated model) must still match what it was registered with; a fine-tune is run again by
    its own command (it resumes).

    Example: ser results rerun 3fa9c2
    """
    _threads(threads)
    from classifiers.results.registry import Registry
    from classifiers.runs.study import rerun

    registry = Registry(_db(db))
    r = rerun(registry.run(run_id), cache=_cache(cache), registry=registry, device=_device_opt(device), progress=True)
    same = ("every score identical" if r.identical
            else f"scores differ (largest difference {r.largest:.3g}): not reproducible as registered")
    console.print(f"run {r.after.run['id']} re-ran run {r.before['id']} into {r.after.run['out']}: {same}",
                  highlight=False, soft_wrap=True)
    if not r.identical:
        raise typer.Exit(1)


RESULTS_COMPARE_METRIC_OPT = typer.Option("uar", "--metric",
                                          help="uar, wa or macro_f1; runs on emotion dimensions: ccc (mean over their dimensions) "
                                          "or ccc_arousal, ccc_valence, ccc_dominance.")
RESULTS_COMPARE_LAYER_OPT = typer.Option(None, "--layer", "-l", callback=_one_layer("ser results compare compares at one "
                                         "layer"), metavar="K", help="Compare at this layer, e.g. 12 (default: each run's best).")
RESULTS_COMPARE_OUT_OPT = typer.Option(None, "--out", "-o", help="The plot file to write (.png, .pdf or .svg; default: "
                                       "compare-<run ids>.png in the results root).")


@results_app.command("compare")
@friendly
def results_compare(
    run_ids: list[str] = typer.Argument(..., help="Two or more run ids or results folders; each is compared with the first."),
    metric: str = RESULTS_COMPARE_METRIC_OPT,
    layer: str | None = RESULTS_COMPARE_LAYER_OPT,
    out: Path | None = RESULTS_COMPARE_OUT_OPT,
    db: Path | None = DB_OPT,
):
    """Runs side by side: scores with CI, differences against the first run with CI and paired p
    (Holm-adjusted), and a comparison plot. Runs of any kind (probe, matrix cell, neighbors,
    finetune, evaluate) pair on the test utterances they share, each at its best setting scored on
    those; runs with no such setting are refused, naming how many utterances they share. Runs on
    emotion dimensions compare with --metric ccc or ccc_<dimension> (paired on the clips both rated).

    Example: ser results compare 3fa9c2 81d0e4 --metric uar
    """
    from featstore.outputs import check_output

    if out is not None:
        check_output(out, suffixes=(".png", ".pdf", ".svg"))
    from classifiers.results.registry import Registry
    from classifiers.results.report import compare_runs, comparison_figure

    runs, summary, rows, name = compare_runs(Registry(_db(db)), run_ids, metric, layer)
    _print_table(["run", "setting", name, "95% speaker CI", "speakers"],
                 [[s["run"], s["setting"], f"{s['value']:.3f}", f"[{s['low']:.3f}, {s['high']:.3f}]", str(s["n_groups"])]
                  for s in summary], title="runs")
    _print_table(["run", f"Δ {name} vs {runs[0]['id']}", "95% speaker CI", "p", "p (Holm)"],
                 [[r["a"], f"{r['diff']:+.3f}", f"[{r['low']:+.3f}, {r['high']:+.3f}]", f"{r['p']:.3g}",
                   f"{r['p_holm']:.3g}"] for r in rows],
                 title=f"paired on the same test utterances; Holm over {len(rows)} comparison(s)")
    setting_of = {s["run"]: s["setting"] for s in summary}
    from featstore.config import results_root

    path = comparison_figure(rows, out or results_root() / f"compare-{'-'.join(r['id'] for r in runs)}.png",
                             title=f"{name}: runs against {runs[0]['id']} ({setting_of[runs[0]['id']]})",
                             settings=setting_of, formats=out.suffix[1:] if out else None)
    _print_files([path])


@results_app.command("export")
@friendly
def results_export(out: Path = typer.Option(..., "--out", "-o", help="CSV file to write."), db: Path | None = DB_OPT):
    """Every registered score (one row per run, setting, layer, fold, seed, metric) as CSV.

    Example: ser results export --out all-scores.csv
    """
    from classifiers.results.registry import Registry
    from featstore.outputs import check_output

    check_output(out)
    _print_files([Registry(_db(db)).export(out)])


@app.command()
@friendly
def report(
    run_ids: list[str] | None = typer.Argument(None, help="Run ids or results folders (default: every registered run)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="The HTML file to write (default: report.html in the results root, "
                                         "$SER_RESULTS or config `results`)."),
    figure: list[Path] | None = typer.Option(None, "--figure", help="Also embed this PNG (repeatable)."),
    db: Path | None = DB_OPT,
):
    """One self-contained HTML report: layer curves with CI bands, confusion matrices, comparisons,
    the transfer matrix, and any --figure (e.g. neighbors_purity.png).

    Example: ser report 3fa9c2 81d0e4 --out report.html
    """
    from classifiers.results.registry import Registry
    from classifiers.results.report import read_figure, write_report
    from classifiers.runs.study import load_run
    from featstore.config import results_root
    from featstore.outputs import check_output

    out = out or results_root() / "report.html"
    check_output(out, option="--out", suffixes=(".html", ".htm"))  # before any run is read
    for f in figure or []:
        read_figure(f)  # a PNG file of the user's own, or one line
    registry = Registry(_db(db))
    runs = [registry.run(r) for r in run_ids] if run_ids else registry.runs()
    page = write_report([(r, load_run(r)) for r in runs], out, figures=figure or [],  # dimensional runs: CCC
                        title=f"ser report: {len(runs)} run(s)")
    _print_files([page])


STUDY_RUN_EXECUTOR_OPT = typer.Option(None, "--executor", callback=_rule(_executor_spec),
                                      help="Where cells run: local (default, one after another), local:N "
                                      "(N worker processes), dask://HOST:PORT or slurm ([executor] table).")
STUDY_RUN_DRY_RUN_OPT = typer.Option(False, "--dry-run", help="Print the task graph (and, for slurm, the job script) "
                                     "without running anything.")


@study_app.command("run")
@friendly
def study_run(
    path: Path = typer.Argument(..., help="The study file (TOML), e.g. examples/diary-study.toml."),
    cache: Path | None = CACHE_OPT,
    model: str | None = MODEL_OPT,
    device: str | None = DEVICE_OPT,
    report_out: Path | None = typer.Option(None, "--report", help="HTML report (default study-<name>.html in the results root)."),
    force: bool = typer.Option(False, "--force", help="Run every cell again, even those already registered."),
    db: Path | None = DB_OPT,
    executor: str | None = STUDY_RUN_EXECUTOR_OPT,
    dry_run: bool = STUDY_RUN_DRY_RUN_OPT,
    threads: int | None = THREADS_OPT,
    fmt: str | None = FORMAT_OPT,
):
    """Run every cell of a study file (extracting missing stores), skip registered ones, register
    each run and write the report. A cell's kind: probe (default), matrix, neighbors, finetune or
    evaluate; [study] cache and db are read unless --cache / --db are given.

    Example: ser study run examples/diary-study.toml --executor local:4
    """
    _threads(threads)
    from classifiers.runs.executor import parse_executor
    from classifiers.runs.study import read_study, run_study, study_cache, study_registry

    head, cells = read_study(path)  # a bad file fails before any work
    spec = parse_executor(executor if executor is not None else head.get("executor"))
    cache = study_cache(path, head, cache)  # --cache and --db win over the file's [study] cache and db
    if dry_run:
        _study_dry_run(path, cells, spec, cache, model, device)
        return

    echo = _StudyEcho(spec)
    try:
        done, page = run_study(path, cache=cache, registry=study_registry(path, head, db), default_model=_model(model),
                               force=force, device=_device_opt(device), report=report_out, progress=True,
                               executor=str(spec), formats=fmt, **echo.callbacks())
    except KeyboardInterrupt:
        _tagged("interrupted:", "cells registered so far are kept; run the same command again to run only the rest")
        raise typer.Exit(130) from None
    echo.summary(done, page)


class _StudyEcho:
    """What `ser study run` prints as its cells finish: a line per cell, failures, the paper table."""

    def __init__(self, spec):
        self.spec, self.failures, self.table_files = spec, [], []

    def callbacks(self) -> dict:
        return dict(on_cell=self.cell, on_fail=lambda cell, why: self.failures.append((cell, why)),
                    on_start=self.start, on_table=self.table)

    def cell(self, cell, reg) -> None:
        from classifiers.runs.study import headline

        state = "registered already" if reg.reused else "finished before, registered now" if reg.adopted else "ran"
        console.print(f"{cell.describe()}: {state}, run {reg.run['id']} ({reg.run['kind']}, {headline(reg)})",
                      highlight=False, soft_wrap=True)

    def start(self, link) -> None:
        console.print(f"executor {self.spec}: Dask dashboard {link}", highlight=False, soft_wrap=True)

    def table(self, paper, files) -> None:  # the study's paper table: printed, its .md/.tex/.csv listed with the report
        console.print(paper.rich())
        self.table_files.extend(files)

    def summary(self, done, page) -> None:
        for cell, why in self.failures:
            _tagged("failed:", f"{cell.describe()}: {why}", "bold red")
        console.print(f"{len(done)} cell(s), {sum(r.reused for r in done)} already registered"
                      + (f", {len(self.failures)} failed" if self.failures else ""), highlight=False)
        if page is not None:
            _print_files([page, *self.table_files])
        if self.failures:
            raise typer.Exit(1)


def _study_dry_run(path, cells, spec, cache, model, device) -> None:
    """`ser study run --dry-run`: the executor, its job script (slurm) and the tasks it would run."""
    from classifiers.runs.executor import slurm_job_script
    from classifiers.runs.study import executor_table, plan_study

    console.print(f"executor: {spec}", highlight=False)
    if spec.kind == "slurm":
        console.print(slurm_job_script(executor_table(path)), highlight=False, soft_wrap=True)
    plans, extracts, broken = plan_study(cells, cache=cache, default_model=_model(model),
                                         device=_device_opt(device))
    for t in extracts:
        console.print(f"task {t.key}: {t.label}", highlight=False, soft_wrap=True)
    for p in plans:
        state = f"cannot run: {p.failed}" if p.failed else p.cells[0].describe()
        console.print(f"task {p.task}: probe {state}", highlight=False, soft_wrap=True)
    local = [c for c in cells if c.kind != "probe" or c.dimensional]
    for c in local:
        console.print(f"cell {c.index} ({c.kind}): {c.describe()} (in this process)", highlight=False, soft_wrap=True)
    console.print(f"{len(extracts)} extraction task(s), {len(plans)} cell task(s)"
                  + (f", {len(local)} cell(s) of other kinds" if local else "")
                  + " (registered cells are skipped when run)", highlight=False)


EVAL_CORPUS_OPT = typer.Option(..., "--corpus", "-c", help="The corpus to score on.")
EVAL_OUT_OPT = typer.Option(None, "--out", "-o", callback=OUT_DIR, help="Directory the run is written to (default: "
                            "evaluate-... in the results root).")
EVAL_FORCE_OPT = typer.Option(False, "--force", help="Score again even if an identical evaluation is registered.")


@app.command()
@friendly
@deprecated_alias("--model", "--trained", short="-m")
@_config_options(EvaluateConfig)
@_with_formats
def evaluate(
    trained: Path = TRAINED_OPT,
    corpus: str = EVAL_CORPUS_OPT,
    root: Path | None = ROOT_OPT,
    cache: Path | None = CACHE_OPT,
    out: Path | None = EVAL_OUT_OPT,
    device: str | None = DEVICE_OPT,
    db: Path | None = DB_OPT,
    backbone: Path | None = BACKBONE_OPT,
    fmt: str | None = FORMAT_OPT,
    threads: int | None = THREADS_OPT,
    force: bool = EVAL_FORCE_OPT,
    options: dict | None = None,
):
    """Score a saved probe or a fine-tuned model on a whole corpus (or one fold's test speakers):
    every test utterance, and only the classes shared with training; confusion heatmap,
    predictions and a registry row. A saved probe reads the store's features when present.
    The options are `classifiers.runs.configs.EvaluateConfig`'s fields.

    Example: ser evaluate --trained RUN/luna-0/model --corpus cremad   (RUN: the folder ser finetune printed)
    """
    _threads(threads)
    from classifiers.results.registry import Registry
    from classifiers.runs.configs import EvaluateConfig

    corpus = _corpus(corpus)
    config = EvaluateConfig(model_dir=trained, corpus=corpus, backbone=backbone, **options)
    res = config.run(cache=_cache(cache), root=root, out=out, device=_device_opt(device), registry=Registry(_db(db)),
                     command=_command(), force=force)
    _print_evaluation(res, trained, corpus)


def _print_evaluation(res, trained: Path, corpus: str) -> None:
    """What `ser evaluate` scored: for a classifier one row per class policy (all, shared): the
    headline (pooled UAR, 95% speaker CI), WA, macro-F1, classes and chance (a single split, so no
    std) and what each policy scores; for a model of emotion dimensions CCC, r and RMSE per
    dimension; then the classes only one side has, the registry row and the files written."""
    from classifiers.results.records import headline_table

    if res.dimensions is not None:       # a model fine-tuned on emotion dimensions: CCC per dimension
        t = _table("dimension", "CCC [95% CI]", "Pearson r", "RMSE", "utterances", "speakers",
                   title=f"{trained} scored on {corpus} (ratings on [-1, 1]; CI: jackknife-t over speakers)")
        for d, r in res.dimensions.items():
            ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else " (no CI)"
            t.add_row(d, f"{r['ccc']:.3f}{ci}", f"{r['pearson']:.3f}", f"{r['rmse']:.3f}", str(r["n"]),
                      str(r["n_speakers"]))
        console.print(t)
    else:
        rows = [dict(r, policy=("all" if "(shared classes)" not in r["test_set"] else "shared"))
                for r in res.results.summary()]
        first = rows[0] if rows else {}
        console.print(headline_table(rows, lead=lambda r: [r["policy"]], lead_columns=["classes scored"], layer=False,
                                     best=False, title=f"{first.get('classifier', '')} trained on "
                                                       f"{first.get('train_set') or '?'}, layer "
                                                       f"{first.get('layer', '?')}, scored on {corpus}"))
        for policy, s in res.scores.items():
            console.print(f"{policy}: {s.what} ({s.n} utterances)", highlight=False)   # wrapped at spaces
    if res.training_only:
        console.print(f"trained classes the test corpus lacks (never true; excluded from predictions under shared): "
                      f"{', '.join(res.training_only)}", highlight=False)
    if res.test_only:
        console.print("test classes the model never learnt (dropped under shared): "
                      + ", ".join(f"{k} ({v})" for k, v in res.test_only.items()), highlight=False)
    if res.reused:
        console.print(f"registered run {res.run_id} of {res.reused['created']} (identical configuration over identical "
                      f"stores; --force runs it again)", highlight=False, soft_wrap=True)
    else:
        console.print(f"registered run {res.run_id}", highlight=False)
    _print_files(res.files)


def _command() -> str:
    from classifiers.runs.study import command_line

    return command_line()


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------

@app.command()
@friendly
@_with_formats
def demo(
    out: Path = typer.Option(Path("demo"), "--out", "-o", callback=OUT_DIR, help="Where the corpus, store and results go."),
    n: int = typer.Option(240, "--n", parser=_whole_number, callback=AT_LEAST_1, help="Synthetic RAVDESS utterances (balanced over 24 actors, 8 emotions)."),
    model: str | None = typer.Option(None, "--model", "-m",
                                        help="Model to extract with (default: a small local random-weight wav2vec2)."),
    seed: int = typer.Option(0, "--seed", parser=_whole_number, callback=NOT_NEGATIVE, help="Seed of the synthetic corpus."),
    force: bool = typer.Option(False, "--force", help="Run the probe and the neighbours again even if registered."),
    threads: int | None = THREADS_OPT,
    fmt: str | None = FORMAT_OPT,
):
    """The main job on the embedded default: synthetic corpus -> folds -> extract -> probe -> plots.

    Needs no network and no corpus: a synthetic RAVDESS-shaped corpus and a small local model.
    A re-run with the same settings over the same corpus shows the registered runs (--force runs them again).

    Example: ser demo --out demo --n 240
    """
    from classifiers.runs.demo import demo as run_demo

    for step in run_demo(out, n=n, model=model, seed=seed, threads=threads, force=force):  # default: 1 thread
        if step.title:
            console.rule(step.title)
        if step.text is not None:
            console.print(step.text, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
