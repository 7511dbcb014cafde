"""The summary a run prints before its first step: what is trained, on what, how, and where."""

from __future__ import annotations

from typing import Any

from vit5.train.finetune import describe_architecture

__all__ = ["run_summary"]


def run_summary(trainer: Any) -> list[str]:
    """Lines naming the model and its source, the images per split and classes, optimizer, learning
    rate, schedule, epochs and steps, augmentation, precision and device of ``trainer``'s run."""
    cfg, spec, model = trainer.cfg, trainer.spec, trainer.model
    data, optim, schedule, train = cfg.data, cfg.optim, cfg.schedule, cfg.train
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if train.get("finetune"):
        sha = train.get("finetune_sha256")
        source = f"fine-tuned from {train.finetune}{' (EMA weights)' if train.get('finetune_ema') else ''}"
        source += f", sha256 {sha[:12]}..." if sha else ""
        source += "".join(f"; {note}" for note in trainer.finetune_notes)
    else:
        source = "from random initialisation"
    where = f" {data.data_dir}" if data.get("data_dir") else ""
    warmup = float(schedule.warmup_epochs)
    lr_floor = schedule.get("min_lr")
    floor = f"min_lr {lr_floor:g}" if lr_floor is not None else f"to {float(schedule.min_lr_ratio):g} x lr"
    augment = data.get("augment") or "none"
    extras = [f"randaugment {data.randaugment}"] if data.get("randaugment") else []
    extras += [f"{key} {train[key]:g}" for key in ("mixup", "cutmix") if float(train.get(key) or 0) > 0]
    extras += [f"label smoothing {float(train.label_smoothing):g}"]
    extras += [f"EMA {float(train.ema_decay):g}" if float(train.ema_decay or 0) > 0 else "no EMA"]
    processes = f", {trainer.ctx.world_size} processes" if trainer.ctx.distributed else ""
    batch = int(data.batch_size) * int(optim.get("accumulate_steps", 1))
    return [
        f"run        {trainer.run_dir}",
        f"model      {describe_architecture(model)}; {params:,} parameters"
        + (f" ({trainable:,} trainable)" if trainable != params else "")
        + f"; {source}",
        f"data       {spec.name}{where}: {len(trainer.train_set):,} train / {len(trainer.test_set):,} test images, "
        f"{spec.num_classes} classes, {spec.image_size} px",
        f"optimizer  {optim.name}, lr {float(optim.lr):.3g}, weight decay {float(optim.weight_decay):g}, "
        f"batch {batch}",
        f"schedule   {schedule.get('name', 'cosine')}, warmup {warmup:g} epochs, decay {floor}; "
        f"{schedule.epochs} epochs x {trainer.steps_per_epoch} steps = {trainer.total_steps} steps",
        f"augment    {augment}; {', '.join(extras)}",
        f"precision  {train.precision} on {trainer.ctx.device}{processes}"
        + (", torch.compile" if train.get("compile") else ""),
    ]
