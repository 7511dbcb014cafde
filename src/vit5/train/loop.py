"""The training loop: data, model, optimizer, EMA, checkpoints, metrics — resumable bit-for-bit.

Randomness is derived from counters, never from state that a crash could lose: the data order of
epoch ``e`` from ``(seed, e)``, each sample's augmentation from ``(seed, e, index)``, and the
dropout / drop-path / mixup draws of optimizer step ``s`` from ``(seed, s, micro-batch, rank)``.
Resuming from a checkpoint taken after ``s`` steps therefore replays exactly what an uninterrupted
run would have done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vit5._extras import require
from vit5._io import atomic_write_text
from vit5.config import save_config, to_container
from vit5.data import SPLIT_FILE, DataSpec, build_datasets
from vit5.io.run_origin import record_origin
from vit5.train.checkpoint import has_checkpoint, latest_checkpoint, remove_partial_writes, save_checkpoint
from vit5.train.distributed import (
    DistributedContext,
    EpochSampler,
    RepeatedAugSampler,
    cleanup_distributed,
    setup_distributed,
)
from vit5.train.evaluate import check_labels, evaluate
from vit5.train.finetune import freeze_backbone, init_from_pretrained, load_pretrained
from vit5.train.losses import build_criterion
from vit5.train.metrics import MetricsLog, plot_confusion, plot_curves
from vit5.train.optim import build_optimizer, build_scheduler
from vit5.train.progress import progress_bar, use_bars
from vit5.train.recipes import build_model, finalize, validate_run_config
from vit5.train.summary import run_summary
from vit5.train.tracking import Trackers, parse_trackers

logger = logging.getLogger("vit5.train")


#: Steps after the first (whose one-off costs are left out) that the run's estimated time is measured over.
PACE_STEPS = 3


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and batch."""


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (((seed * 1_000_003 + step) * 131 + micro) * 1_009 + rank) % (2**31 - 1)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Trainer:
    """Train ``cfg`` (a run config, see :mod:`vit5.train.recipes`) into ``run_dir``."""

    def __init__(
        self,
        cfg: Any,
        run_dir: Path,
        resume: bool = False,
        *,
        pretrained_state: Mapping[str, torch.Tensor] | None = None,
        trust_config: bool = False,
        epochs: int | None = None,
    ) -> None:
        """``epochs``: with ``resume``, extend (or shorten) the run to this many epochs (see
        :meth:`_extend`); ``pretrained_state``: the weights of ``train.finetune`` when the caller has read them
        already (else they are read from there when the run starts without a checkpoint);
        ``trust_config``: passed to the loader of ``train.finetune``."""
        require("timm", "train", "vit5 train")  # EMA, mixup, LAMB, RandAugment
        self.trust_config = trust_config
        self.ctx: DistributedContext = setup_distributed(cfg["train"].get("device"))
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.started = time.time()
        # (time, step) when this process's first step ended: the ETA counts from there, since the
        # first step pays one-off costs (torch.compile, data-loader start-up) that would inflate it.
        self.pace_origin: tuple[float, int] | None = None
        self.pace_reported = False
        self.checkpoint = None
        if resume:
            if has_checkpoint(self.run_dir):
                self.checkpoint = latest_checkpoint(self.run_dir)
            else:
                logger.warning("%s has no checkpoint yet; starting the run from the beginning", self.run_dir)
        resolved = finalize(cfg)
        validate_run_config(resolved)
        data_cfg = resolved.data
        self.train_set, self.test_set, self.spec = build_datasets(
            data_cfg.dataset, data_cfg.get("data_dir"), data_cfg.get("image_size"), data_cfg.get("augment") or "none",
            download=bool(data_cfg.get("download")) and self.ctx.is_main, seed=resolved.train.seed,
            skip_bad_images=bool(data_cfg.get("skip_bad_images")), max_train_images=data_cfg.get("max_train_images"),
            max_test_images=data_cfg.get("max_test_images"), in_channels=data_cfg.get("in_channels"),
            interpolation=data_cfg.get("interpolation") or "bilinear", color_jitter=data_cfg.get("color_jitter"),
            randaugment=data_cfg.get("randaugment"), random_erasing=float(data_cfg.get("random_erasing") or 0.0),
            val_fraction=float(data_cfg.get("val_fraction", 0.1)), split_seed=int(data_cfg.get("split_seed", 0)),
            split_file=self.run_dir / SPLIT_FILE, write_split=self.ctx.is_main,
            image_column=data_cfg.get("image_column", "image"), label_column=data_cfg.get("label_column", "label"),
        )  # fmt: skip
        self.cfg = finalize(cfg, self.spec.num_classes)
        self._check_data_matches()
        self.precision = self.cfg.train.precision
        self.seed = int(self.cfg.train.seed)
        seed_all(self.seed)
        self.model: nn.Module = build_model(self.cfg.model).to(self.ctx.device)
        self._check_model()
        self.finetune_notes: list[str] = []
        if self.cfg.train.get("finetune") and self.checkpoint is None:
            self._load_pretrained(pretrained_state)
        if self.cfg.train.get("freeze") == "backbone":
            freeze_backbone(self.model)
        if self.cfg.train.get("grad_checkpointing"):
            if not hasattr(self.model, "set_grad_checkpointing"):
                raise ValueError(f"train.grad_checkpointing: {type(self.model).__name__} does not support it")
            self.model.set_grad_checkpointing(True)
        self.optimizer = build_optimizer(self.model, self.cfg.optim)
        self._build_loaders()
        if epochs is not None and epochs != self.cfg.schedule.epochs:
            self._extend(int(epochs))
        self.total_steps = self.steps_per_epoch * self.cfg.schedule.epochs
        warmup = int(round(float(self.cfg.schedule.warmup_epochs) * self.steps_per_epoch))
        schedule = self.cfg.schedule
        min_lr = schedule.get("min_lr")  # an absolute floor, as nvSubquadratic's WSD states it
        min_lr_ratio = (
            float(min_lr) / float(self.cfg.optim.lr) if min_lr is not None else float(schedule.min_lr_ratio)
        )
        self.scheduler = build_scheduler(
            self.optimizer, self.total_steps, warmup, min_lr_ratio,
            name=schedule.get("name", "cosine"), stable_fraction=float(schedule.get("stable_fraction", 0.8)),
            extensions=schedule.get("extensions"),
        )  # fmt: skip
        self.ema = None
        if float(self.cfg.train.ema_decay) > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=float(self.cfg.train.ema_decay))
        self.criterion, self.mixup = build_criterion(
            self.cfg.train, self.spec.num_classes, self.sampler.batch_size
        )
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_acc, self.skipped = -1.0, 0
        self.epoch_totals = [0.0, 0.0, 0.0]  # loss sum, correct, count of the current epoch so far
        self.elapsed_before = 0.0
        if self.checkpoint is not None:
            self._restore()
        self.train_model: nn.Module = self.model
        if self.ctx.distributed:
            # oneDNN returns the gradient of a depthwise conv weight [C, 1, k, k] with another
            # stride on its size-1 axis: the same memory layout, but DDP's reducer compares the
            # strides literally and would warn that the (negligible) copy "may impair performance".
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.ctx.local_rank] if self.ctx.device.type == "cuda" else None
            )
        if self.cfg.train.compile and _can_compile(self.ctx.device):
            self.train_model = torch.compile(self.train_model)
        self.metrics = MetricsLog(self.run_dir / "metrics.csv") if self.ctx.is_main else None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # half-written files of a killed process
                stale.unlink(missing_ok=True)
            remove_partial_writes(self.run_dir / "checkpoints")  # a resume may have nothing left to save
            save_config(self.cfg, self.run_dir / "config.yaml")
            record_origin(self.run_dir)  # its data_dir was used here: the run is this user's own
            if resume:  # forget rows of epochs that will be trained again
                self.metrics.truncate(self.epoch)
        names = parse_trackers(self.cfg.train.get("log")) if self.ctx.is_main else []
        self.trackers = Trackers(names, self.run_dir, to_container(self.cfg), start_step=self.step)
        self.grad_norm = float("nan")

    # ------------------------------------------------------------------------------------------
    # Setup

    def _extend(self, epochs: int) -> None:
        """Continue the run to ``epochs`` epochs: the schedule records where it changed (its step and
        the old end, ``schedule.extensions``) so that the LR continues from its value there; the
        earlier ``config.yaml`` and ``summary.json`` are kept as ``*.epochs-<old>.*``."""
        old = int(self.cfg.schedule.epochs)
        done = self.checkpoint.state["progress"]["epoch"] if self.checkpoint is not None else 0
        if epochs <= done:
            raise ValueError(
                f"--epochs {epochs}: the run has done {done} epochs already; give more to extend it"
            )
        step = self.checkpoint.state["progress"]["step"] if self.checkpoint is not None else 0
        if step:
            self.cfg.schedule.extensions = [*(self.cfg.schedule.get("extensions") or []),
                                            [step, self.steps_per_epoch * old]]  # fmt: skip
        self.cfg.schedule.epochs = epochs
        if self.ctx.is_main:
            for name in ("config.yaml", "summary.json"):
                path = self.run_dir / name
                if path.is_file():
                    path.replace(path.with_name(f"{path.stem}.epochs-{old}{path.suffix}"))
        logger.info("extending the run from %d to %d epochs at step %d", old, epochs, step)

    def _check_data_matches(self) -> None:
        data = self.cfg.data
        if data.get("in_channels") not in (None, self.spec.in_channels):
            raise ValueError(
                f"data.in_channels={data.in_channels} but {self.spec.name} images have {self.spec.in_channels}"
            )

    def _load_pretrained(self, state: Mapping[str, torch.Tensor] | None) -> None:
        """Start from ``train.finetune`` (read without touching the run's random streams)."""
        train = self.cfg.train
        if state is None:
            with torch.random.fork_rng(devices=[]):
                pretrained = load_pretrained(train.finetune, ema=bool(train.get("finetune_ema")),
                                             sha256=train.get("finetune_sha256"), trust_config=self.trust_config)  # fmt: skip
            state = pretrained.model.state_dict()
        self.finetune_notes = init_from_pretrained(self.model, state)

    def _check_model(self) -> None:
        for name, expected in (("num_classes", self.spec.num_classes), ("in_channels", self.spec.in_channels),
                               ("image_size", self.spec.image_size)):  # fmt: skip
            actual = getattr(self.model, name, expected)
            if actual != expected:
                raise ValueError(f"model.{name}={actual} but the data needs {expected} ({self.spec.name})")

    def _build_loaders(self) -> None:
        data, ctx = self.cfg.data, self.ctx
        batch, accumulate = int(data.batch_size), int(self.cfg.optim.get("accumulate_steps", 1))
        if batch < 1 or accumulate < 1:
            raise ValueError(
                f"data.batch_size and optim.accumulate_steps must be >= 1, got {batch}, {accumulate}"
            )
        if batch % ctx.world_size:
            raise ValueError(
                f"data.batch_size={batch} (global) must be divisible by the {ctx.world_size} processes"
            )
        repeats = int(data.get("repeated_aug") or 1)
        if repeats > 1:
            self.sampler: EpochSampler = RepeatedAugSampler(len(self.train_set), batch // ctx.world_size, ctx.rank,
                                                            ctx.world_size, repeats=repeats, seed=self.seed)  # fmt: skip
        else:
            self.sampler = EpochSampler(len(self.train_set), batch // ctx.world_size, ctx.rank, ctx.world_size,
                                        shuffle=True, drop_last=True, seed=self.seed)  # fmt: skip
        batches = self.sampler.batches_per_epoch()
        self.accumulate = accumulate
        self.steps_per_epoch = batches // accumulate
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the training set ({len(self.train_set)} images) is smaller than one optimizer step "
                f"(batch_size {batch} x accumulate_steps {accumulate})"
            )
        workers = int(data.get("num_workers", 0))
        options = dict(num_workers=workers, persistent_workers=False, pin_memory=ctx.device.type == "cuda")
        self.train_loader = torch.utils.data.DataLoader(self.train_set, batch_size=self.sampler.batch_size,
                                                        sampler=self.sampler, drop_last=False, **options)  # fmt: skip
        test_indices = list(range(ctx.rank, len(self.test_set), ctx.world_size))
        self.test_loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.test_set, test_indices), batch_size=int(data.get("eval_batch_size", 256)),
            shuffle=False, **options,
        )  # fmt: skip

    def _restore(self) -> None:
        checkpoint = self.checkpoint
        self.model.load_state_dict(checkpoint.model, strict=True)
        state = checkpoint.state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and checkpoint.ema is not None:
            self.ema.module.load_state_dict(checkpoint.ema, strict=True)
        progress = state["progress"]
        self.step, self.epoch, self.batch_in_epoch = (
            progress["step"],
            progress["epoch"],
            progress["batch_in_epoch"],
        )
        self.best_acc, self.skipped = progress["best_acc"], progress["skipped_nonfinite"]
        self.elapsed_before = progress["elapsed"]
        self.epoch_totals = list(progress["epoch_totals"])
        logger.info("resumed %s at epoch %d, step %d (batch %d of the epoch)", checkpoint.path, self.epoch + 1,
                    self.step, self.batch_in_epoch)  # fmt: skip

    # ------------------------------------------------------------------------------------------
    # Checkpoints

    def _meta(self) -> dict[str, Any]:
        return {"config": to_container(self.cfg), "data": self.spec.to_dict(), "step": self.step,
                "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "best_acc": self.best_acc}  # fmt: skip

    def save(self, names: tuple[str, ...] = ("last",)) -> None:
        if not self.ctx.is_main:
            return
        progress = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                    "best_acc": self.best_acc, "skipped_nonfinite": self.skipped, "elapsed": self.elapsed(),
                    "epoch_totals": list(self.epoch_totals)}  # fmt: skip
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "progress": progress, "torch_rng": torch.get_rng_state()}  # fmt: skip
        ema = self.ema.module.state_dict() if self.ema is not None else None
        for name in names:
            save_checkpoint(self.run_dir / "checkpoints", name, model=self.model.state_dict(), meta=self._meta(),
                            ema=ema, state=state if name == "last" else None)  # fmt: skip

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    # ------------------------------------------------------------------------------------------
    # Training

    def _forward_loss(
        self, images: torch.Tensor, labels: torch.Tensor, micro: int
    ) -> tuple[torch.Tensor, int]:
        seed = step_seed(self.seed, self.step, micro, self.ctx.rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        targets = labels
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.train_model({"input": images.permute(0, 2, 3, 1)})["logits"]  # (B, K)
        loss = self.criterion(logits.float(), targets)
        correct = int((logits.argmax(dim=1) == labels).sum()) if self.mixup is None else 0
        return loss, correct

    def _optimizer_step(
        self, batches: list[tuple[torch.Tensor, torch.Tensor]], batch_index: int
    ) -> tuple[float, int, int]:
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct, count = 0.0, 0, 0
        finite = True
        for micro, (images, labels) in enumerate(batches):
            images, labels = images.to(self.ctx.device), labels.to(self.ctx.device)
            check_labels(labels, self.spec.num_classes)
            sync = micro == len(batches) - 1 or not self.ctx.distributed
            with nullcontext() if sync else self.train_model.no_sync():
                loss, hits = self._forward_loss(images, labels, micro)
                finite &= bool(torch.isfinite(loss))
                (loss / len(batches)).backward()
            loss_sum += loss.item() * labels.numel()
            correct += hits
            count += labels.numel()
        finite = self.ctx.all_reduce_sum([float(not finite)])[0] == 0
        if not finite:
            if not self.cfg.train.skip_nonfinite:
                kept = (
                    f"checkpoints written before it are kept in {self.run_dir / 'checkpoints'}"
                    if has_checkpoint(self.run_dir)
                    else "no checkpoint had been written yet"
                )
                raise NonFiniteLossError(
                    f"non-finite loss at step {self.step + 1} (epoch {self.epoch + 1}, batch {batch_index + 1} of the "
                    f"epoch); {kept}. Lower optim.lr, use train.precision=fp32, or pass --skip-nonfinite to skip "
                    "such batches."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            logger.warning(
                "skipping a batch with a non-finite loss at step %d (%d skipped so far)",
                self.step + 1,
                self.skipped,
            )
        else:
            clip = float(self.cfg.optim.get("clip_grad") or 0)
            if (
                clip > 0 or self.trackers
            ):  # the trackers get the gradient norm (clipped at infinity: unchanged)
                norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
                self.grad_norm = float(norm)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
        self.scheduler.step()
        self.step += 1
        return loss_sum if finite else 0.0, correct, count if finite else 0

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        self.sampler.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
        self.train_set.set_epoch(self.epoch)
        bar = None
        if self.ctx.is_main and use_bars():  # a terminal: a bar with rate, ETA and loss instead of log lines
            bar = progress_bar(self.steps_per_epoch, f"epoch {self.epoch + 1}/{self.cfg.schedule.epochs}",
                               initial=self.batch_in_epoch // self.accumulate)  # fmt: skip
        if bar is None:
            return self._train_batches(None)
        from tqdm.contrib.logging import logging_redirect_tqdm

        try:
            with logging_redirect_tqdm():  # log lines (the pace estimate) print above the bar, not through it
                return self._train_batches(bar)
        finally:
            bar.close()

    def _train_batches(self, bar: Any) -> dict[str, float]:
        images_seen, last_log, epoch_start = 0, time.time(), time.time()
        rate_origin: tuple[float, int] | None = None  # (time, images) after the epoch's first step
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        last_save = time.time()
        save_every = int(self.cfg.train.checkpoint_every_steps or 0)
        save_seconds = float(self.cfg.train.checkpoint_every_seconds or 0)
        for images, labels in self.train_loader:
            pending.append((images, labels))
            if len(pending) < self.accumulate:
                continue
            batch_index = self.batch_in_epoch + len(pending) - 1
            step_loss, step_correct, step_count = self._optimizer_step(pending, batch_index)
            self.batch_in_epoch += len(pending)
            pending = []
            totals = self.epoch_totals
            self.epoch_totals = [totals[0] + step_loss, totals[1] + step_correct, totals[2] + step_count]
            images_seen += step_count * self.ctx.world_size
            if rate_origin is None:
                rate_origin = (time.time(), images_seen)
            if self.pace_origin is None:
                self.pace_origin = (time.time(), self.step)
            elif not self.pace_reported and self.step - self.pace_origin[1] >= PACE_STEPS:
                self._report_pace()
            done_in_epoch = self.batch_in_epoch // self.accumulate
            if self.trackers and self.step % int(self.cfg.train.get("log_every_steps") or 10) == 0:
                elapsed = max(time.time() - epoch_start, 1e-9)
                self.trackers.scalars({"train/loss": step_loss / max(step_count, 1),
                                       "train/lr": self.optimizer.param_groups[0]["lr"],
                                       "train/grad_norm": self.grad_norm,
                                       "train/images_per_second": images_seen / elapsed}, self.step)  # fmt: skip
            if bar is not None:
                bar.set_postfix(loss=f"{self.epoch_totals[0] / max(self.epoch_totals[2], 1):.4f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False)  # fmt: skip
                bar.update(1)
            if done_in_epoch >= self.steps_per_epoch:
                break
            now = time.time()
            if bar is None and now - last_log >= float(self.cfg.train.log_every_seconds):
                loss = self.epoch_totals[0] / max(self.epoch_totals[2], 1)
                origin_time, origin_images = rate_origin
                if images_seen > origin_images and now > origin_time:
                    rate = (images_seen - origin_images) / (now - origin_time)
                else:
                    rate = images_seen / max(now - epoch_start, 1e-9)
                self._log_progress(done_in_epoch, rate, loss)
                last_log = now
            if (save_every and self.step % save_every == 0) or (
                save_seconds and now - last_save >= save_seconds
            ):
                self.save()
                last_save = time.time()
        loss_sum, correct, count = self.ctx.all_reduce_sum(self.epoch_totals)
        self.epoch_totals = [0.0, 0.0, 0.0]
        return {
            "train_loss": loss_sum / max(count, 1),
            "train_acc": correct / max(count, 1) if self.mixup is None else float("nan"),
        }

    def _report_pace(self) -> None:
        """Once, a few steps after the first: the measured time per step and the time the run needs."""
        self.pace_reported = True
        if not self.ctx.is_main or self.pace_origin is None:
            return
        seconds_per_step = (time.time() - self.pace_origin[0]) / max(1, self.step - self.pace_origin[1])
        logger.info("%.3f s per step over the first steps: %s for the %d steps left (evaluation not included)",
                    seconds_per_step, _format_duration((self.total_steps - self.step) * seconds_per_step),
                    self.total_steps - self.step)  # fmt: skip

    def _log_progress(self, done: int, rate: float, loss: float) -> None:
        if not self.ctx.is_main:
            return
        remaining_steps = self.total_steps - self.step
        origin = self.pace_origin
        if origin is None or self.step <= origin[1]:  # only the first step so far: count it after all
            origin = (self.started, self.checkpoint_step or 0)
        seconds_per_step = (time.time() - origin[0]) / max(1, self.step - origin[1])
        logger.info(
            "epoch %d/%d  step %d/%d  loss %.4f  lr %.2e  %.1f img/s  ETA %s", self.epoch + 1, self.cfg.schedule.epochs,
            done, self.steps_per_epoch, loss, self.optimizer.param_groups[0]["lr"], rate,
            _format_duration(remaining_steps * seconds_per_step),
        )  # fmt: skip

    @property
    def checkpoint_step(self) -> int | None:
        return self.checkpoint.state["progress"]["step"] if self.checkpoint is not None else None

    def fit(self) -> dict[str, Any]:
        epochs = self.cfg.schedule.epochs
        if self.ctx.is_main:
            for line in run_summary(self):
                logger.info("%s", line)
        row: dict[str, Any] = {}
        while self.epoch < epochs:
            epoch_start = time.time()
            stats = self.train_epoch()
            train_seconds = time.time() - epoch_start
            label = "evaluate" if self.ctx.is_main else None
            result = evaluate(self.model, self.test_loader, self.spec.num_classes, self.ctx, self.precision,
                              confusion=bool(self.trackers), progress=label)  # fmt: skip
            ema_acc = float("nan")
            if self.ema is not None:
                ema_acc = evaluate(
                    self.ema.module, self.test_loader, self.spec.num_classes, self.ctx, self.precision
                ).top1
            self.epoch += 1
            self.batch_in_epoch = 0
            score = ema_acc if self.ema is not None else result.top1
            improved = score > self.best_acc
            self.best_acc = max(self.best_acc, score)
            row = {"epoch": self.epoch, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"], **stats,
                   "test_loss": result.loss, "test_acc": result.top1, "test_acc5": result.top5,
                   "test_acc_ema": ema_acc, "skipped_nonfinite": self.skipped, "seconds": self.elapsed()}  # fmt: skip
            if self.ctx.is_main:
                self.metrics.append(row)
                plot_curves(
                    self.metrics, self.run_dir / "curves.png", title=f"{self.spec.name}: {self.run_dir.name}"
                )
                # "best" before "last": a kill between the two resumes from the previous "last",
                # which redoes the epoch and writes both again
                self.save(("best", "last") if improved else ("last",))
                self._track_epoch(row, result)
                ema_text = f"  test acc (EMA) {ema_acc:.4f}" if self.ema is not None else ""
                images = self.steps_per_epoch * self.accumulate * self.sampler.global_batch
                eta = (epochs - self.epoch) * (time.time() - epoch_start)
                logger.info("epoch %d/%d  train loss %.4f  test loss %.4f  test acc %.4f%s  %.1f img/s  [%s, ETA %s]",
                            self.epoch, epochs, stats["train_loss"], result.loss, result.top1, ema_text,
                            images / max(train_seconds, 1e-9), _format_duration(self.elapsed()),
                            _format_duration(eta))  # fmt: skip
        return {
            "test_acc": row.get("test_acc", self._last_row_value("test_acc")),
            "test_acc_ema": None
            if self.ema is None
            else row.get("test_acc_ema", self._last_row_value("test_acc_ema")),
            "best_acc": self.best_acc,
            "epochs": epochs,
            "steps": self.step,
            "skipped_nonfinite": self.skipped,
            "run_dir": str(self.run_dir),
            "seconds": round(self.elapsed(), 2),
        }

    def _track_epoch(self, row: dict[str, Any], result: Any) -> None:
        """The epoch's validation metrics, curves and confusion matrix for the trackers."""
        if not self.trackers:
            return
        self.trackers.scalars({"val/top1": row["test_acc"], "val/top5": row["test_acc5"], "val/loss": row["test_loss"],
                               "val/top1_ema": row["test_acc_ema"], "train/epoch_loss": row["train_loss"],
                               "epoch": row["epoch"]}, self.step)  # fmt: skip
        self.trackers.image("curves", self.run_dir / "curves.png", self.step)
        if result.confusion is not None and self.spec.num_classes <= 100:
            names = self.spec.class_names or [str(i) for i in range(self.spec.num_classes)]
            path = plot_confusion(result.confusion, names, self.run_dir / "confusion.png",
                                  title=f"{self.spec.name}: epoch {self.epoch}, top-1 {result.top1:.4f}")  # fmt: skip
            self.trackers.image("confusion", path, self.step)

    def _last_row_value(self, key: str) -> float | None:
        if self.metrics is None or not self.metrics.rows:
            return None
        value = self.metrics.rows[-1].get(key)
        return float(value) if value not in ("", None) else None


def train(
    cfg: Any,
    run_dir: str | Path,
    resume: bool = False,
    *,
    pretrained_state: Mapping[str, torch.Tensor] | None = None,
    trust_config: bool = False,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Train a run config into ``run_dir`` (or continue it with ``resume=True``); returns the summary.
    ``pretrained_state`` / ``trust_config`` / ``epochs``: see :class:`Trainer`."""
    trainer = Trainer(
        cfg,
        Path(run_dir),
        resume=resume,
        pretrained_state=pretrained_state,
        trust_config=trust_config,
        epochs=epochs,
    )
    try:
        summary = trainer.fit()
    finally:
        trainer.trackers.close()
        cleanup_distributed()
    if trainer.ctx.is_main:
        nan_free = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
        atomic_write_text(Path(run_dir) / "summary.json", json.dumps(nan_free, indent=1))
    return summary


def data_spec_from(metadata: dict[str, Any]) -> DataSpec:
    """The DataSpec stored in a checkpoint's metadata."""
    return DataSpec(**{**metadata, "mean": tuple(metadata["mean"]), "std": tuple(metadata["std"])})


def _can_compile(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build kernels here; on a CPU inductor needs a C++ compiler.

    Without one the run continues eagerly (same results up to rounding) with a warning, instead of
    failing on its first step with a compiler traceback.
    """
    if device.type != "cpu":
        return True
    compilers = [name for name in (os.environ.get("CXX"), "c++", "g++", "clang++") if name]
    if any(shutil.which(name) for name in compilers):
        return True
    logger.warning("train.compile: no C++ compiler found (c++, g++, clang++, $CXX), which torch.compile "
                   "needs on a CPU; training eagerly")  # fmt: skip
    return False
