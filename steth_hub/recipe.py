"""A training recipe: its keys, defaults and checks, before any work starts.

A recipe (the ``recipe:`` block of an experiment config in ``configs/``) holds
``transformers.TrainingArguments`` names where one exists, plus the keys in :data:`EXTRA_KEYS`.
:func:`check_recipe_values` type- and range-checks its numbers without importing transformers
(every command runs it when it loads a config); :func:`check_recipe` adds the key checks when
training starts (:mod:`steth_hub.train`). An unknown key is a :class:`~steth_hub.errors.ConfigError`,
so a typo never silently trains with a default.
"""

from __future__ import annotations

import dataclasses

from steth_hub.errors import ConfigError


#: recipe keys that are not TrainingArguments fields
EXTRA_KEYS = {
    "warmup_ratio",             # the paper's "warmup 0.25"; used only when warmup_steps is absent
    "early_stopping_patience",  # evaluations without improvement before stopping (needs a validation set)
    "early_stopping_threshold",
    "class_weight",             # "balanced" (default), "none", or [w_not_asthma, w_asthma]
    "augment",                  # {time_mask, freq_mask, time_masks, freq_masks, time_shift, gain_db, mixup_alpha}
    "resume",                   # true: continue from the last checkpoint in out_dir; "auto": if one exists
    "feature_batch_size",       # clips featurised at once
    "threshold",                # "youden" (default): Youden's J on validation (else training) recordings
    "stop_at_epoch",            # stop here while the schedule still spans num_train_epochs (a CV fold's best epoch)
    "pretrain",                 # {epochs, learning_rate, weight_decay}: self-supervised warm start (see pretrain_statistics)
    "freeze_encoder",           # true: the Trainer trains the classification head only (after pretrain)
    "encoder_lr_scale",         # the encoder's learning rate = this x learning_rate (needs encoder_parameters)
    "distill",                  # {teacher: experiment config, alpha, copies, noise_snr_db, gain_db}: see distillation_set
    "noisy_copies",             # {copies, noise_snr_db: [lo, hi], gain_db, max_hz, consistency}: see with_noisy_copies
}


PRETRAIN_KEYS = {"epochs", "learning_rate", "weight_decay", "batch_size"}


DISTILL_KEYS = {"teacher", "alpha", "copies", "noise_snr_db", "gain_db"}


NOISY_COPIES_KEYS = {"copies", "noise_snr_db", "gain_db", "max_hz", "seed", "consistency"}


#: TrainingArguments we set ourselves; a recipe may not override them
MANAGED_KEYS = {"output_dir", "use_cpu", "report_to", "remove_unused_columns", "label_names",
                "load_best_model_at_end", "save_strategy", "eval_strategy"}


AUGMENT_KEYS = {"time_mask", "freq_mask", "time_masks", "freq_masks", "time_shift", "shift_mode", "gain_db",
                "mixup_alpha"}


#: how ``time_shift`` moves a clip: "roll" wraps it around (a discontinuity inside the clip);
#: "pad" slides it and fills the gap with 0, the normalised average spectrum (no wrap seam)
SHIFT_MODES = ("roll", "pad")


#: what the recipe means when it names a strategy by its step count
DEFAULTS = {
    "num_train_epochs": 25,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "learning_rate": 8e-5,
    "weight_decay": 0.03,
    "logging_steps": 1,
    "eval_steps": 10,
    "save_steps": 50,
    "gradient_accumulation_steps": 4,
    "max_grad_norm": 1.0,
    "lr_scheduler_type": "cosine",
    "seed": 42,
    "save_total_limit": 2,
    "dataloader_num_workers": 0,
}


