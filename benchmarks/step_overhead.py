"""Per-step overhead of detlight's Trainer against a hand-written PyTorch loop and against bare Lightning.

All variants train the quickstart :class:`~detlight.models.centernet.CenterNet` from the same initial weights on the
same pre-generated batches held in memory, with the same AdamW, gradient-norm clip (35), per-iteration cosine LR
schedule with linear warm-up (mmcv ``CosineAnnealing``, ``min_lr_ratio=0.01``), mmdet loss parsing and logging every
``--log-interval`` iterations:

* ``plain``: a hand-written loop. Log values stay on the device; every interval they are averaged (one host copy)
  and written to TensorBoard (``SummaryWriter``), a text log and a json log; one checkpoint at the end.
* ``detlight``: :class:`~detlight.module.DetectorModule` in a Lightning ``Trainer`` with detlight's default callbacks
  (``LrUpdater``, ``IterTimer``, ``IntervalLogger`` -> ``TensorBoardLogger``, ``TextLogger`` text + json,
  ``MMCheckpoint`` at the end, ``TQDMProgressBar``).
* ``lightning``: bare Lightning doing the same the Lightning way: a minimal ``LightningModule`` with
  ``self.log_dict`` every step (written every interval by ``TensorBoardLogger``), ``LambdaLR`` stepped per iteration,
  ``gradient_clip_val``, ``ModelCheckpoint`` at the end and the same ``TQDMProgressBar``.
* ``lightning-min``: the same module without any logging, logger, progress bar or checkpoint: the floor of a
  Lightning loop (``detlight - lightning-min`` bounds what detlight's callbacks plus TensorBoard, bar and checkpoint
  cost per step).

Method (docs/lightning-notes.md B3): step time = time between consecutive iteration ends (after ``optimizer.step()`` /
Lightning's ``on_train_batch_end``), so it includes batch transfer, hooks, logging and the bar; the first ``--drop``
iterations are dropped. Each run is a fresh subprocess (clean allocator state, true peak RSS). One discarded warm-up
round, then ``--repeats`` interleaved rounds (variant order rotated each round); the robust figure is the paired ratio
``variant / plain`` within a round, median over rounds.

Usage::

    python benchmarks/step_overhead.py --steps 300 --repeats 5
    python benchmarks/step_overhead.py --device cuda --precision bf16-mixed --batch-size 16
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench import load_average, machine_info, markdown_table, median, peak_rss_mb, spread  # noqa: E402

VARIANTS = ("plain", "detlight", "lightning", "lightning-min")
TARGET_RATIO = 1.02
TARGET_CALLBACK_MS = 0.3


@dataclass
class BenchConfig:
    """What every variant runs; also the worker's input (serialised as json)."""

    steps: int = 300
    batch_size: int = 4
    num_batches: int = 8
    log_interval: int = 50
    drop: int = 10
    device: str = "cpu"
    precision: str = "32-true"
    threads: int = 1
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_norm: float = 35.0
    warmup_iters: int = 100
    warmup_ratio: float = 0.001
    min_lr_ratio: float = 0.01
    refresh_rate: int = 50
    num_train: int = 0  # images in the synthetic train split; 0: the quickstart set (600)
    model: str = "centernet"  # or "tiny": a one-conv detector, so that the framework overhead dominates the step
    breakdown: bool = False  # time every callback hook of the detlight run (adds ~1 us per hook call)


# ---------------------------------------------------------------------------------------------------- shared pieces
def lr_at(base: float, it: int, cfg: BenchConfig) -> float:
    """mmcv ``CosineAnnealing`` (by iteration, ``min_lr_ratio``) with linear warm-up, written out by hand."""
    target = base * cfg.min_lr_ratio
    regular = target + 0.5 * (base - target) * (1 + math.cos(math.pi * it / cfg.steps))
    if it < cfg.warmup_iters:
        return regular * (1 - (1 - it / cfg.warmup_iters) * (1 - cfg.warmup_ratio))
    return regular


def make_batches(cfg: BenchConfig) -> list[dict[str, Any]]:
    """``num_batches`` collated training batches from the synthetic set (the quickstart pipeline, flip included)."""
    from detlight.data.datamodule import DetDataModule
    from detlight.data.synthetic import SyntheticCocoSpec

    synthetic = SyntheticCocoSpec(num_train=cfg.num_train) if cfg.num_train else SyntheticCocoSpec()
    datamodule = DetDataModule(synthetic=synthetic, samples_per_gpu=cfg.batch_size, workers_per_gpu=0, seed=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch)
        if len(batches) == cfg.num_batches:
            break
    return batches


