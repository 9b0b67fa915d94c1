"""Where a torch classifier is trained: one Hugging Face ``Trainer`` loop shared by every torch classifier.

:func:`fit_torch` takes a classifier that follows the protocol of :mod:`steth_hub.torch_classifier`, a training
:class:`~steth_hub.clips.ClipSet` (and optionally a validation one), a recipe (the paper's
``configs/paper.yaml`` or another) and a working folder for checkpoints. It

* computes the features of every clip once, with the classifier's own featuriser, and keeps
  them in memory (a clip is featurised once per fit, not once per epoch);
* fits the classifier's normalisation on the training features only;
* trains with ``transformers.Trainer``: class-weighted cross-entropy for the imbalance between
  asthma and not-asthma clips, optional augmentation on the features (SpecAugment-style time and
  frequency masks, a random circular time shift, a random gain, mixup), cosine schedule with
  warm-up, gradient accumulation and clipping, early stopping on the validation set with the
  best checkpoint restored, fp16 only where CUDA is present;
* is seeded (``transformers.set_seed``) and resumable: ``recipe["resume"]`` continues a killed
  run from its last checkpoint in ``out_dir``.

Recipe keys are ``TrainingArguments`` names where one exists, plus the keys in
:data:`steth_hub.recipe.EXTRA_KEYS`; :mod:`steth_hub.recipe` checks them before any work.

The paper gives both "warmup 0.25" and "150 warmup steps". transformers 5 has one field,
``warmup_steps`` (a value below 1 is a fraction of the training steps), so a recipe may hold
both ``warmup_ratio`` and ``warmup_steps``: ``warmup_steps`` is applied when present and
``warmup_ratio`` is used only when ``warmup_steps`` is absent. The history records which.

A classifier trained here follows the protocol of :mod:`steth_hub.torch_classifier`
(:class:`~steth_hub.torch_classifier.TorchClassifier` implements the shared parts and calls
:func:`fit_torch` from its ``fit``). The experiment orchestration (a config and a corpus in, a saved
model out) is in :mod:`steth_hub.experiment`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from steth_hub.errors import ConfigError
from steth_hub.feature_cache import featurise_clipset
from steth_hub.recipe import _check_noisy_copies, check_recipe, training_argument_names

log = logging.getLogger(__name__)


def class_weights(labels: np.ndarray, setting: Any = "balanced") -> np.ndarray:
    """Per-class loss weights: ``n / (2 * count)`` for "balanced" (both classes weigh the same in total)."""
    labels = np.asarray(labels)
    if setting in ("none", None):
        return np.ones(2, dtype=np.float32)
    if isinstance(setting, (list, tuple)):
        return np.asarray(setting, dtype=np.float32)
    counts = np.bincount(labels[labels >= 0], minlength=2).astype(np.float64)
    counts[counts == 0] = 1.0
    return (counts.sum() / (2.0 * counts)).astype(np.float32)


# --------------------------------------------------------------------------- augmentation
def augment_batch(x, y, axes: dict, settings: dict, num_classes: int = 2, targets=None):
    """Augment a batch of normalised features; returns (features, soft targets [N, num_classes]).

    * ``time_mask`` / ``freq_mask``: the widest mask (in frames / bins); ``time_masks`` and
      ``freq_masks`` masks of each per example (default 2 and 2). Masked cells are set to 0, the
      normalised mean.
    * ``time_shift``: move each example by a random fraction of its length, up to this fraction;
      ``shift_mode`` "roll" (default) wraps it around, "pad" slides it and fills the gap with 0
      (the normalised average spectrum), so no wrap-around seam appears inside the clip.
    * ``gain_db``: add a random offset of up to this many (normalised) units, a level change.
    * ``mixup_alpha``: mix pairs of examples and their targets with a Beta(alpha, alpha) weight.

    Uses torch's global generator, which ``transformers.set_seed`` and checkpoint resume control.
    """
    import torch

    x = x.clone()
    n = x.shape[0]
    if targets is None:  # else soft targets given (distillation), mixed by mixup like one-hot ones
        targets = torch.nn.functional.one_hot(y.long(), num_classes).to(x.dtype)
    time_axis, freq_axis = axes["time"] % x.dim(), axes["freq"] % x.dim()
    length, bins = x.shape[time_axis], x.shape[freq_axis]

    shift = float(settings.get("time_shift") or 0.0)
    if shift > 0:
        for i in range(n):
            k = int(torch.randint(-int(shift * length), int(shift * length) + 1, (1,)))
            if k and settings.get("shift_mode", "roll") == "pad":
                row = torch.zeros_like(x[i])
                src = x[i].narrow(time_axis - 1, max(0, -k), length - abs(k))
                row.narrow(time_axis - 1, max(0, k), length - abs(k)).copy_(src)
                x[i] = row
            elif k:
                x[i] = torch.roll(x[i], shifts=k, dims=time_axis - 1)

    def mask(axis: int, size: int, width: int, count: int) -> None:
        width = min(int(width), size)
        if width <= 0:
            return
        for i in range(n):
            for _ in range(count):
                w = int(torch.randint(0, width + 1, (1,)))
                if w == 0:
                    continue
                s = int(torch.randint(0, size - w + 1, (1,)))
                x[i].narrow(axis - 1, s, w).zero_()

    mask(time_axis, length, settings.get("time_mask") or 0, int(settings.get("time_masks", 2)))
    mask(freq_axis, bins, settings.get("freq_mask") or 0, int(settings.get("freq_masks", 2)))

    gain = float(settings.get("gain_db") or 0.0)
    if gain > 0:
        shape = [n] + [1] * (x.dim() - 1)
        x = x + (torch.rand(shape, dtype=x.dtype, device=x.device) * 2 - 1) * gain

    alpha = float(settings.get("mixup_alpha") or 0.0)
    if alpha > 0 and n > 1:
        lam = torch.distributions.Beta(alpha, alpha).sample((n,)).to(x.device, x.dtype)
        lam = torch.maximum(lam, 1 - lam)  # the first example dominates, so its features stay recognisable
        perm = torch.randperm(n, device=x.device)
        shape = [n] + [1] * (x.dim() - 1)
        x = lam.view(shape) * x + (1 - lam.view(shape)) * x[perm]
        targets = lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]
    return x, targets


# --------------------------------------------------------------------------- self-supervised warm start
def statistics_targets(features, axes: dict):
    """Each clip's own summary: the mean and standard deviation over time of every frequency bin.

    Returns ``[N, 2 * bins]`` targets, standardised over the clips given, keeping only the columns
    that vary (the empty bands above a band limit are constant and dropped).
    """
    import torch

    time_axis = axes["time"] % features.dim()
    stats = torch.cat([features.mean(dim=time_axis).flatten(1), features.std(dim=time_axis).flatten(1)], dim=1)
    spread = stats.std(dim=0)
    keep = spread > 1e-3
    return (stats[:, keep] - stats[:, keep].mean(dim=0)) / spread[keep]


def pretrain_statistics(classifier, features, settings: dict, *, seed: int, batch_size: int = 16) -> dict:
    """Warm-start the network by teaching it each clip's time-averaged spectrum and its spread.

    Why: on a few hundred clips a transformer from scratch sits at chance for many epochs and
    then memorises; a linear model on these very statistics already separates asthma from
    not-asthma about as well as anything here. Regressing them first (from the training clips'
    own audio; no labels, no annotation) gives the pooled representation that summary before
    the classification head is trained on the labels. The regression head is thrown away.

    Needs the classifier's ``pooled(module, features) -> [N, hidden]``. ``settings``: ``epochs``,
    ``learning_rate`` (1e-3), ``weight_decay`` (0.05), ``batch_size``. Returns the loss per epoch.
    """
    import torch

    net = classifier.torch_module()
    targets = statistics_targets(features, classifier.feature_axes)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        width = classifier.pooled(net, features[:2]).shape[-1]
    head = torch.nn.Linear(width, targets.shape[1])
    torch.nn.init.zeros_(head.bias)
    head.weight.data.normal_(0.0, 0.02, generator=generator)
    params = list(net.parameters()) + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=float(settings.get("learning_rate", 1e-3)),
                                  weight_decay=float(settings.get("weight_decay", 0.05)))
    size = int(settings.get("batch_size") or batch_size)
    losses = []
    net.train()
    started = time.perf_counter()
    for _ in range(int(settings.get("epochs", 0))):
        order = torch.randperm(len(features), generator=generator)
        total = 0.0
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            loss = torch.nn.functional.mse_loss(head(classifier.pooled(net, features[idx])), targets[idx])
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            total += loss.item() * len(idx)
        losses.append(round(total / len(order), 4))
    seconds = time.perf_counter() - started
    return {"epochs": len(losses), "loss": losses, "targets": int(targets.shape[1]), "seconds": round(seconds, 3),
            "clips_per_second": round(len(losses) * len(features) / seconds, 3) if seconds > 0 else None}


# --------------------------------------------------------------------------- the loop
def _torch_parts():
    """The torch classes fit_torch needs, built on first use so importing this module stays light."""
    import torch
    from transformers import Trainer

    class FeatureDataset(torch.utils.data.Dataset):
        """Precomputed, normalised features and labels, served as Trainer batches."""

        def __init__(self, features, labels, soft=None, partner=None):
            self.features = features
            self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
            # a teacher's P(asthma) per clip (distillation), else the labels themselves
            self.soft = torch.as_tensor(np.asarray(labels if soft is None else soft), dtype=torch.float32)
            self.partner = partner  # each clip's noisy copy (consistency training), else None

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            item = {"features": self.features[i], "labels": self.labels[i], "soft": self.soft[i]}
            if self.partner is not None:
                item["partner"] = self.partner[i]
            return item

    class LogitsModel(torch.nn.Module):
        """Wraps the classifier's network so the Trainer sees ``forward(features) -> {"logits"}``."""

        def __init__(self, classifier, net):
            super().__init__()
            self.net = net
            self._classifier = [classifier]  # a list keeps it out of the module tree and the state dict

        def forward(self, features, labels=None):
            return {"logits": self._classifier[0].logits(self.net, features)}

    class WeightedTrainer(Trainer):
        """Trainer with class-weighted (soft-target) cross-entropy and feature augmentation."""

        loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

        def __init__(self, *args, class_weights=None, augment=None, axes=None, smoothing=0.0,
                     encoder_lr_scale=None, distill_alpha=None, consistency=0.0, **kwargs):
            super().__init__(*args, **kwargs)
            self._consistency = float(consistency or 0.0)
            self._distill_alpha = None if distill_alpha is None else float(distill_alpha)
            self._encoder_lr_scale = None if encoder_lr_scale is None else float(encoder_lr_scale)
            # our loss replaces Trainer's, so the recipe's label_smoothing_factor is applied here (soft targets)
            self._smoothing = float(smoothing or 0.0)
            self._weights = torch.as_tensor(class_weights, dtype=torch.float32)
            self._augment = augment or {}
            self._axes = axes

        def create_optimizer(self, *args, **kwargs):
            """AdamW with the encoder at ``encoder_lr_scale`` x the learning rate (a pretrained encoder
            moves slowly while the head learns); the usual optimiser otherwise."""
            scale = self._encoder_lr_scale
            if scale is None or self.optimizer is not None:
                return super().create_optimizer(*args, **kwargs)
            net = self.model.net
            encoder = {id(p) for p in self.model._classifier[0].encoder_parameters(net)}
            lr, decay = self.args.learning_rate, self.args.weight_decay
            groups = [{"params": [p for p in net.parameters() if p.requires_grad and id(p) in encoder],
                       "lr": lr * scale, "weight_decay": decay},
                      {"params": [p for p in net.parameters() if p.requires_grad and id(p) not in encoder],
                       "lr": lr, "weight_decay": decay}]
            self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr,
                                               betas=(self.args.adam_beta1, self.args.adam_beta2),
                                               eps=self.args.adam_epsilon)
            return self.optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            x, y = inputs["features"], inputs["labels"]
            soft = inputs.get("soft")
            if model.training and self._distill_alpha is not None and soft is not None:
                # distillation: alpha x the label + (1 - alpha) x the teacher's probability
                q = self._distill_alpha * y.to(x.dtype) + (1.0 - self._distill_alpha) * soft.to(x.dtype)
                hard = torch.stack([1.0 - q, q], dim=-1)
            else:
                hard = None
            partner = inputs.get("partner") if model.training else None
            if partner is not None:
                # a clip and its noisy copy get the same masks, shift, gain and mixup: they differ by the noise only
                pair = torch.stack([x, partner.to(x.dtype)], dim=1)
                dims = x.dim()
                axes = {k: v % dims + 1 for k, v in self._axes.items()}
                if self._augment:
                    pair, targets = augment_batch(pair, y, axes, self._augment, targets=hard)
                else:
                    targets = hard if hard is not None else torch.nn.functional.one_hot(y.long(), 2).to(x.dtype)
                x = torch.cat([pair[:, 0], pair[:, 1]])
                targets = torch.cat([targets, targets])
            elif model.training and self._augment:
                x, targets = augment_batch(x, y, self._axes, self._augment, targets=hard)
            else:
                targets = hard if hard is not None else torch.nn.functional.one_hot(y.long(), 2).to(x.dtype)
            if model.training and self._smoothing > 0:
                targets = targets * (1.0 - self._smoothing) + self._smoothing / targets.shape[-1]
            outputs = model(features=x)
            logits = outputs["logits"].float()
            weights = self._weights.to(logits.device)
            per_example = -(targets.float() * torch.log_softmax(logits, dim=-1) * weights).sum(-1)
            norm = (targets.float() * weights).sum(-1)
            loss = per_example.sum() / norm.sum().clamp_min(1e-8)
            if partner is not None and self._consistency > 0:
                loss = loss + self._consistency * consistency_loss(logits[:len(partner)], logits[len(partner):])
            if partner is not None and return_outputs:
                outputs = {"logits": outputs["logits"][:len(partner)]}
            return (loss, outputs) if return_outputs else loss

    return torch, FeatureDataset, LogitsModel, WeightedTrainer


