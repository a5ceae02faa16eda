"""``detlight check --config x.yaml``: preflight a training config without training.

Replaces: nothing in mmdet (a bad config there failed minutes into ``tools/train.py``, often inside a worker).

Builds the Trainer, model and datamodule exactly as ``detlight fit`` would, then runs one training batch forward
and backward on the CPU process and reports: dataset sizes and per-class box counts, parameters that received no
gradient, whether the loss is finite, the resolved accelerator / strategy / world size next to what the launcher's
environment says, the effective batch size and the (scaled) learning rate, and whether the work dir is writable.
The exit status is 0 when no problem was found and 1 otherwise (2 for a config that does not even build).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["CheckReport", "run_check", "run_checks"]

#: Environment variables that launchers use to announce the world size.
LAUNCHER_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


@dataclass
class CheckReport:
    """What :func:`run_checks` found: ``info`` lines for the user and ``problems`` that fail the check."""

    info: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The report as printed by ``detlight check``."""
        lines = ["detlight check:", *(f"  {line}" for line in self.info)]
        if self.problems:
            lines += [f"{len(self.problems)} problem(s):", *(f"  - {p}" for p in self.problems)]
        else:
            lines.append("OK: no problem found")
        return "\n".join(lines)


def _class_counts(dataset: Any) -> dict[str, int]:
    classes = tuple(getattr(dataset, "CLASSES", ()))
    cat2label = getattr(dataset, "cat2label", {})
    counts: Counter[int] = Counter()
    for anns in getattr(dataset, "_anns", {}).values():
        counts.update(cat2label[a["category_id"]] for a in anns
                      if a.get("category_id") in cat2label and not a.get("iscrowd", 0))
    return {name: counts.get(i, 0) for i, name in enumerate(classes)}


def _check_data(datamodule: Any, report: CheckReport) -> None:
    datamodule.prepare_data()
    datamodule.setup("fit")
    for name, dataset in getattr(datamodule, "datasets", {}).items():
        counts = _class_counts(dataset)
        report.info.append(f"data.{name}: {len(dataset)} images, {len(counts)} classes, boxes per class {counts}")
        if len(dataset) == 0:
            report.problems.append(f"data.{name} is empty")
        empty = [c for c, n in counts.items() if n == 0]
        if name == "train" and empty:
            report.problems.append(f"data.train has no box of class(es) {empty}")


def _check_batch(module: Any, datamodule: Any, report: CheckReport) -> None:
    batch = next(iter(datamodule.train_dataloader()))
    # the datamodule's own transfer hook, as the Trainer calls it (OpenMMLab's unwraps mmcv's DataContainers there)
    batch = datamodule.transfer_batch_to_device(batch, module.device, 0)
    module.train()
    module.zero_grad(set_to_none=True)
    outputs = module.adapter.losses(batch)
    loss = outputs["loss"]
    values = {k: float(v) for k, v in outputs.get("log_vars", {}).items()}
    report.info.append("one batch: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
    if not bool(torch.isfinite(loss)):
        report.problems.append(f"the first batch's loss is not finite: {values}")
    loss.backward()
    unused = [n for n, p in module.model.named_parameters() if p.requires_grad and p.grad is None]
    if unused:
        shown = ", ".join(unused[:8]) + (", ..." if len(unused) > 8 else "")
        report.problems.append(
            f"{len(unused)} parameter(s) received no gradient: {shown}. Fix the graph, freeze them "
            "(requires_grad=False), or under DDP use `trainer.strategy: ddp_find_unused_parameters_true`."
        )
    module.zero_grad(set_to_none=True)


def _check_launch(trainer: pl.Trainer, module: Any, datamodule: Any, report: CheckReport) -> None:
    world = int(trainer.world_size)
    report.info.append(f"accelerator={type(trainer.accelerator).__name__}, strategy={type(trainer.strategy).__name__}"
                       f", devices={trainer.num_devices}, nodes={trainer.num_nodes}, world_size={world}")
    for var in LAUNCHER_VARS:
        value = os.environ.get(var)
        if value and value.isdigit() and int(value) != world:
            report.problems.append(f"the launcher says {var}={value}, but the Trainer resolved world_size={world}; "
                                   "set trainer.devices / trainer.num_nodes to match the launcher")
    per_gpu = int(getattr(datamodule, "samples_per_gpu", 0) or 0)
    accumulate = int(trainer.accumulate_grad_batches)
    if per_gpu:
        report.info.append(f"effective batch size = {per_gpu} per process x {world} process(es) x {accumulate} "
                           f"accumulation = {per_gpu * world * accumulate}")
    cfg = dict(getattr(module, "optimizer_cfg", {}))
    if "lr" in cfg:
        from detlight.optim.builder import scale_lr

        scaled, factor = scale_lr(cfg, getattr(module, "auto_scale_lr", None), world, per_gpu or 1)
        report.info.append(f"lr = {cfg['lr']}" + (f" scaled x{factor:g} -> {scaled['lr']:g}" if factor != 1 else ""))


def _check_work_dir(trainer: pl.Trainer, report: CheckReport) -> None:
    work_dir = os.path.abspath(str(trainer.default_root_dir))
    probe = work_dir
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        report.problems.append(f"work dir {work_dir} is not writable (checked {probe})")
    else:
        report.info.append(f"work dir: {work_dir}")


def run_checks(trainer: pl.Trainer, module: Any, datamodule: Any) -> CheckReport:
    """Run every check on built objects; exceptions in one check become problems and the others still run."""
    report = CheckReport()
    steps = [("work dir", lambda: _check_work_dir(trainer, report)),
             ("launch", lambda: _check_launch(trainer, module, datamodule, report)),
             ("data", lambda: _check_data(datamodule, report))]
    for name, step in steps:
        try:
            step()
        except Exception as err:  # noqa: BLE001 - every failure is reported, not raised
            report.problems.append(f"{name}: {err}")
    if any(p.startswith("data:") for p in report.problems):
        return report
    head = getattr(module.model, "num_classes", None)
    classes = getattr(datamodule, "num_classes", None)
    if isinstance(head, int) and isinstance(classes, int) and head != classes:
        report.problems.append(f"the head predicts {head} classes (model.model.init_args.num_classes), the dataset "
                               f"has {classes}")
        return report
    try:
        _check_batch(module, datamodule, report)
    except Exception as err:  # noqa: BLE001
        report.problems.append(f"one training batch failed: {type(err).__name__}: {err}")
    return report


def run_check(cli: Any) -> int:
    """``detlight check``: run every check on a CLI built with ``run=False``, print the report, return the status.

    The CLI is built by :func:`detlight.cli.build_cli` exactly as ``detlight fit`` builds it.
    """
    report = run_checks(cli.trainer, cli.model, cli.datamodule)
    print(report.render(), flush=True)
    return 1 if report.problems else 0