class TinyDetector(torch.nn.Module):
    """A 1x1 convolution with CenterNet's three loss keys (mmdet contract): almost no compute per step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward_train(self, img: torch.Tensor, img_metas: Sequence[dict[str, Any]], gt_bboxes: Sequence[torch.Tensor],
                      gt_labels: Sequence[torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        out = self.conv(img[:, :, ::8, ::8]).mean(dim=(0, 2, 3))
        return {"loss_center_heatmap": out[0].abs(), "loss_wh": out[1].abs(), "loss_offset": out[2].abs()}


def build_model(kind: str = "centernet") -> torch.nn.Module:
    """The quickstart CenterNet (``centernet``) or :class:`TinyDetector` (``tiny``), seeded."""
    from detlight.models.centernet import CenterNet

    torch.manual_seed(0)
    if kind == "tiny":
        return TinyDetector()
    if kind != "centernet":
        raise ValueError(f"--model must be 'centernet' or 'tiny', got {kind!r}")
    return CenterNet(num_classes=4)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch (``img`` and the per-image box / label lists) to ``device``."""
    out = dict(batch)
    out["img"] = batch["img"].to(device, non_blocking=True)
    out["gt_bboxes"] = [b.to(device, non_blocking=True) for b in batch["gt_bboxes"]]
    out["gt_labels"] = [lab.to(device, non_blocking=True) for lab in batch["gt_labels"]]
    return out


class InMemoryBatches:
    """``steps`` batches cycling over a fixed list (sized, so Lightning knows the epoch length)."""

    def __init__(self, batches: Sequence[dict[str, Any]], steps: int) -> None:
        self.batches, self.steps = list(batches), steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.batches[i % len(self.batches)] for i in range(self.steps))


def clock_now() -> tuple[float, float]:
    """``(wall, process CPU)`` seconds. CPU time (all threads of the process) is what load on a shared host
    disturbs least: time spent descheduled in favour of other processes does not count."""
    return time.perf_counter(), time.process_time()


def _autocast(cfg: BenchConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if cfg.precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if cfg.precision != "32-true":
        raise ValueError(f"--precision must be '32-true' or 'bf16-mixed', got {cfg.precision!r}")
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------- plain loop
class PlainLogger:
    """What the hand-written loop logs every interval: TensorBoard scalars, a text line and a json line."""

    def __init__(self, work_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(work_dir / "tb"))
        self.json_path = work_dir / "plain.log.json"
        self.logger = logging.getLogger("bench.plain")
        self.logger.setLevel(logging.INFO)
        self.handlers = [logging.FileHandler(work_dir / "plain.log"), logging.StreamHandler(sys.stderr)]
        for handler in self.handlers:
            self.logger.addHandler(handler)

    def write(self, it: int, lr: float, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key if key in ("time", "data_time") else f"train/{key}", value, it)
        self.writer.add_scalar("learning_rate", lr, it)
        self.logger.info(f"Iter [{it}]\tlr: {lr:.3e}, " + ", ".join(f"{k}: {v:.4f}" for k, v in values.items()))
        with open(self.json_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"mode": "train", "iter": it, "lr": lr, **values}) + "\n")

    def close(self) -> None:
        self.writer.close()
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()


def _interval_means(history: dict[str, list[Any]], n: int) -> dict[str, float]:
    """Mean of each key's last ``n`` values: device tensors are reduced on the device, then one host copy."""
    tensor_keys = [k for k, v in history.items() if isinstance(v[-1], torch.Tensor)]
    means = {k: sum(v[-n:]) / len(v[-n:]) for k, v in history.items() if k not in tensor_keys}
    if tensor_keys:
        stacked = torch.stack([torch.stack(history[k][-n:]).float().mean() for k in tensor_keys])
        means.update(zip(tensor_keys, stacked.tolist()))
    return {k: float(means[k]) for k in history}


