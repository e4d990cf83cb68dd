"""`ser`: the command line. Thin: parse, call a library function, print."""

import typer

app = typer.Typer(help="ser: wav2vec2-family feature store and probes for speech emotion recognition.")


def main() -> None:
    app()
