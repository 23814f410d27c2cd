"""Decode throughput of the kjv-gpt giant: a plain transformers loop, ``HFCausalLM.generate`` in
static batches, and the step-wise decoder (``models/stepdecode.py``) with iteration-level refill.

    PYTHONPATH=src python benchmarks/bench_decode.py [--prompts 64] [--batch 8] [--threads 1]

Greedy, ``stop_at_eos`` off, so every request generates exactly its budget and all engines do
the same work. Two workloads on the same validation prompts:

* uniform: every request ``--long`` new tokens. The decode path's overhead over the plain loop
  (issue target: ``generate`` >= 80 % of the plain loop's tokens/s).
* mixed: budgets alternate ``--short`` / ``--long`` in arrival order. Static batching leaves
  a batch's freed slots empty until its longest row ends; iteration-level batching refills them.
  Static engines: the plain loop over batches of ``--batch`` arrivals (runs to the batch's
  longest budget, only in-budget tokens count), ``generate`` as the decode worker calls it
  (each window of ``--batch`` arrivals split by identical params, one call per group), and the
  step-wise decoder without refill (per-row budgets, rows leave but none join).

Writes benchmarks/out/bench_decode.json and prints a table. Each engine runs once to warm up
and then ``--repeats`` times; the best wall time counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hybridserve.data.prompts import read_prompts
from hybridserve.models.family import bundled_config_path
from hybridserve.models.generative import GenerationParams
from hybridserve.models.generative_family import load_generative_family
from hybridserve.models.hf_causal import HFCausalLM
from hybridserve.models.stepdecode import StepDecoder

OUT = Path(__file__).parent / "out" / "bench_decode.json"
Tokens = list[list[int]]
#: each request's generated tokens and when it completed (s after the engine started)
Run = tuple[Tokens, list[float]]


@torch.inference_mode()
def plain_loop(lm: HFCausalLM, prompts: list[str], budgets: list[int], batch: int) -> Run:
    """Reference: left-padded static batches straight on the transformers model, argmax, KV
    cache; a batch runs to its longest budget and each row keeps its first ``budget`` tokens."""
    model, tok = lm.model, lm.tokenizer
    out: Tokens = []
    t0, done = time.perf_counter(), []
    for lo in range(0, len(prompts), batch):
        enc = [tok(p)["input_ids"] for p in prompts[lo : lo + batch]]
        width = max(len(e) for e in enc)
        ids = torch.zeros((len(enc), width), dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for r, e in enumerate(enc):
            ids[r, width - len(e) :] = torch.tensor(e)
            mask[r, width - len(e) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
        cache, logits = res.get(lm._cache_kw), res.logits[:, -1]
        last = pos[:, -1:]
        steps = max(budgets[lo : lo + batch])
        gen = []
        for s in range(steps):
            nxt = logits.argmax(-1, keepdim=True)
            gen.append(nxt)
            if s == steps - 1:
                break
            mask = torch.cat([mask, mask.new_ones((len(enc), 1))], dim=-1)
            last = last + 1
            res = model(
                input_ids=nxt,
                attention_mask=mask,
                position_ids=last,
                logits_to_keep=1,
                **{lm._cache_kw: cache},
            )
            cache, logits = res.get(lm._cache_kw), res.logits[:, -1]
        rows = torch.cat(gen, dim=-1).tolist()
        out += [row[:b] for row, b in zip(rows, budgets[lo : lo + batch], strict=True)]
        done += [time.perf_counter() - t0] * len(rows)
    return out, done


def static_generate(lm: HFCausalLM, prompts: list[str], budgets: list[int], batch: int) -> Run:
    """``generate`` per window of ``batch`` arrivals, one call per distinct budget (as the decode
    worker groups identical params)."""
    out: dict[int, tuple[int, ...]] = {}
    t0, done = time.perf_counter(), [0.0] * len(prompts)
    for lo in range(0, len(prompts), batch):
        window = range(lo, min(len(prompts), lo + batch))
        for budget in dict.fromkeys(budgets[i] for i in window):
            idx = [i for i in window if budgets[i] == budget]
            gens = lm.generate([prompts[i] for i in idx], _params(budget))
            out.update({i: g.token_ids for i, g in zip(idx, gens, strict=True)})
            for i in idx:
                done[i] = time.perf_counter() - t0
    return [list(out[i]) for i in range(len(prompts))], done


def static_step(lm: HFCausalLM, prompts: list[str], budgets: list[int], batch: int) -> Run:
    """The step-wise decoder without refill: batches of ``batch`` arrivals, per-row budgets."""
    return _stepwise(lm, prompts, budgets, batch, refill=False)


def refill_step(lm: HFCausalLM, prompts: list[str], budgets: list[int], batch: int) -> Run:
    """The step-wise decoder refilling freed slots between steps (as ``decode_continuous``)."""
    return _stepwise(lm, prompts, budgets, batch, refill=True)


def _stepwise(
    lm: HFCausalLM, prompts: list[str], budgets: list[int], batch: int, *, refill: bool
) -> Run:
    dec = StepDecoder(lm)
    t0, queued = time.perf_counter(), 0
    index: dict[int, int] = {}
    out: Tokens = [[] for _ in prompts]
    done = [0.0] * len(prompts)
    while queued < len(prompts) or len(dec):
        if queued < len(prompts) and (len(dec) == 0 or (refill and len(dec) < batch)):
            take = range(queued, min(len(prompts), queued + batch - len(dec)))
            rids = dec.add([prompts[i] for i in take], [_params(budgets[i]) for i in take])
            index.update(zip(rids, take, strict=True))
            queued += len(take)
        for rid, gen in dec.step().items():
            out[index[rid]] = list(gen.token_ids)
            done[index[rid]] = time.perf_counter() - t0
    return out, done


def _params(budget: int) -> GenerationParams:
    return GenerationParams(max_new_tokens=budget, stop_at_eos=False)


Engine = Callable[[HFCausalLM, list[str], list[int], int], Run]


def measure(
    engine: Engine, lm: HFCausalLM, prompts: list[str], budgets: list[int], batch: int, reps: int
) -> tuple[dict[str, float], Tokens]:
    engine(lm, prompts[:batch], budgets[:batch], batch)  # warm-up
    best = float("inf")
    tokens: Tokens = []
    latency: list[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        tokens, done = engine(lm, prompts, budgets, batch)
        wall = time.perf_counter() - t0
        if wall < best:
            best, latency = wall, done
    n_tok = sum(len(t) for t in tokens)
    short = [t for t, b in zip(latency, budgets, strict=True) if b == min(budgets)]
    return {
        "wall_s": round(best, 3),
        "tokens": n_tok,
        "tokens_per_s": round(n_tok / best, 1),
        "requests_per_s": round(len(prompts) / best, 2),
        # all requests arrive at t=0: completion time is queueing plus decoding
        "mean_completion_s": round(statistics.fmean(latency), 3),
        "mean_completion_shortest_s": round(statistics.fmean(short), 3),
    }, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--short", type=int, default=4)
    ap.add_argument("--long", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    family = load_generative_family(bundled_config_path("kjv-gpt"))
    lm = family.models[-1]
    assert isinstance(lm, HFCausalLM)
    prompts = [r.prompt for r in read_prompts(family.data_paths["val"], limit=args.prompts)]
    workloads = {
        "uniform": [args.long] * len(prompts),
        "mixed": [args.short if i % 2 == 0 else args.long for i in range(len(prompts))],
    }
    engines: dict[str, Engine] = {
        "plain_loop": plain_loop,
        "generate_static": static_generate,
        "step_static": static_step,
        "step_refill": refill_step,
    }
    results: dict[str, Any] = {}
    print(
        f"{'workload':8s} {'engine':16s} {'wall s':>7s} {'tok/s':>8s} {'req/s':>7s} {'rel':>6s} "
        f"{'mean done s':>11s} {'short done s':>12s}"
    )
    for wname, budgets in workloads.items():
        rows: dict[str, Any] = {}
        ref_tokens: Tokens | None = None
        for ename, engine in engines.items():
            if wname == "uniform" and ename == "step_static":
                continue  # the same batches as generate_static when all budgets are equal
            row, tokens = measure(engine, lm, prompts, budgets, args.batch, args.repeats)
            ref_tokens = ref_tokens or tokens
            row["same_tokens_as_plain_loop"] = tokens == ref_tokens
            row["relative_to_plain_loop"] = round(
                row["tokens_per_s"] / rows["plain_loop"]["tokens_per_s"] if rows else 1.0, 3
            )
            rows[ename] = row
            print(
                f"{wname:8s} {ename:16s} {row['wall_s']:7.2f} {row['tokens_per_s']:8.1f} "
                f"{row['requests_per_s']:7.2f} {row['relative_to_plain_loop']:6.2f} "
                f"{row['mean_completion_s']:11.2f} {row['mean_completion_shortest_s']:12.2f}"
                + ("" if row["same_tokens_as_plain_loop"] else "  (tokens differ!)")
            )
        results[wname] = rows
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": f"kjv-gpt/{lm.name} ({lm.info.params} params)",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