def run_plain(cfg: BenchConfig, batches: Sequence[dict[str, Any]], model: torch.nn.Module, work_dir: Path,
              device: torch.device) -> tuple[list[float], float, float]:
    """The hand-written loop. Returns iteration end times, the final lr and the final loss."""
    from detlight.models.contract import parse_losses

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bases = [group["lr"] for group in optimizer.param_groups]
    log = PlainLogger(work_dir)
    history: dict[str, list[Any]] = {}
    ends: list[tuple[float, float]] = []
    last = time.perf_counter()
    loss = torch.zeros(())
    for it, cpu_batch in enumerate(InMemoryBatches(batches, cfg.steps)):
        batch = to_device(cpu_batch, device)
        start = time.perf_counter()
        for group, base in zip(optimizer.param_groups, bases):
            group["lr"] = lr_at(base, it, cfg)
        with _autocast(cfg, device):
            loss, log_vars = parse_losses(model.forward_train(**batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_norm, norm_type=2)
        optimizer.step()
        now = time.perf_counter()
        for key, value in {"data_time": start - last, **log_vars, "grad_norm": grad_norm, "time": now - last}.items():
            history.setdefault(key, []).append(value)
        last = now
        if (it + 1) % cfg.log_interval == 0:
            log.write(it + 1, optimizer.param_groups[0]["lr"], _interval_means(history, cfg.log_interval))
        ends.append(clock_now())
    torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}, work_dir / "plain_last.pth")
    log.close()
    return ends, float(optimizer.param_groups[0]["lr"]), float(loss.detach())


# ---------------------------------------------------------------------------------------------------- Lightning
def _step_clock() -> Any:
    from lightning.pytorch.callbacks import Callback

    class StepClock(Callback):
        """Records the time at the end of each training batch."""

        def __init__(self) -> None:
            self.ends: list[tuple[float, float]] = []

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.ends.append(clock_now())

    return StepClock()


def _trainer_kwargs(cfg: BenchConfig, work_dir: Path, name: str) -> dict[str, Any]:
    from lightning.pytorch.loggers import TensorBoardLogger

    return dict(
        max_epochs=1, accelerator="cuda" if cfg.device.startswith("cuda") else "cpu", devices=1,
        precision=cfg.precision, default_root_dir=str(work_dir), logger=TensorBoardLogger(str(work_dir), name=name),
        num_sanity_val_steps=0, limit_val_batches=0, use_distributed_sampler=False, enable_model_summary=False,
    )


#: (owner, hook) -> seconds spent, filled by :func:`_time_hooks` when ``breakdown`` is on
BREAKDOWN: dict[tuple[str, str], float] = {}
PER_STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                  "on_before_optimizer_step", "on_before_zero_grad")


