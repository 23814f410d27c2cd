"""``hybridserve tune``: search cascade thresholds on val, report them on test."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hybridserve.cliopts import ConfigOption, FamilyOption, WorkdirOption
from hybridserve.errors import HybridServeError
from hybridserve.tuning.gentune import generative_rules, is_generative_workdir, run_generative_tune
from hybridserve.tuning.policy import CascadePolicy
from hybridserve.tuning.tune import (
    check_settings,
    deferral_rules,
    policy_path,
    rule_file_key,
    rule_graph_paths,
    run_tune,
)
from hybridserve.workdir import DEFAULT_WORKDIR, Workdir

__all__ = ["policy_table", "register", "run_tune"]


def _row(label: str, s: dict[str, Any], giant_energy: float) -> list[str]:
    energy = s["energy_j_per_request"]
    saving = giant_energy / energy if energy > 0 else float("inf")
    return [label, f"{100 * s['accuracy']:.2f}", f"{energy:.4g}", f"{saving:.2f}×"]


def policy_table(policy: CascadePolicy) -> Table:
    """The policy's val/test outcome next to the giant and the oracle, as a rich table."""
    s = policy.summary
    skips = ", ".join(f"{r.at}<{r.below:.3g}→{r.to}" for r in policy.skips) or "none"
    chain = " → ".join(
        f"{n} (θ={t:.3f})"
        for n, t in zip(policy.chain, (*policy.thresholds, None), strict=True)
        if t is not None
    )
    title = (
        f"{policy.family}: {policy.mode.upper()} policy  {chain} → {policy.giant}\n"
        f"deferral: {policy.confidence}; skips: {skips}; costs: {policy.cost_source}"
    )
    table = Table(title=title)
    for header in ("split / system", "accuracy %", "energy J/req", "vs giant"):
        table.add_column(header, justify="left" if header.startswith("split") else "right")
    for split in ("val", "test"):
        if split not in s:
            continue
        d = s[split]
        ge = d["giant_energy_j_per_request"]
        giant = {"accuracy": d["giant_accuracy"], "energy_j_per_request": ge}
        table.add_row(*_row(f"{split}: giant only", giant, ge))
        table.add_row(*_row(f"{split}: cascade", d, ge))
        if "oracle" in d:
            table.add_row(*_row(f"{split}: oracle", d["oracle"], ge))
    if "skips" in s and "test" in s["skips"]:
        t = s["skips"]["test"]
        table.caption = (
            f"test energy with skips {t['energy_j_per_request']:.4g} J/req, "
            f"without {t['no_skip_energy_j_per_request']:.4g}"
        )
    return table


def tried_lines(policy: CascadePolicy) -> list[str]:
    """One line per deferral rule tried (``--deferral auto``): its val figures, the pick marked."""
    record = policy.summary.get("deferral")
    if not isinstance(record, dict) or len(record.get("tried", {})) < 2:
        return []
    lines = []
    for rule, f in record["tried"].items():
        mark = "  ← chosen" if rule == record["rule"] else ""
        lines.append(
            f"  {rule}: val {100 * f['accuracy']:.2f} % at {f['energy_j_per_request']:.4g} J/req "
            f"({f['basis']}; giant {100 * f['giant_accuracy']:.2f} %){mark}"
        )
    return lines


