"""``RaplMeter``: CPU package (and DRAM) energy from the Linux powercap RAPL counters.

Reads ``/sys/class/powercap/intel-rapl:N/energy_uj`` for each package ``N`` (AMD Zen CPUs
expose theirs under the same name) plus the ``dram`` subdomain ``intel-rapl:N:M`` where one
exists; core/uncore subdomains are already inside the package figure, so they are skipped.
Counters wrap at ``max_energy_range_uj``; a wrap between ``start`` and ``stop`` is undone (a
second wrap within one interval cannot be seen, which takes minutes even at full load). Since
Linux 5.10 ``energy_uj`` is root-only by default: an unreadable counter makes the meter
unavailable, and ``select_meter`` falls back to the modelled meter.

RAPL measures the whole package, so other processes' work is included: profile on a quiet machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridserve.energy.base import EnergyMeter, MeterError

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL counter."""

    name: str  # "package-0", "dram", ...
    path: Path  # the domain directory
    max_range_uj: int

    def read_uj(self) -> int:
        try:
            return int((self.path / "energy_uj").read_text().strip())
        except (OSError, ValueError) as err:
            raise MeterError(f"cannot read {self.path / 'energy_uj'}: {err}") from err


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise MeterError(f"cannot read {path}: {err}") from err


def discover_domains(root: Path = POWERCAP) -> list[RaplDomain]:
    """Package domains and their DRAM subdomains under ``root``; raises ``MeterError`` if none
    is readable (missing, or permission denied)."""
    packages = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not packages:
        raise MeterError(f"no RAPL package domains under {root}")
    domains: list[RaplDomain] = []
    for pkg in packages:
        subs = sorted(p for p in pkg.glob(f"{pkg.name}:*") if p.is_dir())
        for d in (pkg, *subs):
            name = _read(d / "name")
            if d is not pkg and name != "dram":
                continue
            try:
                max_range = int(_read(d / "max_energy_range_uj"))
            except ValueError as err:
                raise MeterError(f"{d / 'max_energy_range_uj'}: not an integer") from err
            domain = RaplDomain(name=name, path=d, max_range_uj=max_range)
            domain.read_uj()  # permission check now, not halfway through a profile
            domains.append(domain)
    return domains


class RaplMeter(EnergyMeter):
    """Sum of package (+ DRAM) RAPL counter deltas, in joules."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self.root = Path(root)
        self.domains = discover_domains(self.root)
        self._start: list[int] | None = None

    @staticmethod
    def available(root: Path = POWERCAP) -> bool:
        """Whether RAPL counters exist and this user may read them."""
        try:
            discover_domains(root)
        except MeterError:
            return False
        return True

    @property
    def source(self) -> str:
        return "rapl"

    def start(self) -> None:
        self._start = [d.read_uj() for d in self.domains]

    def stop(self) -> float:
        if self._start is None:
            raise MeterError("RaplMeter.stop() called before start()")
        total_uj = 0
        for domain, before in zip(self.domains, self._start, strict=True):
            after = domain.read_uj()
            delta = after - before
            if delta < 0:  # the counter wrapped at max_energy_range_uj
                delta += domain.max_range_uj
            total_uj += delta
        self._start = None
        return total_uj / 1e6

    def settings(self) -> dict[str, Any]:
        return {"domains": [f"{d.path.name} ({d.name})" for d in self.domains]}