def consistency_loss(clean, noisy):
    """Symmetric KL divergence between the class distributions of clips and their noisy copies
    (stability training, Zheng et al., CVPR 2016): small when noise does not move P(asthma)."""
    import torch

    p, q = torch.log_softmax(clean, dim=-1), torch.log_softmax(noisy, dim=-1)
    kl_pq = (p.exp() * (p - q)).sum(-1)
    kl_qp = (q.exp() * (q - p)).sum(-1)
    return 0.5 * (kl_pq + kl_qp).mean()


def consistency_pairs(train, train_x):
    """``(clip features, their noisy copies' features, labels)`` for consistency training: clip ``i``
    is paired with each of its copies (``ClipSet.with_copies`` puts copy ``k`` of clip ``i`` at
    ``(k + 1) * n + i``)."""
    import torch

    summary = train.meta.get("noisy_copies") or {}
    copies = int(summary.get("copies") or 0)
    n = len(train) // (copies + 1) if copies else 0
    if copies < 1 or n * (copies + 1) != len(train):
        raise ConfigError("noisy_copies.consistency needs the training clips with their noisy copies",
                          fix="set noisy_copies.copies (1 or more) beside consistency")
    clean = torch.cat([train_x[:n]] * copies)
    return clean, train_x[n:], np.tile(np.asarray(train.labels)[:n], copies)


