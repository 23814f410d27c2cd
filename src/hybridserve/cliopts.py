"""Command-line options every step shares, defined once (type, flag and help).

A step's command takes them as ``workdir: WorkdirOption = DEFAULT_WORKDIR``; defaults stay in
each signature, since they differ between steps (``--family`` defaults to the policy's family
in ``serve`` and to ``fashion-mnist`` in ``quickstart``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: The environment variable holding the bearer token (serve requires it, bench sends it).
API_KEY_ENV = "HYBRIDSERVE_API_KEY"

WorkdirOption = Annotated[
    Path, typer.Option(help="pipeline working directory (every step reads and writes here)")
]
FamilyOption = Annotated[str | None, typer.Option(help="bundled family name")]
ConfigOption = Annotated[
    Path | None, typer.Option(help="your family's YAML file, instead of a bundled --family")
]
DeviceOption = Annotated[str, typer.Option(help="torch device: cpu, cuda or cuda:N")]
