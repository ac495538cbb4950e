"""Meta-learning: N-way K-shot episodes and second-order MAML (AReLU paper, Sec. 4.5, Table 3).

Quick use::

    from attnact.meta import MAMLSettings, fit_maml
    from attnact.train.config import TrainConfig
    fit_maml(TrainConfig(model="mnist_conv", act="arelu", dataset="mnist", lr=0.005,
                         maml=MAMLSettings(ways=5, shots=1), out_dir="runs/maml-arelu"))

A run store trains it with ``fit="attnact.meta:fit_maml"``.
"""

from attnact.meta.maml import (
    BATCHING,
    METRIC_COLUMNS,
    EvalResult,
    MAMLSettings,
    adapt,
    evaluate_tasks,
    fit_maml,
    meta_gradient,
    meta_step,
    model_params,
)
from attnact.meta.tasks import TaskBatch, TaskSampler

__all__ = [
    "BATCHING",
    "METRIC_COLUMNS",
    "EvalResult",
    "MAMLSettings",
    "TaskBatch",
    "TaskSampler",
    "adapt",
    "evaluate_tasks",
    "fit_maml",
    "meta_gradient",
    "meta_step",
    "model_params",
]
