"""Search for the best model with Optuna, then make the winner a DVC experiment.

    python -m mnist_pipeline.sweep run STUDY [--trials N] [--epochs E] [--workers K] [--storage URL]
    python -m mnist_pipeline.sweep promote STUDY [--storage URL]

Studies are in sweep.yaml. Trials train in this process (one thread each; --workers K starts K
processes) on the training set less a held-out validation split, which they score: the test set is
read only by `promote`, through the pipeline. The study lives in sweeps.journal at the project root,
or in the database of --storage (or MNIST_SWEEP_STORAGE), which workers on other machines join
with the same command.
"""

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from mnist_pipeline import cli
from mnist_pipeline.files import project_root
from mnist_pipeline.stages import exit_now
from mnist_pipeline.sweep import spec as specs
from mnist_pipeline.sweep.promote import promote
from mnist_pipeline.sweep.storage import (
    check_base,
    finished,
    load_study,
    open_storage,
    open_study,
    pending,
    retire,
    retire_stale,
    worker_name,
)
from mnist_pipeline.sweep.worker import Worker
from mnist_pipeline.tracking.study_runs import Recorder, best_trial, overrides

ESCALATE_S = 10  # after a signal passed on to the workers: again (at once, this time), then SIGKILL


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m mnist_pipeline.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a study's trials (join it, if it exists)")
    run.add_argument("--trials", type=int, help="finished trials to run the study to (default: sweep.yaml's)")
    run.add_argument("--epochs", type=int, help="each trial's epoch budget (default: sweep.yaml's)")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    worker = commands.add_parser("worker")  # one of run's processes; not for users
    promote_ = commands.add_parser("promote", help="run the best trial as the DVC experiment STUDY-best")
    for each in (run, worker, promote_):
        each.add_argument("study", help="a study of sweep.yaml")
        each.add_argument(
            "--storage",
            help="database URL of the study (default: $MNIST_SWEEP_STORAGE, else sweeps.journal at the project root)",
        )
    worker.add_argument("--trials", type=int)
    worker.add_argument("--epochs", type=int)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "promote":
        return cli.run(lambda: _promote(args))
    return cli.run(lambda: _run(args), interrupted="the trial in progress is marked failed; `run` again continues")


def _promote(args: argparse.Namespace) -> None:
    root = project_root()
    study = load_study(args.study, open_storage(args.storage, root))
    best = best_trial(study)
    if best is not None:  # its values are set on today's params.yaml: the rest must be what it was trained on
        check_base(study, specs.trial_base(specs.project_params(root), overrides(best)))
    promote(study, root)


def _run(args: argparse.Namespace) -> int:
    """Ctrl-C and SIGTERM wait (cli.held) for the points where they are safe: between trials, while
    an epoch computes, and in the launcher's loop, which passes them on to its workers."""
    with cli.held():
        root = project_root()
        if args.command == "run" and args.workers < 1:
            raise specs.SpecError(f"--workers {args.workers}: expected at least 1")
        base, spec = specs.in_project(root, args.study, args.trials, args.epochs)
        params = spec.trial_params(base, {})
        study = open_study(spec, open_storage(args.storage, root), spec.base(base))
        recorder = Recorder(study, spec.settings(), params)
        data_dir = root / "data" / params.data.dataset
        if args.command == "worker":
            Worker(spec, study, base, data_dir, recorder).run()
            return 0
        try:
            code = _search(args, spec, study, base, data_dir, recorder)
        except KeyboardInterrupt:
            recorder.end("KILLED")
            raise
        except Exception:
            recorder.end("FAILED")
            raise
        if code:  # a worker failed, and said why
            recorder.end("KILLED" if code == cli.INTERRUPTED else "FAILED")
            return code
        recorder.summarize()
        _conclude(study, recorder)
        return 0


def _search(
    args: argparse.Namespace, spec: specs.StudySpec, study, base: dict, data_dir: Path, recorder: Recorder
) -> int:
    _retire(study, recorder)
    _announce(spec, study, recorder, args.workers)
    if args.workers > 1:
        code = _launch(args, study, recorder)
        if code or not pending(spec, study):
            return code
        # a dead worker's trial, queued again after the others had stopped: run here
    Worker(spec, study, base, data_dir, recorder).run()
    return 0


def _retire(study, recorder: Recorder) -> None:
    """Trials left RUNNING by workers of this machine that are gone (the OOM killer's, say), or that never
    started: failed and queued again, their runs FAILED."""
    retired = retire_stale(study)
    recorder.fail(retired)
    if retired:
        print(f"sweep: trial {', '.join(map(str, retired))} had no live worker: failed and queued again", flush=True)


def _announce(spec: specs.StudySpec, study, recorder: Recorder, workers: int) -> None:
    done = len(finished(study))
    print(
        f"sweep: study {spec.name}: {done} of {spec.trials} trials finished, {spec.epochs} epochs each at most, "
        f"{workers} worker{'s' if workers > 1 else ''} here; {spec.validation} training images held out "
        f"for validation; pruner {spec.pruner}",
        flush=True,
    )
    print(f"sweep: runs in MLflow: {recorder.link()}", flush=True)


def _conclude(study, recorder: Recorder) -> None:
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    epochs = sum(t.user_attrs.get("epochs_trained", 0) for t in trials)
    states = ", ".join(
        f"{sum(t.state == s for t in trials)} {s.name.lower()}" for s in TrialState if any(t.state == s for t in trials)
    )
    print(f"sweep: study {study.study_name}: {len(trials)} trials ({states}), {epochs} epochs trained", flush=True)
    if best is not None:
        print(
            f"sweep: best trial {best.number}, validation accuracy {best.value:.4f}; its params.yaml values are "
            f"best_params.yaml in the parent run; `python -m mnist_pipeline.sweep promote {study.study_name}` "
            "trains it on the whole training set as a DVC experiment",
            flush=True,
        )


def _launch(args: argparse.Namespace, study, recorder: Recorder) -> int:
    """Start the worker processes and wait for them. A worker that dies has its running trial failed
    and queued again for the others (a database's heartbeats do that by themselves). The workers have
    a process group of their own: Ctrl-C and SIGTERM reach them once, from here, then again after
    ESCALATE_S (or at a second signal), then SIGKILL; the interruption is raised once all are gone."""
    command = [sys.executable, "-m", "mnist_pipeline.sweep", "worker", args.study]
    for flag in ("trials", "epochs", "storage"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    workers = [subprocess.Popen(command, process_group=0) for _ in range(args.workers)]
    code, first, sent, deadline = 0, 0, 0, float("inf")
    while workers:
        try:
            time.sleep(0.2)
            signum = cli.take()
        except KeyboardInterrupt as exc:  # a second signal, before the first was taken
            signum = signal.SIGTERM if isinstance(exc, cli.Terminated) else signal.SIGINT
        if signum or time.monotonic() > deadline:
            first, sent, deadline = first or signum or 0, sent + 1, time.monotonic() + ESCALATE_S
            for worker in workers:
                worker.send_signal(first if sent <= 2 else signal.SIGKILL)
        for worker in [w for w in workers if w.poll() is not None]:
            workers.remove(worker)
            if worker.returncode < 0:
                retried = retire(study, worker_name(worker.pid))
                recorder.fail(retried)
                print(
                    f"sweep: worker {worker.pid} died ({signal.Signals(-worker.returncode).name}); "
                    f"trial {', '.join(map(str, retried)) or 'none'} failed and queued again",
                    flush=True,
                )
            elif worker.returncode and not first:
                code = code or worker.returncode
    if first:
        raise cli.interruption(first)
    return code


if __name__ == "__main__":
    exit_now(main())