def _stop_at_epoch_callback(epoch: float):
    """Stop once ``epoch`` epochs are done, leaving the learning-rate schedule as the recipe sets it.

    A cross-validation fold trains on the recipe's schedule and keeps its best epoch; a final
    model stopped at the folds' median best epoch on the same schedule is trained the same way.
    """
    from transformers import TrainerCallback

    class StopAtEpoch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.epoch is not None and state.epoch >= epoch - 1e-9:
                control.should_training_stop = True
                control.should_save = True

    return StopAtEpoch()


def _compute_metrics(eval_pred) -> dict:
    """Clip-level AUROC and accuracy on the validation set (logged next to eval_loss)."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = p[:, 1] / p.sum(axis=1)
    out = {"accuracy": float(((p >= 0.5).astype(int) == labels).mean())}
    if len(np.unique(labels)) == 2:
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(labels, p))
    return out


def _say(recipe: dict, message: str) -> None:
    """A progress line on stderr for the silent stages before the Trainer's bar (unless progress is off)."""
    import sys

    if not recipe.get("disable_tqdm"):
        print(message, file=sys.stderr, flush=True)


def _quiet_trainer_logs(trainer) -> None:
    """Replace the Trainer's log printing (raw ``{'loss': ...}`` dicts between progress bars) with the
    latest loss shown on the progress bar itself; the history keeps every log entry."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs:
                shown = {k: f"{v:.4g}" for k, v in logs.items()
                         if k in ("loss", "eval_loss", "eval_auroc") and isinstance(v, (int, float))}
                if shown:
                    self.training_bar.set_postfix(shown, refresh=False)

    had_bar = any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if had_bar:
        trainer.add_callback(QuietProgress)


def checkpoint_problem(folder: Path) -> str | None:
    """Why a ``checkpoint-N`` folder cannot be resumed from (a run killed while writing it), or None."""
    import json

    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    empty = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size == 0)
    if empty:
        return "0-byte file(s) " + ", ".join(empty)
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "trainer_state.json is not valid JSON"
    if not any(folder.glob("*.safetensors")):
        return "no .safetensors weights"
    return None


def complete_checkpoints(out_dir: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest *complete* ``checkpoint-N`` in ``out_dir`` and the newer ones skipped, with why."""
    import re

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None, []
    found = []
    for sub in out_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", sub.name)
        if match and sub.is_dir():
            found.append((int(match.group(1)), sub))
    skipped = []
    for _, folder in sorted(found, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder), skipped
        skipped.append((str(folder), problem))
    return None, skipped