def training_argument_names() -> set[str]:
    """The field names of ``transformers.TrainingArguments`` in the installed version."""
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def check_recipe(recipe: dict, *, source: str | None = None) -> dict:
    """Validate a recipe's keys and values; returns a copy with the defaults filled in.

    Raises :class:`ConfigError` naming every unknown key (and the closest known name).
    """
    import difflib

    if recipe is None:
        recipe = {}
    if not isinstance(recipe, dict):
        raise ConfigError("the training recipe must be a mapping", path=source,
                          fix="write the recipe as 'key: value' lines under 'recipe:'")
    known = training_argument_names() | EXTRA_KEYS
    problems = []
    for key in recipe:
        if key in MANAGED_KEYS:
            problems.append(f"{key!r} is set by steth-hub")
        elif key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            problems.append(f"unknown recipe key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if problems:
        raise ConfigError("; ".join(problems), path=source,
                          fix="use TrainingArguments names or: " + ", ".join(sorted(EXTRA_KEYS)))
    augment = recipe.get("augment") or {}
    if not isinstance(augment, dict):
        raise ConfigError("'augment' must be a mapping", path=source, fix="e.g. augment: {time_mask: 20}")
    bad = sorted(set(augment) - AUGMENT_KEYS)
    if bad:
        raise ConfigError(f"unknown augment key(s): {', '.join(bad)}", path=source,
                          fix="use: " + ", ".join(sorted(AUGMENT_KEYS)))
    if augment.get("shift_mode", "roll") not in SHIFT_MODES:
        raise ConfigError(f"augment shift_mode {augment['shift_mode']!r} is not one of {', '.join(SHIFT_MODES)}",
                          path=source, fix="use shift_mode: pad (no wrap-around seam) or roll")
    distill = recipe.get("distill")
    if distill is not None and (not isinstance(distill, dict) or set(distill) - DISTILL_KEYS
                                or not isinstance(distill.get("teacher"), (str, dict))
                                or not 0.0 <= float(distill.get("alpha", 0.0)) <= 1.0):
        raise ConfigError(f"bad 'distill' setting {distill!r}", path=source,
                          fix="use distill: {teacher: configs/efficientat-asthma.yaml} (optional: alpha in [0, 1], "
                              "copies, noise_snr_db, gain_db)")
    noisy = recipe.get("noisy_copies")
    if noisy is not None:
        _check_noisy_copies(noisy, source)
        if noisy.get("consistency") and distill is not None:
            raise ConfigError("noisy_copies.consistency cannot be combined with distill", path=source,
                              fix="drop one of them from the recipe")
    pretrain = recipe.get("pretrain") or {}
    if not isinstance(pretrain, dict) or set(pretrain) - PRETRAIN_KEYS:
        raise ConfigError(f"bad 'pretrain' setting {pretrain!r}", path=source,
                          fix="use pretrain: {epochs: N} (optional: " + ", ".join(sorted(PRETRAIN_KEYS - {'epochs'})) + ")")
    class_weight = recipe.get("class_weight", "balanced")
    if not (class_weight in ("balanced", "none", None)
            or (isinstance(class_weight, (list, tuple)) and len(class_weight) == 2)):
        raise ConfigError(f"class_weight {class_weight!r} is not 'balanced', 'none' or two numbers", path=source,
                          fix="use class_weight: balanced")
    if isinstance(class_weight, (list, tuple)):
        _check_values({"class_weight": list(class_weight)}, {"class_weight": ("float", 0.0, None, False)}, source,
                      where="")
    recipe = dict(recipe)
    recipe.update(_check_values(recipe, VALUE_RULES, source, where=""))
    if augment:
        recipe["augment"] = dict(augment, **_check_values(augment, AUGMENT_RULES, source, where="augment."))
    if pretrain:
        recipe["pretrain"] = dict(pretrain, **_check_values(pretrain, PRETRAIN_RULES, source, where="pretrain."))
    out = dict(DEFAULTS)
    out.update(recipe)
    return out


#: (type, minimum, maximum, minimum excluded) of the numeric recipe values; checked before any work starts
VALUE_RULES = {
    "learning_rate": ("float", 0.0, None, True),
    "num_train_epochs": ("float", 0.0, None, True),
    "max_steps": ("int", -1, None, False),
    "per_device_train_batch_size": ("int", 1, None, False),
    "per_device_eval_batch_size": ("int", 1, None, False),
    "gradient_accumulation_steps": ("int", 1, None, False),
    "weight_decay": ("float", 0.0, None, False),
    "max_grad_norm": ("float", 0.0, None, False),
    "warmup_ratio": ("float", 0.0, 1.0, False),
    "warmup_steps": ("float", 0.0, None, False),
    "logging_steps": ("float", 0.0, None, True),
    "eval_steps": ("float", 0.0, None, True),
    "save_steps": ("float", 0.0, None, True),
    "save_total_limit": ("int", 1, None, False),
    "seed": ("int", 0, None, False),
    "dataloader_num_workers": ("int", 0, None, False),
    "label_smoothing_factor": ("float", 0.0, 1.0, False),
    "early_stopping_patience": ("int", 1, None, False),
    "early_stopping_threshold": ("float", 0.0, None, False),
    "feature_batch_size": ("int", 1, None, False),
    "stop_at_epoch": ("float", 0.0, None, True),
    "encoder_lr_scale": ("float", 0.0, None, False),
    "adam_beta1": ("float", 0.0, 1.0, False),
    "adam_beta2": ("float", 0.0, 1.0, False),
    "adam_epsilon": ("float", 0.0, None, True),
}


PRETRAIN_RULES = {"epochs": ("float", 0.0, None, False), "learning_rate": ("float", 0.0, None, True),
                  "weight_decay": ("float", 0.0, None, False), "batch_size": ("int", 1, None, False)}


AUGMENT_RULES = {"time_mask": ("int", 0, None, False), "freq_mask": ("int", 0, None, False),
                 "time_masks": ("int", 0, None, False), "freq_masks": ("int", 0, None, False),
                 "time_shift": ("float", 0.0, 1.0, False), "gain_db": ("float", 0.0, None, False),
                 "mixup_alpha": ("float", 0.0, None, False)}


def check_recipe_values(recipe, *, source=None) -> None:
    """Type- and range-check a recipe's numeric values only (no transformers import): what
    :func:`steth_hub.experiment.load_experiment` runs, so every command refuses ``learning_rate: fast``
    before any work (``check_recipe`` adds the key checks when training starts)."""
    if not isinstance(recipe, dict):
        return
    _check_values(recipe, VALUE_RULES, source, where="")
    for key, rules in (("augment", AUGMENT_RULES), ("pretrain", PRETRAIN_RULES)):
        if isinstance(recipe.get(key), dict):
            _check_values(recipe[key], rules, source, where=f"{key}.")
    if isinstance(recipe.get("class_weight"), (list, tuple)):
        _check_values({"class_weight": list(recipe["class_weight"])}, {"class_weight": ("float", 0.0, None, False)},
                      source, where="")


def _check_values(values: dict, rules: dict, source, *, where: str) -> dict:
    """Type- and range-check the numeric values named in ``rules``; returns those values converted.

    A number written as a string that YAML did not parse (``"1e-4"``) is accepted and converted;
    ``"fast"``, a boolean, a negative batch size or NaN is a :class:`ConfigError` naming the key.
    """
    import math

    out, problems = {}, []
    for key, (kind, low, high, open_low) in rules.items():
        if key not in values or values[key] is None:
            continue
        raw = values[key]
        items = raw if isinstance(raw, list) else [raw]
        converted = []
        for value in items:
            number = None
            if isinstance(value, bool):
                number = None
            elif isinstance(value, (int, float)):
                number = value
            elif isinstance(value, str):
                try:
                    number = float(value.strip())
                except ValueError:
                    number = None
            if number is None or not math.isfinite(float(number)):
                problems.append(f"{where}{key}: {value!r} is not a {'whole ' if kind == 'int' else ''}number")
                break
            if kind == "int":
                if float(number) != int(float(number)):
                    problems.append(f"{where}{key}: {value!r} is not a whole number")
                    break
                number = int(float(number))
            else:
                number = float(number) if isinstance(number, str) else number
            if (number < low or (open_low and number == low)) or (high is not None and number > high):
                bound = f"{'above' if open_low else 'at least'} {low}" + (f" and at most {high}" if high is not None else "")
                problems.append(f"{where}{key}: {value!r} must be {bound}")
                break
            converted.append(number)
        else:
            out[key] = converted if isinstance(raw, list) else converted[0]
    if problems:
        raise ConfigError("bad recipe value(s): " + "; ".join(problems), path=source,
                          fix="write numbers (e.g. learning_rate: 8.0e-5, num_train_epochs: 10, "
                              "per_device_train_batch_size: 16)")
    return out


def _check_noisy_copies(settings, source=None) -> None:
    """Refuse a bad ``noisy_copies`` setting before any work, naming the key and the fix."""
    fix = "use noisy_copies: {copies: 1, noise_snr_db: [15, 45]} (optional: gain_db, max_hz, seed, consistency)"
    if not isinstance(settings, dict) or set(settings) - NOISY_COPIES_KEYS:
        raise ConfigError(f"bad 'noisy_copies' setting {settings!r}", path=source, fix=fix)
    checked = _check_values({k: v for k, v in settings.items() if k != "noise_snr_db"},
                            {"copies": ("int", 1, 16, False), "gain_db": ("float", 0.0, 24.0, False),
                             "max_hz": ("float", 0.0, None, True), "seed": ("int", 0, None, False),
                             "consistency": ("float", 0.0, 100.0, False)},
                            source, where="noisy_copies.")
    snr = settings.get("noise_snr_db", (15.0, 45.0))
    snr = list(snr) if isinstance(snr, (list, tuple)) else [snr, snr]
    try:
        low, high = float(snr[0]), float(snr[-1])
    except (TypeError, ValueError):
        low = high = float("nan")
    if len(snr) not in (1, 2) or not (0.0 <= low <= high <= 120.0):
        raise ConfigError(f"noisy_copies.noise_snr_db {settings.get('noise_snr_db')!r} is not [low, high] dB "
                          "with 0 <= low <= high <= 120", path=source, fix=fix)
    del checked
