"""Training the two-tower retrieval model of :mod:`tfos_lib.recsys.models` with early stopping, on tfos_lib workers.

* :func:`inputs` (driver) plans the Spark inputs: training examples ``(history,
  item, weight)`` for the training period and for it minus its validation split,
  and the validation visitors' items, held-out items and histories.
* :func:`train` (every worker) chooses the number of epochs by early stopping on the
  validation split, then refits on the whole training period; the chief saves the
  scorer's arrays and exports the scoring model (TF Serving layout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tfos_lib.context import WorkerContext
from tfos_lib.export.saved_model import export_saved_model
from tfos_lib.recsys import models, prepare, training

__all__ = ["Settings", "inputs", "train"]


@dataclass(frozen=True)
class Settings:
    """What :func:`train` needs (driver -> workers)."""

    num_items: int
    factors: int
    history_length: int
    learning_rate: float
    regularization: float
    optimizer: str
    batch_size: int  # global, positives (each batch's items are its negatives)
    max_epochs: int
    patience: int
    k: int
    seed: int
    checkpoint_every_steps: int | None = None


def inputs(data: dict, validation: dict, history_length: int, pad: int, recency_half_life_days: float) -> dict:
    """The named inputs :func:`train` reads, from two :func:`tfos_lib.recsys.prepare.split_pairs` results.

    ``data`` splits all interactions (its training part is what the model is refit
    on), ``validation`` splits ``data``'s training part (what early stopping scores)."""
    from tfos_lib.feed import Input

    weighted = {name: prepare.with_history(prepare.recency_weight(split["train_pairs"], recency_half_life_days),
                                           history_length, pad).select("history", "item", "weight")
                for name, split in (("inner", validation), ("train", data))}
    inner_pairs = validation["train_pairs"].join(validation["eval_visitors"], "visitor")
    return {
        "retrieval_inner": weighted["inner"],
        "retrieval_train": weighted["train"],
        "validation_seen": Input(inner_pairs.select("visitor", "item"), shard=False),
        "validation_held": Input(validation["held_out"], shard=False),
        "validation_history": Input(prepare.visitor_histories(inner_pairs, history_length, pad), shard=False),
    }


def train(ctx: WorkerContext, cfg: Settings, inner_counts: np.ndarray, train_counts: np.ndarray,
          history: dict) -> dict | None:
    """The retrieval model: epochs chosen by early stopping on the validation split, then refit on all training.

    Run 1 trains on the training period minus each visitor's latest items and scores
    validation NDCG@k after every epoch (the same figure on every worker, so all stop
    together); run 2 trains fresh on the whole training period for run 1's best
    number of epochs. The chief saves the factors (``factors/retrieval.npz``) and
    exports the scoring model (``models/retrieval``); ``history`` gets each run's
    losses. ``inner_counts`` / ``train_counts``: positives per item in the two
    periods (the logQ correction). Returns the chief's figures (None elsewhere).
    """

    def build(counts):
        log_q = models.item_log_q(counts)
        return lambda: models.build_retrieval_model(cfg.num_items, cfg.factors, log_q, cfg.history_length,
                                                    cfg.learning_rate, cfg.regularization, cfg.optimizer)

    def vectors(model):
        arrays = models.scorer_arrays("retrieval", model, cfg.factors)
        return models.history_vectors(arrays["context_vectors"], histories), arrays["item_vectors"]

    def fit(name, input_name, counts, epochs, callbacks=None):
        dataset = training.retrieval_dataset(ctx, input_name, cfg.batch_size, cfg.seed)
        losses, local, seconds = training.fit_replicated(
            ctx, build(counts), dataset, name=name, epochs=epochs, steps=ctx.data(input_name).steps_per_epoch(cfg.batch_size),
            global_batch_size=cfg.batch_size, checkpoint_every_steps=cfg.checkpoint_every_steps, seed=cfg.seed,
            extra_callbacks=callbacks)
        history[name] = losses
        return local, seconds

    seen, held = ctx.data("validation_seen"), ctx.data("validation_held")
    check = training.ValidationRanking((seen.column("visitor"), seen.column("item")),
                                       (held.column("visitor"), held.column("item")),
                                       inner_counts > 0, cfg.k, cfg.patience)
    known = ctx.data("validation_history")
    order = np.argsort(known.column("visitor"))
    histories = known.column("history")[order][np.searchsorted(known.column("visitor")[order], check.visitors)]
    validation_seconds = 0.0
    if len(check.visitors):
        _, validation_seconds = fit("retrieval_validation", "retrieval_inner", inner_counts, cfg.max_epochs,
                                    lambda model: [check.callback(model, vectors)])
    epochs = check.best_epoch or cfg.max_epochs
    local, seconds = fit("ranking_retrieval", "retrieval_train", train_counts, epochs)
    if local is None:
        return None
    np.savez(os.path.join(ctx.output_dir, "factors", "retrieval.npz"),
             **models.scorer_arrays("retrieval", local, cfg.factors))
    export_saved_model(models.retrieval_scoring_model(local, cfg.history_length), os.path.join(ctx.output_dir, "models"),
                       "retrieval")
    positives = ctx.data("retrieval_train").num_rows * ctx.num_workers
    return {
        "train_seconds": seconds,
        "validation_run_seconds": validation_seconds,
        "train_positives_per_second": positives * epochs / seconds,
        "epochs": epochs,
        "validation_ndcg_per_epoch": check.scores,
        "parameters": int(local.count_params()) - cfg.num_items,  # the log q weights are constants
        "factors_file": "factors/retrieval.npz",
    }