def _has_checkpoint(out_dir: Path) -> str | None:
    """The newest complete checkpoint in ``out_dir``; incomplete newer ones are skipped, and said so."""
    import sys

    newest, skipped = complete_checkpoints(out_dir)
    for folder, problem in skipped:
        message = f"skipping incomplete checkpoint {folder} ({problem}; the run was probably killed while saving it)"
        log.warning("%s", message)
        print(f"warning: {message}", file=sys.stderr)
    return newest


def training_arguments(recipe: dict, out_dir: Path, *, has_valid: bool, cuda: bool):
    """Translate a checked recipe into ``TrainingArguments`` (and say what was adapted)."""
    from transformers import TrainingArguments

    names = training_argument_names()
    kwargs = {k: v for k, v in recipe.items() if k in names}
    kwargs.pop("label_smoothing_factor", None)  # applied by our loss (WeightedTrainer), not by Trainer's
    notes = []
    if "warmup_steps" not in recipe and recipe.get("warmup_ratio") is not None:
        kwargs["warmup_steps"] = float(recipe["warmup_ratio"])  # below 1: a fraction of the training steps
        notes.append(f"warmup: ratio {recipe['warmup_ratio']} of the training steps")
    elif "warmup_steps" in recipe:
        notes.append(f"warmup: {recipe['warmup_steps']} steps"
                     + (f" (warmup_ratio {recipe['warmup_ratio']} not applied)" if "warmup_ratio" in recipe else ""))
    for half in ("fp16", "bf16"):
        if kwargs.get(half) and not cuda:
            kwargs[half] = False
            notes.append(f"{half} requested but CUDA is not available: training in float32 on the CPU")
    if has_valid:
        kwargs.update(eval_strategy="steps", save_strategy="steps", load_best_model_at_end=True)
        kwargs.setdefault("metric_for_best_model", "eval_loss")
        if kwargs["metric_for_best_model"] in ("eval_loss", "loss"):
            kwargs.setdefault("greater_is_better", False)
        # load_best_model_at_end needs save_steps to be a multiple of eval_steps
        if kwargs.get("save_steps") and kwargs.get("eval_steps") and kwargs["save_steps"] % kwargs["eval_steps"]:
            raise ConfigError(f"save_steps {kwargs['save_steps']} is not a multiple of eval_steps {kwargs['eval_steps']}",
                              fix="choose save_steps as a multiple of eval_steps (the paper: 50 and 10)")
    else:
        kwargs.update(eval_strategy="no", save_strategy="steps", load_best_model_at_end=False)
        kwargs.pop("metric_for_best_model", None)
        if recipe.get("stop_at_epoch"):
            notes.append(f"no validation set: early stopping is off; training stops at epoch "
                         f"{float(recipe['stop_at_epoch']):g} of the recipe's schedule (the folds' median best epoch)")
        elif recipe.get("early_stopping_patience"):
            notes.append("no validation set: early stopping is off, training runs the full schedule")
    kwargs.update(output_dir=str(out_dir), use_cpu=not cuda, report_to="none", remove_unused_columns=False,
                  label_names=["labels"])
    return TrainingArguments(**kwargs), notes


