"""Tuning efficiency: gradpilot against Optuna on the same flawed networks, counted in epochs.

Problems (all on scikit-learn's ``digits``, target 95% validation accuracy):

- ``flawed_digits`` — ``examples/flawed_digits.py``: eight sigmoid convolutions, no
  normalisation, SGD at 0.1; its first layer gets ~1e-7 of the last layer's gradient.
- ``exploding_init`` — ``bench/models/exploding_init.py``: a plain ReLU CNN with every weight
  drawn from N(0, 1); the loss is ~1e5 and SGD diverges.
- ``bottleneck`` — ``bench/models/bottleneck.py``: a sound trunk through a two-unit hidden
  layer.
- ``small_lr`` — ``bench/models/sound_cnn.py``: a sound network trained with SGD at 1e-5 (the
  fix is a tune, not a redesign: here a hyperparameter search should do well).

**gradpilot** runs through the embedded stack (API, controller, local executor with real
worker processes, sandbox) with the rules advisor — and with the LLM advisor as well when AWS
credentials are configured (``GRADPILOT_BENCH_LLM_ADVISOR`` names it) — from the problem's
hyperparameters, budget ``epochs_per_job`` × ``max_jobs``, finishing at the target.

**Optuna** searches what gradpilot's tuner may change — optimizer, learning rate, momentum,
Nesterov, weight decay, schedule, batch size, gradient clipping, within
``service.schemas.hyperparameters.RANGES`` — with the model fixed, as an Optuna user would:
``TPESampler(seed)``, ``MedianPruner(n_startup_trials=2, n_warmup_steps=1)`` on the validation
accuracy reported after every epoch, each trial trained from scratch for ``trial_epochs`` with
the worker's own data, model loading, optimizer, schedule and training loop
(``bench/_trial.py``), the user's hyperparameters enqueued as the first trial. Every epoch a
trial trains counts, pruned trials' too. Its budget is 4× the epochs gradpilot used; it stops
early once the comparison is settled (it reached the target after at least gradpilot's
budget, or it has spent 4× gradpilot's epochs-to-target without reaching it).

Per problem and seed: epochs to reach the target (the first epoch, counted over the whole
run, whose validation accuracy reaches it), best validation accuracy at gradpilot's budget
(equal epochs), Optuna's best within what it ran, and wall times (gradpilot's include starting
a worker process per job; Optuna's trials run in one process). Target (issue 8): gradpilot
reaches the target in ≤ 1/4 of Optuna's epochs, or Optuna never reaches it within 4×
gradpilot's budget.

    python -m bench.tuning_efficiency [--tiny] [--problems a,b] [--seeds N] [--json] [--out P]
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import _common, _gradpilot_run

TARGET = 0.95
MODELS = Path(__file__).resolve().parent / "models"
EXAMPLES = _common.ROOT / "examples"


@dataclass(frozen=True)
class Problem:
    name: str
    path: Path
    hyperparameters: dict[str, Any]
    flaw: str
    dataset: dict[str, Any] = field(default_factory=lambda: {"name": "digits"})

    @property
    def source(self) -> str:
        return self.path.read_text()


PROBLEMS = {
    p.name: p
    for p in (
        Problem(
            "flawed_digits",
            EXAMPLES / "flawed_digits.py",
            {"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.0, "batch_size": 64},
            "vanishing gradients: 8 sigmoid convolutions, no normalisation",
        ),
        Problem(
            "exploding_init",
            MODELS / "exploding_init.py",
            {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "batch_size": 64},
            "exploding initialisation: N(0, 1) weights, no normalisation",
        ),
        Problem(
            "bottleneck",
            MODELS / "bottleneck.py",
            {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "batch_size": 64},
            "a two-unit hidden layer before the classifier",
        ),
        Problem(
            "small_lr",
            MODELS / "sound_cnn.py",
            {"optimizer": "sgd", "learning_rate": 1e-5, "momentum": 0.0, "batch_size": 64},
            "a sound network with a learning rate far too small (SGD 1e-5)",
        ),
    )
}


# --------------------------------------------------------------------------- accounting


def epochs_to_target(accuracies: list[float], target: float) -> int | None:
    """1-based count of epochs trained when the target was first reached, or None."""
    return next((i + 1 for i, a in enumerate(accuracies) if a >= target), None)


def best_within(accuracies: list[float], epochs: int) -> float | None:
    head = accuracies[:epochs]
    return max(head) if head else None


# --------------------------------------------------------------------------- Optuna


def search_space(trial: Any, trial_epochs: int) -> dict[str, Any]:
    """What gradpilot's tuner may change, within the schema's ranges (``RANGES``)."""
    from service.schemas.hyperparameters import CHOICES, RANGES

    lr_low, lr_high = RANGES["learning_rate"]
    wd_high = RANGES["weight_decay"][1]
    params: dict[str, Any] = {
        "optimizer": trial.suggest_categorical("optimizer", list(CHOICES["optimizer"])),
        "learning_rate": trial.suggest_float("learning_rate", lr_low, lr_high, log=True),
        "momentum": trial.suggest_float("momentum", *RANGES["momentum"]),
        "nesterov": trial.suggest_categorical("nesterov", [False, True]),
        # log-uniform needs a positive floor: 1e-6 stands for "no weight decay".
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, wd_high, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256]),
        "lr_schedule": trial.suggest_categorical("lr_schedule", list(CHOICES["lr_schedule"])),
        "gradient_clip": trial.suggest_categorical("gradient_clip", [0.0, 0.5, 1.0, 2.0, 5.0]),
    }
    if params["lr_schedule"] == "step":
        params["lr_step_size"] = trial.suggest_int("lr_step_size", 1, max(1, trial_epochs // 2))
    if params["optimizer"] != "sgd" or params["momentum"] == 0:
        params["nesterov"] = False
    return params


def baseline_params(problem: Problem) -> dict[str, Any]:
    """The user's hyperparameters as an Optuna trial (enqueued first)."""
    hp = problem.hyperparameters
    return {
        "optimizer": hp.get("optimizer", "sgd"),
        "learning_rate": hp["learning_rate"],
        "momentum": hp.get("momentum", 0.0),
        "nesterov": hp.get("nesterov", False),
        "weight_decay": max(1e-6, hp.get("weight_decay", 0.0)),
        "batch_size": hp.get("batch_size", 64),
        "lr_schedule": hp.get("lr_schedule", "constant"),
        "gradient_clip": hp.get("gradient_clip", 0.0),
    }