def register(app: typer.Typer) -> None:
    """Add the ``tune`` command."""

    @app.command("tune")
    def tune(
        mode: Annotated[
            str, typer.Option(help="ap: keep the giant's accuracy; eo: cheapest within a drop")
        ] = "ap",
        max_accuracy_drop: Annotated[
            float, typer.Option(help="EO: accuracy points the cascade may lose vs the giant")
        ] = 0.5,
        no_skip: Annotated[
            bool, typer.Option("--no-skip", help="search no skip rules (writes *-noskip.json)")
        ] = False,
        deferral: Annotated[
            str | None,
            typer.Option(
                help="deferral rule: maxprob (the top calibrated probability), learned (a model "
                "over every visited model's output), margin, entropy, or auto (search with "
                "maxprob and learned, keep the cheaper on val)  [default: maxprob]",
                show_default=False,
            ),
        ] = None,
        confidence: Annotated[
            str | None,
            typer.Option(
                help="generative families: min|mean|prod|q10|q25|q50 (a calibrated aggregate of "
                "the answer's token probabilities), learned, or auto  [default: min]; for "
                "classifiers, the older name of --deferral's fixed scores",
                show_default=False,
            ),
        ] = None,
        family: FamilyOption = None,
        config: ConfigOption = None,
        cluster: Annotated[
            str | None,
            typer.Option(
                help="price each model as served on this cluster's device type (a bundled name "
                "such as 4x-a5000, or a YAML file) instead of profile.json"
            ),
        ] = None,
        workdir: WorkdirOption = DEFAULT_WORKDIR,
    ) -> None:
        """Search thresholds on val; write policy-<mode>.json, threshold-graph.png, frontier.csv."""
        check_settings(mode, max_accuracy_drop)
        wd = Workdir(workdir)
        if family is not None or config is not None:
            _check_family(wd, family, config)
        console = Console()
        if is_generative_workdir(wd):
            _tune_generative(
                console, wd, mode, max_accuracy_drop, not no_skip, confidence or deferral
            )
            return
        rules = deferral_rules(deferral, confidence)
        with console.status(f"tuning the {mode.upper()} policy ({', '.join(rules)} deferral)"):
            policy = run_tune(
                wd,
                mode,
                max_accuracy_drop,
                not no_skip,
                config=config,
                confidence=confidence,
                deferral=deferral,
                cluster=cluster,
            )
        console.print(policy_table(policy))
        lines = tried_lines(policy)
        if lines:
            console.print("deferral rules tried on val:", highlight=False)
        for line in lines:
            console.print(line, highlight=False)
        for name, why in policy.summary.get("dropped", {}).items():
            console.print(f"  {name}: not used ({why})", highlight=False)
        written = [policy_path(wd, mode, not no_skip), wd.threshold_graph_png, wd.frontier_csv]
        for rule in rules:
            written += [wd.policy(rule_file_key(mode, not no_skip, rule))]
            written += rule_graph_paths(wd, rule)
        console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)


def _check_family(wd: Workdir, family: str | None, config: Path | None) -> None:
    """Refuse an unknown family, or one other than the workdir's calibration is for."""
    from hybridserve.models.family import family_path
    from hybridserve.yamlio import read_mapping

    path = family_path(family or "fashion-mnist", config)
    if not path.is_file():
        raise HybridServeError(f"family config not found: {path}")
    declared = read_mapping(path).get("family")
    if wd.calibration.is_file():
        from hybridserve.calibration import load_calibration

        calibrated = load_calibration(wd).family
        if declared != calibrated:
            raise HybridServeError(
                f"{wd.calibration} is for family {calibrated!r}, not {declared!r}; "
                f"run `hybridserve calibrate` for {declared!r} first"
            )


def comparison_table(policy: CascadePolicy) -> Table:
    """Generative families: every confidence rule tried, validation (which chose) and test."""
    record = policy.summary.get("deferral", {})
    table = Table(title=f"{policy.family}: {policy.mode.upper()} by confidence rule")
    for header in ("rule", "val acc %", "val J/req", "test acc %", "test J/req", "saving"):
        table.add_column(header, justify="left" if header == "rule" else "right")
    for rule, f in record.get("tried", {}).items():
        mark = " ←" if rule == record.get("rule") else ""
        saving = f.get("test_saving_x")
        table.add_row(
            f"{rule}{mark}",
            f"{100 * f['accuracy']:.2f}",
            f"{f['energy_j_per_request']:.4g}",
            f"{100 * f.get('test_accuracy', float('nan')):.2f}",
            f"{f.get('test_energy_j_per_request', float('nan')):.4g}",
            "–" if saving is None else f"{saving:.2f}×",
        )
    return table


def _tune_generative(
    console: Console,
    wd: Workdir,
    mode: str,
    max_accuracy_drop: float,
    use_skips: bool,
    confidence: str | None,
) -> None:
    rules = generative_rules(confidence)
    with console.status(f"tuning the {mode.upper()} policy ({', '.join(rules)})"):
        policy = run_generative_tune(wd, mode, max_accuracy_drop, use_skips, confidence=confidence)
    console.print(policy_table(policy))
    console.print(comparison_table(policy))
    costs = policy.summary.get("costs", {})
    console.print(f"costs: {costs.get('source')} ({costs.get('note', '')})", highlight=False)
    for name, why in policy.summary.get("dropped", {}).items():
        console.print(f"  {name}: not used ({why})", highlight=False)
    written = [policy_path(wd, mode, use_skips), wd.threshold_graph_png, wd.frontier_csv]
    written += [wd.policy(rule_file_key(mode, use_skips, rule)) for rule in rules]
    console.print(f"wrote {', '.join(str(p) for p in written)}", highlight=False)