def augmented_copies(waveforms: np.ndarray, copies: int, *, noise_snr_db=(30.0, 50.0), gain_db: float = 6.0,
                     seed: int = 0, max_hz: float | None = None, sample_rate: int | None = None) -> np.ndarray:
    """``copies`` altered versions of each clip: a random gain of up to +-``gain_db`` dB and white noise at
    a random SNR in ``noise_snr_db`` (dB below the clip's power). With ``max_hz`` (and the clips'
    ``sample_rate``) the noise is low-passed to that band first, so it stays inside the band a
    band-limited preset leaves (its power is still set from the SNR). ``[copies * N, S]``, float32."""
    rng = np.random.default_rng(int(seed))
    x = np.asarray(waveforms, dtype=np.float32)
    out = []
    low, high = (float(noise_snr_db[0]), float(noise_snr_db[1])) if isinstance(noise_snr_db, (list, tuple)) \
        else (float(noise_snr_db), float(noise_snr_db))
    sos = None
    if max_hz is not None and sample_rate is not None and float(max_hz) < 0.5 * float(sample_rate) * 0.98:
        from scipy.signal import butter

        sos = butter(8, float(max_hz), btype="low", fs=float(sample_rate), output="sos")
    for _ in range(int(copies)):
        power = np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True) + 1e-12
        snr = rng.uniform(low, high, size=(len(x), 1))
        noise = rng.standard_normal(x.shape)
        if sos is not None:
            from scipy.signal import sosfiltfilt

            noise = sosfiltfilt(sos, noise, axis=1)
            noise /= np.sqrt(np.mean(noise ** 2, axis=1, keepdims=True)) + 1e-12
        noise = noise * np.sqrt(power / 10.0 ** (snr / 10.0))
        gain = 10.0 ** (rng.uniform(-gain_db, gain_db, size=(len(x), 1)) / 20.0)
        out.append(((x + noise) * gain).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0,) + x.shape[1:], np.float32)


