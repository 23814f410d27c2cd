"""``hybridserve zoo train FAMILY``: retrain a bundled family's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybridserve.cliopts import ConfigOption, FamilyOption
from hybridserve.errors import HybridServeError


def register(app: typer.Typer) -> None:
    """Add the ``zoo`` command group."""
    zoo = typer.Typer(help="The bundled model families.", no_args_is_help=True)

    @zoo.command("train")
    def train(
        family: Annotated[str, typer.Argument(help="bundled family to train")] = "fashion-mnist",
        out: Annotated[
            Path | None, typer.Option(help="where to write weights (default: the package's)")
        ] = None,
        data_dir: Annotated[
            Path | None, typer.Option(help="directory with the Fashion-MNIST train-*.gz files")
        ] = None,
        seed: Annotated[int, typer.Option(help="seed of model i is seed + i")] = 0,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
        only: Annotated[list[str] | None, typer.Option(help="train only these models")] = None,
        epochs: Annotated[int | None, typer.Option(help="override every recipe's epochs")] = None,
        resume: Annotated[
            bool, typer.Option(help="kjv-gpt: continue from checkpoints, skip finished models")
        ] = False,
        ckpt_dir: Annotated[
            Path | None, typer.Option(help="kjv-gpt: checkpoints and log.jsonl (default: cache)")
        ] = None,
        device: Annotated[str, typer.Option(help="kjv-gpt: torch device (cpu, cuda)")] = "cpu",
        lr: Annotated[
            float | None, typer.Option(help="kjv-gpt: override every recipe's peak learning rate")
        ] = None,
        init_from: Annotated[
            Path | None,
            typer.Option(help="kjv-gpt: continue from this family directory's weights"),
        ] = None,
    ) -> None:
        """Train the family with its seeded recipe and write safetensors + manifest.json.

        A distilled model (cnn-small) learns from the teacher's weights in --out, else bundled.
        """
        from hybridserve.models.family import bundled_config_path
        from hybridserve.models.zoo.train import train_family

        if family == "kjv-gpt":
            try:
                from hybridserve.models.zoo.kjv_gpt.family import (
                    default_checkpoint_dir,
                    weights_dir,
                )
                from hybridserve.models.zoo.kjv_gpt.family import train_family as train_kjv
            except ModuleNotFoundError as err:
                raise HybridServeError(
                    f"kjv-gpt needs {err.name!r}: pip install 'hybridserve[gen,zoo-text]'"
                ) from err

            train_kjv(
                out or weights_dir(),
                ckpt_dir or default_checkpoint_dir(),
                only=only,
                seed=seed,
                threads=threads or 1,
                resume=resume,
                epochs=epochs,
                device=device,
                lr=lr,
                init_from=init_from,
            )
            return
        if family != "fashion-mnist":
            raise HybridServeError(
                f"unknown bundled family {family!r}; bundled: ['fashion-mnist', 'kjv-gpt']"
            )
        target = out or bundled_config_path(family).parent
        train_family(
            target, data_dir=data_dir, seed=seed, threads=threads, only=only, epochs=epochs
        )

    app.add_typer(zoo, name="zoo")
    _register_export(app)


def _register_export(app: typer.Typer) -> None:
    """Add the ``export`` command group."""
    export = typer.Typer(help="Write a family in another format.", no_args_is_help=True)

    @export.command("onnx")
    def onnx(
        out: Annotated[Path, typer.Option(help="folder for the .onnx files and family.yaml")],
        family: FamilyOption = None,
        config: ConfigOption = None,
        name: Annotated[
            str | None, typer.Option(help="the ONNX family's name (default: <family>-onnx)")
        ] = None,
    ) -> None:
        """Export every member of a torch family to ONNX (dynamic batch) plus its family.yaml.

        Serve or tune the result with --config OUT/family.yaml (needs the 'onnx' extra).
        """
        if family is not None and config is not None:
            raise HybridServeError("give either --family or --config, not both")
        try:
            from hybridserve.models.onnx_export import export_family
        except ModuleNotFoundError as err:
            raise HybridServeError(
                f"ONNX export needs {err.name!r}: pip install 'hybridserve[onnx]'"
            ) from err
        path = export_family(out, family or "fashion-mnist", config, name)
        typer.echo(f"wrote {path}")

    app.add_typer(export, name="export")