def _time_hooks(obj: Any, owner: str, names: Sequence[str] = PER_STEP_HOOKS) -> None:
    """Wrap the per-step hooks of ``obj`` (instance attributes) so that their time adds up in :data:`BREAKDOWN`."""
    for name in names:
        original = getattr(obj, name)

        def timed(*args: Any, _original: Any = original, _key: tuple[str, str] = (owner, name), **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                BREAKDOWN[_key] = BREAKDOWN.get(_key, 0.0) + time.perf_counter() - start

        setattr(obj, name, timed)


def run_detlight(cfg: BenchConfig, batches: Sequence[dict[str, Any]], model: torch.nn.Module,
                 work_dir: Path) -> tuple[list[float], float, float]:
    """detlight's Trainer with its default callbacks. Returns iteration end times, the final lr and the final loss."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import TQDMProgressBar

    from detlight.callbacks.checkpoint import MMCheckpoint
    from detlight.callbacks.interval_logger import IntervalLogger
    from detlight.callbacks.iter_timer import IterTimer
    from detlight.callbacks.lr_updater import LrUpdater
    from detlight.callbacks.text_logger import TextLogger
    from detlight.module import DetectorModule

    module = DetectorModule(model, optimizer={"type": "AdamW", "lr": cfg.lr, "weight_decay": cfg.weight_decay},
                            grad_clip={"max_norm": cfg.max_norm, "norm_type": 2})
    clock = _step_clock()
    callbacks = [
        LrUpdater(policy="CosineAnnealing", min_lr_ratio=cfg.min_lr_ratio, by_epoch=False, warmup="linear",
                  warmup_iters=cfg.warmup_iters, warmup_ratio=cfg.warmup_ratio),
        IterTimer(),
        IntervalLogger(interval=cfg.log_interval),
        TextLogger(interval=cfg.log_interval),
        MMCheckpoint(interval=1),
        TQDMProgressBar(refresh_rate=cfg.refresh_rate),
        clock,
    ]
    trainer = pl.Trainer(callbacks=callbacks, **_trainer_kwargs(cfg, work_dir, "detlight"))
    if cfg.breakdown:
        BREAKDOWN.clear()
        for callback in callbacks[:-1]:
            _time_hooks(callback, type(callback).__name__)
        _time_hooks(module.log_buffer, "DetectorModule.log_buffer", ("update",))
    trainer.fit(module, train_dataloaders=InMemoryBatches(batches, cfg.steps))
    loss = module.last_outputs["loss"] if module.last_outputs else torch.tensor(float("nan"))
    return clock.ends, float(trainer.optimizers[0].param_groups[0]["lr"]), float(loss.detach())


def run_lightning(cfg: BenchConfig, batches: Sequence[dict[str, Any]], model: torch.nn.Module,
                  work_dir: Path, minimal: bool = False) -> tuple[list[float], float, float]:
    """Bare Lightning, same work done the Lightning way (``minimal``: no logging, logger, bar or checkpoint).

    Returns iteration end times, the final lr and the final loss.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

    from detlight.models.contract import parse_losses

    class BareModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.last_loss = torch.tensor(float("nan"))

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            loss, log_vars = parse_losses(self.model.forward_train(**batch))
            if not minimal:
                    self.log_dict({f"train/{k}": v for k, v in log_vars.items()}, on_step=True, on_epoch=False,
                              batch_size=len(batch["img_metas"]))
            self.last_loss = loss.detach()
            return loss

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_at(1.0, it, cfg))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    module = BareModule()
    clock = _step_clock()
    callbacks = [ModelCheckpoint(dirpath=str(work_dir / "ckpt")), TQDMProgressBar(refresh_rate=cfg.refresh_rate),
                 clock]
    kwargs = _trainer_kwargs(cfg, work_dir, "lightning")
    if minimal:
        callbacks = [clock]
        kwargs.update(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = pl.Trainer(callbacks=callbacks, log_every_n_steps=cfg.log_interval, gradient_clip_val=cfg.max_norm,
                         gradient_clip_algorithm="norm", **kwargs)
    trainer.fit(module, train_dataloaders=InMemoryBatches(batches, cfg.steps))
    # LambdaLR has already moved on to the lr of the step after the last one; report the last one used.
    return clock.ends, lr_at(cfg.lr, cfg.steps - 1, cfg), float(module.last_loss)


def run_lightning_min(cfg: BenchConfig, batches: Sequence[dict[str, Any]], model: torch.nn.Module,
                      work_dir: Path) -> tuple[list[float], float, float]:
    """:func:`run_lightning` with ``minimal=True``."""
    return run_lightning(cfg, batches, model, work_dir, minimal=True)


RUNNERS = {"plain": None, "detlight": run_detlight, "lightning": run_lightning, "lightning-min": run_lightning_min}


def run_variant(variant: str, cfg: BenchConfig, batches: Sequence[dict[str, Any]],
                state: dict[str, torch.Tensor] | None, work_dir: Path) -> dict[str, Any]:
    """Run one variant in this process; returns its step times (ms, first ``drop`` removed) and end state."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; choose from {list(VARIANTS)}")
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg.model)
    if state is not None:
        model.load_state_dict(state)
    device = torch.device(cfg.device)
    work_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()
    if variant == "plain":
        ends, lr, loss = run_plain(cfg, batches, model, work_dir, device)
    else:
        ends, lr, loss = RUNNERS[variant](cfg, batches, model, work_dir)
    wall = time.perf_counter() - wall
    first = max(0, cfg.drop - 1)
    steps_ms = [1000 * (b[0] - a[0]) for a, b in zip(ends[:-1], ends[1:])][first:]
    cpu_ms = [1000 * (b[1] - a[1]) for a, b in zip(ends[:-1], ends[1:])][first:]
    breakdown = {f"{owner}.{hook}": 1e6 * t / len(ends) for (owner, hook), t in BREAKDOWN.items()} if (
        cfg.breakdown and variant == "detlight") else {}
    return {"variant": variant, "steps_ms": steps_ms, "median_ms": median(steps_ms), "cpu_ms": cpu_ms,
            "median_cpu_ms": median(cpu_ms), "wall_s": wall,
            "peak_rss_mb": peak_rss_mb(), "final_lr": lr, "final_loss": loss, "iterations": len(ends),
            "breakdown_us": breakdown}


# ---------------------------------------------------------------------------------------------------- driver
def _worker(args: argparse.Namespace) -> None:
    payload = torch.load(args.batches, weights_only=False)  # written by the parent process just before
    cfg = BenchConfig(**payload["cfg"])
    result = run_variant(args.worker, cfg, payload["batches"], payload["state"], Path(args.work_dir))
    Path(args.out).write_text(json.dumps(result))


def _spawn(variant: str, batches_file: Path, work_dir: Path) -> dict[str, Any]:
    out = work_dir / "result.json"
    work_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--batches", str(batches_file),
           "--work-dir", str(work_dir), "--out", str(out)]
    with open(work_dir / "output.txt", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = (work_dir / "output.txt").read_text()[-3000:]
        raise RuntimeError(f"The {variant} run failed (exit {proc.returncode}); its output ends with:\n{tail}")
    return json.loads(out.read_text())


def run_rounds(cfg: BenchConfig, variants: Sequence[str], repeats: int, warmup: bool, isolate: bool,
               root: Path) -> list[dict[str, dict[str, Any]]]:
    """Interleaved rounds (first one discarded when ``warmup``); each round maps variant -> result."""
    batches = make_batches(cfg)
    state = {k: v.clone() for k, v in build_model(cfg.model).state_dict().items()}
    batches_file = root / "batches.pt"
    torch.save({"cfg": dataclasses.asdict(cfg), "batches": batches, "state": state}, batches_file)
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(repeats + int(warmup)):
        order = list(variants[r % len(variants):]) + list(variants[:r % len(variants)])
        results = {}
        for variant in order:
            work_dir = root / f"round{r}" / variant
            if isolate:
                results[variant] = _spawn(variant, batches_file, work_dir)
            else:
                results[variant] = run_variant(variant, cfg, batches, state, work_dir)
            print(f"round {r}{' (warm-up)' if warmup and r == 0 else ''}: {variant:<13} "
                  f"{results[variant]['median_ms']:8.2f} ms/step wall, {results[variant]['median_cpu_ms']:8.2f} CPU",
                  file=sys.stderr, flush=True)
        rounds.append(results)
    return rounds[int(warmup):]


def _paired(rounds: Sequence[dict[str, dict[str, Any]]], variant: str, base: str, key: str,
            op: str = "ratio") -> list[float]:
    """Per round: ``variant / base`` (``ratio``) or ``variant - base`` (``diff``) of ``key``."""
    if op == "ratio":
        return [r[variant][key] / r[base][key] for r in rounds]
    return [r[variant][key] - r[base][key] for r in rounds]


def summarise(rounds: Sequence[dict[str, dict[str, Any]]], variants: Sequence[str], judge: str = "cpu") -> str:
    """Markdown table (wall and process-CPU step times, paired ratios against ``plain``, peak RSS) and verdicts.

    ``judge`` (``cpu`` or ``wall``) picks the clock the targets are checked on.
    """
    key = "median_cpu_ms" if judge == "cpu" else "median_ms"
    has_plain = "plain" in variants
    rows = []
    for variant in variants:
        wall = [r[variant]["median_ms"] for r in rounds]
        cpu = [r[variant]["median_cpu_ms"] for r in rounds]
        rows.append([
            variant, spread(wall, "{:.2f}"), spread(cpu, "{:.2f}"),
            spread(_paired(rounds, variant, "plain", "median_ms")) if has_plain else "n/a",
            spread(_paired(rounds, variant, "plain", "median_cpu_ms")) if has_plain else "n/a",
            spread(_paired(rounds, variant, "plain", key, "diff"), "{:+.2f}") if has_plain else "n/a",
            f"{median([r[variant]['peak_rss_mb'] for r in rounds]):.0f}",
        ])
    lines = [markdown_table(["variant", "wall ms/step", "CPU ms/step", "paired ratio vs plain (wall)",
                             "paired ratio vs plain (CPU)", f"+ms vs plain ({judge})", "peak RSS MiB"], rows), ""]
    keys = sorted({k for r in rounds for k in r.get("detlight", {}).get("breakdown_us", {})})
    if keys:
        hook_rows = [[k, f"{median([r['detlight']['breakdown_us'].get(k, 0.0) for r in rounds]):.1f}"] for k in keys]
        total = median([sum(r["detlight"]["breakdown_us"].values()) for r in rounds])
        lines += [markdown_table(["detlight hook", "wall us per step (median over rounds)"],
                                 [*hook_rows, ["total", f"{total:.1f}"]]), ""]
    lines.append(f"Targets checked on {judge} time (median over rounds of the paired values; [min-max] over rounds):")
    if has_plain and "detlight" in variants:
        ratio = median(_paired(rounds, "detlight", "plain", key))
        lines.append(f"- detlight / plain = {ratio:.3f} (target <= {TARGET_RATIO}): "
                     f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}")
    if "lightning" in variants and "detlight" in variants:
        diffs = _paired(rounds, "detlight", "lightning", key, "diff")
        lines.append(f"- detlight - lightning = {spread(diffs, '{:+.2f}')} ms/step (target <= {TARGET_CALLBACK_MS}): "
                     f"{'met' if median(diffs) <= TARGET_CALLBACK_MS else 'MISSED'}")
    if "lightning-min" in variants and "detlight" in variants:
        diffs = _paired(rounds, "detlight", "lightning-min", key, "diff")
        lines.append(f"- detlight - lightning-min = {spread(diffs, '{:+.2f}')} ms/step (detlight's callbacks + "
                     "TensorBoard + bar + checkpoint over a bare Lightning loop)")
    loss_gap = max((_rel_gap([r[v]["final_loss"] for v in variants]) for r in rounds), default=0.0)
    lr_gap = max((_rel_gap([r[v]["final_lr"] for v in variants]) for r in rounds), default=0.0)
    lines.append(f"- same work: final loss differs by <= {loss_gap:.1e}, final lr by <= {lr_gap:.1e} (relative)")
    return "\n".join(lines)


def _rel_gap(values: Sequence[float]) -> float:
    return (max(values) - min(values)) / max(abs(max(values)), 1e-12)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--repeats", type=int, default=5, help="measured rounds after the warm-up round")
    parser.add_argument("--no-warmup", action="store_true", help="do not run (and discard) a warm-up round")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--num-batches", type=int, default=defaults.num_batches, help="distinct batches cycled")
    parser.add_argument("--log-interval", type=int, default=defaults.log_interval)
    parser.add_argument("--drop", type=int, default=defaults.drop, help="first iterations left out of the timing")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default=defaults.precision)
    parser.add_argument("--model", choices=["centernet", "tiny"], default=defaults.model,
                        help="tiny: a one-conv detector, to see the framework overhead alone")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch.set_num_threads per run")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--judge", choices=["cpu", "wall"], default=None,
                        help="clock the targets are checked on (default: cpu on a CPU device, wall on CUDA)")
    parser.add_argument("--breakdown", action="store_true", help="also time each detlight callback hook")
    parser.add_argument("--in-process", action="store_true", help="run variants in this process (no subprocess)")
    parser.add_argument("--work-dir", default=None, help="where runs write logs/checkpoints (default: a temp dir)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batches", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.drop + 1:
        parser.error(f"--steps ({args.steps}) must exceed --drop + 1 ({args.drop + 1})")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown --variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark and print (and return) the markdown report."""
    args = parse_args(argv)
    if args.worker:
        _worker(args)
        return ""
    cfg = BenchConfig(steps=args.steps, batch_size=args.batch_size, num_batches=args.num_batches,
                      log_interval=args.log_interval, drop=args.drop, device=args.device, precision=args.precision,
                      threads=args.threads, model=args.model, breakdown=args.breakdown, warmup_iters=min(BenchConfig.warmup_iters, args.steps // 3))
    variants = args.variants.split(",")
    with contextlib.ExitStack() as stack:
        root = Path(args.work_dir) if args.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        header = (f"step overhead: {'CenterNet' if cfg.model == 'centernet' else 'TinyDetector'}, batch {cfg.batch_size} x 3x128x128, {cfg.steps} steps (first "
                  f"{cfg.drop} dropped), log every {cfg.log_interval}, {cfg.device} {cfg.precision}, "
                  f"{cfg.threads} thread(s), {args.repeats} rounds\nmachine: {machine_info(cfg.device)}")
        rounds = run_rounds(cfg, variants, args.repeats, not args.no_warmup, not args.in_process, root)
        judge = args.judge or ("wall" if cfg.device.startswith("cuda") else "cpu")
        report = f"{header}\n\n{summarise(rounds, variants, judge)}\nload average after: {load_average()}"
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main()