def with_noisy_copies(train, settings: dict, *, seed: int = 42):
    """The training clips plus ``copies`` noisy versions of each (recipe key ``noisy_copies``).

    Each copy gets white noise at a random SNR in ``noise_snr_db`` (low-passed to ``max_hz`` when
    given, e.g. the preset's band limit) and a random gain of up to +-``gain_db`` dB; it keeps its
    clip's label, recording and patient, so patient-level splits and aggregation are unchanged.
    Why: a model that has only seen one recording chain's noise floor can learn that floor as a
    cue, and then an inaudible change of the chain flips its decision (``bench/bench_robustness.py``);
    copies with random noise make the floor uninformative. Returns ``(clips, summary)``; a ClipSet
    already expanded (``meta["noisy_copies"]``) is returned as it is.
    """
    if train.meta.get("noisy_copies"):
        return train, dict(train.meta["noisy_copies"])
    _check_noisy_copies(settings)
    copies = int(settings.get("copies", 1))
    snr = settings.get("noise_snr_db", (15.0, 45.0))
    snr = (float(snr[0]), float(snr[-1])) if isinstance(snr, (list, tuple)) else (float(snr), float(snr))
    extra = augmented_copies(train.waveforms, copies, noise_snr_db=snr, gain_db=float(settings.get("gain_db", 0.0)),
                             seed=int(settings.get("seed", seed)), max_hz=settings.get("max_hz"),
                             sample_rate=int(train.sample_rate))
    summary = {"copies": copies, "noise_snr_db": list(snr), "gain_db": float(settings.get("gain_db", 0.0)),
               "max_hz": settings.get("max_hz"), "n_clips": int(len(train) * (copies + 1))}
    if settings.get("consistency"):
        summary["consistency"] = float(settings["consistency"])
    return train.with_copies(extra, noisy_copies=summary), summary


def distillation_set(settings: dict, train, valid=None, *, seed: int = 42, out_dir=None):
    """Teach from a teacher: ``(training clips with augmented copies, the teacher's P(asthma) per clip, summary)``.

    The teacher (``settings["teacher"]``: an experiment config path or dict, e.g. the pretrained
    encoder's ``configs/efficientat-asthma.yaml``) is trained here on ``train`` (``valid`` for its
    early stopping and threshold) and on nothing else: inside a cross-validation fold it sees that
    fold's training patients only, so the student's evaluation stays honest. It then scores the
    training clips and ``copies`` augmented versions of each (gain, low-level noise); the student
    learns from ``alpha`` x label + (1 - alpha) x teacher probability. A copy keeps its clip's
    recording and patient.
    """
    import tempfile

    from steth_hub.experiment import load_experiment
    from steth_hub.registry import get_registry

    teacher_exp = load_experiment(settings["teacher"])
    teacher = get_registry().get("classifier", teacher_exp.classifier).load().from_config(dict(teacher_exp.model))
    started = time.perf_counter()
    work = Path(out_dir) / "teacher" if out_dir is not None else Path(tempfile.mkdtemp(prefix="steth-teacher-"))
    teacher_recipe = dict(teacher_exp.recipe, seed=int(seed), disable_tqdm=True)
    teacher.fit(train, valid, teacher_recipe, work)
    copies = int(settings.get("copies", 2))
    extra = augmented_copies(train.waveforms, copies, noise_snr_db=settings.get("noise_snr_db", (30.0, 50.0)),
                             gain_db=float(settings.get("gain_db", 6.0)), seed=seed)
    augmented = train.with_copies(extra)
    soft = np.asarray(teacher.predict_proba(augmented.waveforms), dtype=np.float32)
    summary = {"teacher": teacher_exp.name, "teacher_classifier": teacher_exp.classifier, "copies": copies,
               "alpha": float(settings.get("alpha", 0.0)), "teacher_seconds": round(time.perf_counter() - started, 3),
               "n_clips": int(len(augmented))}
    return augmented, soft, summary


