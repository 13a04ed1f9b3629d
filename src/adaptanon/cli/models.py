"""``adaptanon models``: the built-in classifiers."""

from __future__ import annotations

import click

from adaptanon.classifiers import BUILTIN_MODELS, DEFAULT_MODEL


@click.command()
def models() -> None:
    """List the built-in classifiers."""
    for name, text in BUILTIN_MODELS.items():
        mark = " (default)" if name == DEFAULT_MODEL else ""
        click.echo(f"{name}{mark}\t{text}")
    click.echo(
        "Also: an ONNX file (.onnx), a torch.export program (.pt2), a TorchScript file, or "
        "module:function returning a Classifier or nn.Module."
    )