class _Settled(Exception):
    """Raised inside a trial when the comparison is settled: the study stops."""


def run_optuna(
    problem: Problem,
    seed: int,
    *,
    budget: int,
    trial_epochs: int,
    stop_after_unreached: int | None,
    min_epochs: int,
) -> dict[str, Any]:
    """TPE + median pruning until the epoch budget is spent or the comparison is settled."""
    import optuna

    from bench import _trial
    from service.schemas.datasets import DatasetSpec
    from service.schemas.hyperparameters import Hyperparameters

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = DatasetSpec.model_validate(problem.dataset)
    source = problem.source
    accuracies: list[float] = []  # every epoch any trial trained, in order
    train_s = [0.0]
    trials: list[dict[str, Any]] = []
    reached_at: list[float] = []  # wall time when the target was first reached
    started = time.perf_counter()

    def settled() -> bool:
        used = len(accuracies)
        reached = epochs_to_target(accuracies, TARGET) is not None
        if used >= budget:
            return True
        if reached and used >= min_epochs:
            return True
        return (
            stop_after_unreached is not None
            and not reached
            and used >= max(stop_after_unreached, min_epochs)
        )

    def objective(trial: Any) -> float:
        params = search_space(trial, trial_epochs)
        hp = Hyperparameters.model_validate(params)
        record: dict[str, Any] = {"number": trial.number, "params": params, "epochs": 0}
        trials.append(record)
        best = 0.0

        def on_epoch(r: Any) -> bool:
            nonlocal best
            accuracies.append(r.val_accuracy)
            train_s[0] += r.seconds
            record["epochs"] += 1
            acc = r.val_accuracy if math.isfinite(r.val_accuracy) else 0.0
            best = max(best, acc)
            if acc >= TARGET and not reached_at:
                reached_at.append(time.perf_counter() - started)
            trial.report(acc, r.epoch)
            if settled():
                raise _Settled
            if trial.should_prune():
                record["pruned"] = True
                raise optuna.TrialPruned()
            return False

        try:
            _trial.train(source, spec, hp, trial_epochs, seed * 1000 + trial.number, on_epoch)
        except _Settled:
            record["best"] = best
            trial.study.stop()
            return best
        except (optuna.TrialPruned, KeyboardInterrupt):
            record["best"] = best
            raise
        except Exception as e:  # noqa: BLE001 - a diverging trial is a bad trial, not a crash
            record["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            record["best"] = best
            if settled():
                trial.study.stop()
            return best
        record["best"] = best
        if settled():
            trial.study.stop()
        return best

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    study.enqueue_trial(baseline_params(problem))
    study.optimize(objective, n_trials=10_000, gc_after_trial=False)
    best_trial = max(trials, key=lambda t: t.get("best", 0.0)) if trials else None
    return {
        "accuracies": accuracies,
        "epochs_run": len(accuracies),
        "budget": budget,
        "trial_epochs": trial_epochs,
        "trials": len(trials),
        "pruned": sum(1 for t in trials if t.get("pruned")),
        "failed": sum(1 for t in trials if t.get("error")),
        "best_params": best_trial["params"] if best_trial else None,
        "wall_s": time.perf_counter() - started,
        "train_s": train_s[0],
        "wall_to_target_s": reached_at[0] if reached_at else None,
    }


# --------------------------------------------------------------------------- one comparison


def compare(
    problem: Problem,
    seed: int,
    *,
    epochs_per_job: int,
    max_jobs: int,
    trial_epochs: int,
    advisor: str = "rules",
) -> dict[str, Any]:
    budget = {
        "epochs_per_job": epochs_per_job,
        "max_jobs": max_jobs,
        "target_accuracy": TARGET,
        "patience": 3,
    }
    gp = _gradpilot_run.run(
        source=problem.source,
        dataset=problem.dataset,
        hyperparameters=problem.hyperparameters,
        budget=budget,
        seed=seed,
        advisor=advisor,
    )
    gp_acc = gp["val_accuracy_by_epoch"]
    b = max(1, len(gp_acc))
    gp_to = epochs_to_target(gp_acc, TARGET)
    _log(f"  gradpilot ({advisor}) {problem.name} seed {seed}: {gp_to} epochs to target, {b} run")
    opt = run_optuna(
        problem,
        seed,
        budget=4 * b,
        trial_epochs=trial_epochs,
        stop_after_unreached=4 * gp_to if gp_to else None,
        min_epochs=b,
    )
    opt_acc = opt.pop("accuracies")
    opt_to = epochs_to_target(opt_acc, TARGET)
    _log(f"  Optuna {problem.name} seed {seed}: {opt_to} epochs to target, {len(opt_acc)} run")
    if gp_to is None:
        met, ratio = False, None
    elif opt_to is None:
        # Optuna never reached it in what it ran (at least 4× gradpilot's epochs-to-target).
        met, ratio = True, None
    else:
        ratio = opt_to / gp_to
        met = ratio >= 4.0
    return {
        "problem": problem.name,
        "seed": seed,
        "advisor": advisor,
        "gradpilot": {
            "status": gp["status"],
            "epochs_to_target": gp_to,
            "epochs_run": len(gp_acc),
            "best_val_accuracy": max(gp_acc) if gp_acc else None,
            "wall_s": gp["wall_s"],
            "train_s": gp["train_s"],
            "jobs": gp["jobs"],
            "decisions": [d["action"] for d in gp["decisions"]],
            "rationales": [d["rationale"][:300] for d in gp["decisions"]],
            "final_test_accuracy": gp["final_test_accuracy"],
        },
        "optuna": {
            **opt,
            "epochs_to_target": opt_to,
            "best_val_accuracy_at_gradpilot_budget": best_within(opt_acc, b),
            "best_val_accuracy": max(opt_acc) if opt_acc else None,
        },
        "epochs_ratio_optuna_to_gradpilot": ratio,
        "met": met,
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per problem (and advisor): medians over seeds and whether every seed met the target."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys((r["problem"], r["advisor"]) for r in rows):
        mine = [r for r in rows if (r["problem"], r["advisor"]) == key]
        gp_to = [r["gradpilot"]["epochs_to_target"] for r in mine]
        opt_to = [r["optuna"]["epochs_to_target"] for r in mine]
        out[f"{key[0]}/{key[1]}"] = {
            "problem": key[0],
            "advisor": key[1],
            "seeds": len(mine),
            "gradpilot_reached": sum(1 for x in gp_to if x is not None),
            "optuna_reached": sum(1 for x in opt_to if x is not None),
            "gradpilot_epochs_to_target_median": _median(gp_to),
            "optuna_epochs_to_target_median": _median(opt_to),
            "gradpilot_epochs_run_median": statistics.median(
                r["gradpilot"]["epochs_run"] for r in mine
            ),
            "optuna_epochs_run_median": statistics.median(r["optuna"]["epochs_run"] for r in mine),
            "gradpilot_best_median": _median([r["gradpilot"]["best_val_accuracy"] for r in mine]),
            "optuna_best_at_equal_epochs_median": _median(
                [r["optuna"]["best_val_accuracy_at_gradpilot_budget"] for r in mine]
            ),
            "optuna_best_median": _median([r["optuna"]["best_val_accuracy"] for r in mine]),
            "gradpilot_wall_s_median": statistics.median(r["gradpilot"]["wall_s"] for r in mine),
            "optuna_wall_s_median": statistics.median(r["optuna"]["wall_s"] for r in mine),
            "met": sum(1 for r in mine if r["met"]),
        }
    return out


def _median(values: list[Any]) -> float | None:
    """Median of the values that exist; None when fewer than half exist (a median of the ones
    that reached the target would flatter)."""
    present = [v for v in values if v is not None]
    if not present or len(present) * 2 < len(values):
        return None
    return float(statistics.median(present))


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--problems", help=f"comma-separated subset of {', '.join(PROBLEMS)}")
    p.add_argument("--seeds", type=int, help="seeds per problem (default 3; tiny 1)")
    p.add_argument("--epochs-per-job", type=int, help="gradpilot's segment (default 4)")
    p.add_argument("--max-jobs", type=int, help="gradpilot's job budget (default 6)")
    p.add_argument("--trial-epochs", type=int, help="epochs per Optuna trial (default 8)")
    p.add_argument("--no-llm", action="store_true", help="never run the LLM advisor")
    args = p.parse_args(argv)
    if args.problems:
        names = [n.strip() for n in args.problems.split(",") if n.strip()]
        unknown = [n for n in names if n not in PROBLEMS]
        if unknown:
            p.error(f"unknown problem(s) {unknown}; choose from {list(PROBLEMS)}")
    else:
        names = ["small_lr"] if args.tiny else list(PROBLEMS)
    seeds = args.seeds or (1 if args.tiny else 3)
    epochs_per_job = args.epochs_per_job or (1 if args.tiny else 4)
    max_jobs = args.max_jobs or (2 if args.tiny else 6)
    trial_epochs = args.trial_epochs or (2 * epochs_per_job)
    advisors = ["rules"]
    llm, why = (None, "--no-llm") if args.no_llm or args.tiny else _gradpilot_run.llm_advisor_spec()
    if llm:
        advisors.append(llm)
    report: dict[str, Any] = {
        "benchmark": "tuning_efficiency",
        "target_val_accuracy": TARGET,
        "config": {
            "problems": {n: PROBLEMS[n].flaw for n in names},
            "seeds": seeds,
            "gradpilot_budget": {"epochs_per_job": epochs_per_job, "max_jobs": max_jobs},
            "optuna": {
                "sampler": "TPESampler(seed)",
                "pruner": "MedianPruner(n_startup_trials=2, n_warmup_steps=1)",
                "trial_epochs": trial_epochs,
                "budget": "4x gradpilot's epochs",
            },
            "advisors": advisors,
            "llm_advisor": why,
        },
    }
    rows = []
    for name in names:
        problem = PROBLEMS[name]
        if args.tiny:  # a third of digits: the tiny run only has to exercise every part
            problem = replace(problem, dataset={"name": "digits", "max_train_samples": 400})
        for seed in range(seeds):
            for advisor in advisors:
                rows.append(
                    compare(
                        problem,
                        seed,
                        epochs_per_job=epochs_per_job,
                        max_jobs=max_jobs,
                        trial_epochs=trial_epochs,
                        advisor=advisor,
                    )
                )
    report["runs"] = _common.round_floats(rows)
    report["summary"] = _common.round_floats(summarise(rows))
    report["headline"] = headline_rows(report["summary"])
    return _common.finish(report, args, print_report)


def headline_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in summary.values():
        gp, opt = s["gradpilot_epochs_to_target_median"], s["optuna_epochs_to_target_median"]
        label = s["problem"] + ("" if s["advisor"] == "rules" else f" ({s['advisor']})")
        rows.append(
            _common.headline(
                f"epochs to 95%: {label}",
                gp,
                "ep",
                baseline=opt,
                baseline_name=f"Optuna TPE + median pruning, which reached 95% in "
                f"{s['optuna_reached']}/{s['seeds']} seeds (gradpilot "
                f"{s['gradpilot_reached']}/{s['seeds']})",
                target="≤ 0.25 (or Optuna never)",
                met=s["met"] == s["seeds"],
                note=f"{s['met']}/{s['seeds']} seeds met; best val at equal epochs: gradpilot "
                f"{s['gradpilot_best_median']}, Optuna {s['optuna_best_at_equal_epochs_median']}",
            )
        )
    return rows


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"Tuning efficiency on digits, target {report['target_val_accuracy']:.0%} validation "
        f"accuracy; gradpilot budget {cfg['gradpilot_budget']}, Optuna {cfg['optuna']}"
    )
    print(f"LLM advisor: {cfg['llm_advisor']}")
    print(
        f"\n{'problem':15} {'seed':>4} {'advisor':8} {'gp→95%':>7} {'opt→95%':>8} {'ratio':>6} "
        f"{'gp ep':>6} {'opt ep':>7} {'gp best':>8} {'opt best@gp':>12} {'opt best':>9} "
        f"{'gp s':>6} {'opt s':>6} {'trials':>6} met  gradpilot decisions"
    )
    for r in report["runs"]:
        gp, opt = r["gradpilot"], r["optuna"]
        print(
            f"{r['problem']:15} {r['seed']:>4} {r['advisor'][:8]:8} "
            f"{_common.fmt(gp['epochs_to_target']):>7} {_common.fmt(opt['epochs_to_target']):>8} "
            f"{_common.fmt(r['epochs_ratio_optuna_to_gradpilot']):>6} {gp['epochs_run']:>6} "
            f"{opt['epochs_run']:>7} {_common.fmt(gp['best_val_accuracy']):>8} "
            f"{_common.fmt(opt['best_val_accuracy_at_gradpilot_budget']):>12} "
            f"{_common.fmt(opt['best_val_accuracy']):>9} {gp['wall_s']:>6.0f} "
            f"{opt['wall_s']:>6.0f} {opt['trials']:>6} {_common.fmt(r['met']):3}  "
            f"{' → '.join(gp['decisions'])}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