def fit_torch(classifier, train, valid=None, recipe: dict | None = None, out_dir: str | os.PathLike | None = None,
              *, callbacks: list | None = None, soft_targets=None) -> dict:
    """Train ``classifier`` on ``train`` (a ClipSet) with ``recipe``; checkpoints go to ``out_dir``.

    Returns a history: the Trainer's log, steps and epochs run, whether it stopped early or
    resumed, the best checkpoint, the class weights, the chosen threshold, timing and
    clips per second. The classifier holds the best (or last, without ``valid``) weights and a
    threshold at maximum Youden's J on the validation recordings (training recordings without
    ``valid``).
    """
    import tempfile

    recipe = check_recipe(recipe or {})
    if len(train) == 0:
        raise ConfigError("no training clips", fix="check the corpus and the preset")
    if len(np.unique(train.labels)) < 2:
        raise ConfigError("the training clips hold only one class", fix="train on asthma and not-asthma recordings")
    torch, FeatureDataset, LogitsModel, WeightedTrainer = _torch_parts()
    from transformers import EarlyStoppingCallback, set_seed

    seed = int(recipe["seed"])
    set_seed(seed)
    cuda = torch.cuda.is_available()
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="steth-train-")
    out_dir = Path(out_dir)
    resume = recipe.get("resume", False)
    checkpoint = _has_checkpoint(out_dir) if resume else None
    if resume is True and checkpoint is None:
        raise ConfigError("nothing to resume: no complete checkpoint-* folder", path=out_dir,
                          fix="start a fresh run (drop --resume), or point at the run's checkpoint folder")

    started = time.perf_counter()
    batch = int(recipe.get("feature_batch_size") or 64)
    _say(recipe, f"featurising {len(train)} training" + (f" and {len(valid)} validation" if valid is not None
                                                         and len(valid) else "") + " clips ...")
    train_x = featurise_clipset(classifier, train, batch)
    classifier.fit_normalisation(train_x)
    train_x = classifier.normalise(train_x)
    valid_x = classifier.normalise(featurise_clipset(classifier, valid, batch)) if valid is not None and len(valid) else None
    featurise_seconds = time.perf_counter() - started

    weights = class_weights(train.labels, recipe.get("class_weight", "balanced"))
    args, notes = training_arguments(recipe, out_dir, has_valid=valid_x is not None, cuda=cuda)
    for note in notes:
        if "CUDA" in note or "early stopping" in note:
            print(f"note: {note}")
        else:
            log.info("%s", note)
    set_seed(seed)  # the model's initial weights do not depend on how much featurising drew from the RNG
    pretrained = None
    if (recipe.get("pretrain") or {}).get("epochs") and checkpoint is None:
        _say(recipe, f"featurised in {time.perf_counter() - started:.0f} s; self-supervised pretraining for "
                     f"{recipe['pretrain']['epochs']} epoch(s) ...")
        pretrained = pretrain_statistics(classifier, train_x, recipe["pretrain"], seed=seed,
                                         batch_size=int(recipe["per_device_train_batch_size"]))
        set_seed(seed)
    net = classifier.torch_module()
    if recipe.get("encoder_lr_scale") is not None and not hasattr(classifier, "encoder_parameters"):
        raise ConfigError(f"encoder_lr_scale: classifier {classifier.plugin_name!r} does not say which parameters "
                          "are its encoder", fix="drop encoder_lr_scale, or implement encoder_parameters(net)")
    if recipe.get("freeze_encoder"):
        head = {id(p) for p in classifier.head_parameters(net)}
        for parameter in net.parameters():
            parameter.requires_grad_(id(parameter) in head)
    model = LogitsModel(classifier, net)
    cbs = list(callbacks or [])
    if recipe.get("stop_at_epoch"):
        cbs.append(_stop_at_epoch_callback(float(recipe["stop_at_epoch"])))
    if valid_x is not None and recipe.get("early_stopping_patience"):
        cbs.append(EarlyStoppingCallback(early_stopping_patience=int(recipe["early_stopping_patience"]),
                                         early_stopping_threshold=float(recipe.get("early_stopping_threshold") or 0.0)))
    consistency = float((recipe.get("noisy_copies") or {}).get("consistency") or 0.0)
    if consistency > 0:  # each clip beside its noisy copy in the batch, and a term that keeps them together
        if soft_targets is not None:
            raise ConfigError("noisy_copies.consistency cannot be combined with distill",
                              fix="drop one of them from the recipe")
        clean, noisy, labels = consistency_pairs(train, train_x)
        train_dataset = FeatureDataset(clean, labels, partner=noisy)
    else:
        train_dataset = FeatureDataset(train_x, train.labels, soft_targets)
    trainer = WeightedTrainer(
        model=model, args=args, train_dataset=train_dataset,
        eval_dataset=FeatureDataset(valid_x, valid.labels) if valid_x is not None else None,
        compute_metrics=_compute_metrics if valid_x is not None else None, callbacks=cbs,
        class_weights=weights, augment=recipe.get("augment") or {}, axes=classifier.feature_axes,
        smoothing=float(recipe.get("label_smoothing_factor") or 0.0),
        encoder_lr_scale=recipe.get("encoder_lr_scale"),
        distill_alpha=(float((recipe.get("distill") or {}).get("alpha", 0.0)) if soft_targets is not None else None),
        consistency=consistency,
    )
    _quiet_trainer_logs(trainer)  # a progress bar with the loss, not raw log dicts between bars
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - train_started
    classifier.set_trained_module(model.net)
    for parameter in model.net.parameters():
        parameter.requires_grad_(True)

    state = trainer.state
    max_steps = state.max_steps
    stopped_early = bool(valid_x is not None and state.global_step < max_steps)
    history: dict[str, Any] = {
        "log_history": state.log_history,
        "global_step": int(state.global_step),
        "max_steps": int(max_steps),
        "epochs": float(state.epoch or 0.0),
        "best_checkpoint": state.best_model_checkpoint,
        "best_metric": state.best_metric,
        "stopped_early": stopped_early,
        "resumed_from": checkpoint,
        "class_weights": weights.tolist(),
        "n_train_clips": int(len(train)),
        "n_valid_clips": int(len(valid)) if valid is not None else 0,
        "train_loss": float(result.training_loss),
        "train_seconds": round(train_seconds, 3),
        "featurise_seconds": round(featurise_seconds, 3),
        "clips_per_second": round(float(result.metrics.get("train_samples_per_second") or 0.0), 3),
        "device": "cuda" if cuda else "cpu",
        "notes": notes,
        "seed": seed,
        "pretrain": pretrained,
    }
    if recipe.get("threshold", "youden") == "youden":
        choose_threshold(classifier, train, valid if valid_x is not None else None, history)
    return history


def choose_threshold(classifier, train, valid, history: dict) -> None:
    """The decision threshold: Youden's J on the validation recordings, else on the training ones
    (probabilities as a saved model will see them); recorded in ``history``."""
    from steth_hub.metrics import recording_threshold

    ref = valid if valid is not None and len(valid) else train
    probs = classifier.predict_proba(ref.waveforms)
    classifier.threshold = recording_threshold(ref.labels, probs, ref.recording_ids)
    history["threshold"] = classifier.threshold
    history["threshold_from"] = "validation recordings" if ref is valid else "training recordings"


def training_facts(train, history: dict) -> dict:
    """What a model records about the clips it was fitted on (for its card), from the ClipSet and the history."""
    return {
        "n_clips": int(len(train)),
        "clips_by_label": {"not_asthma": int((train.labels == 0).sum()), "asthma": int((train.labels == 1).sum())},
        "n_recordings": int(len(np.unique(train.recording_ids))),
        "n_patients": int(len(np.unique(train.patient_ids))),
        "global_step": history.get("global_step", 0),
        "epochs": history.get("epochs", 0.0),
        "stopped_early": history.get("stopped_early", False),
        "seed": history.get("seed"),
    }
