"""The two-path training schedule of the random 2.5D U-Net, as a library function (:func:`train`).

- **Path 1** (:func:`~vol25d.train.paths.path1`) draws ``p`` of the ``m`` directions per step and trains U, F
  (and T unless frozen) end to end on the 3-D Dice, optionally plus a Dice of U's views against the label's
  own MIPs (deep supervision).
- **Path 2** (:func:`~vol25d.train.paths.path2`) starts from a path-1 checkpoint, freezes U, computes its
  views of every volume once (all ``m`` directions) and trains F and T on them.

Both run through one loop (:func:`~vol25d.train.loop.fit`) that validates on held-out cases with all ``m``
directions and writes the run folder (:class:`~vol25d.checkpoint.RunFolder`): ``pathN.pt`` (best validation
Dice), ``pathN_last.pt`` (for ``resume``), ``pathN_metrics.csv``, ``config.yaml``, ``progress.png`` (the
curves of both paths, :mod:`vol25d.train.curves`), TensorBoard events under ``tb/``.

Under ``torchrun`` (several processes, one GPU each; :mod:`vol25d.distributed`) every optimiser step
averages the gradients of one volume per process (DistributedDataParallel); rank 0 alone validates, logs
and writes the run folder, whose files are the same as a single process writes.

Modules: :mod:`~vol25d.train.config` (what a path produced; the settings and their rules are
:mod:`vol25d.settings`, which ``train`` applies first), :mod:`~vol25d.train.objective` (loss, schedule),
:mod:`~vol25d.train.start` (where a path's model starts), :mod:`~vol25d.train.paths` (the two paths),
:mod:`~vol25d.train.loop` (the loop), :mod:`~vol25d.train.session` (both paths under a time limit, resumed
when called again).
"""

from vol25d.train.config import DEFAULT_EPOCHS, FINE_TUNE_LR, FINE_TUNE_MODEL_SETTINGS, TrainConfig, TrainResult
from vol25d.train.loop import fit, train
from vol25d.train.objective import Objective, lr_schedule, warmup_cosine
from vol25d.train.session import BothPaths, train_both_paths

__all__ = ["TrainConfig", "TrainResult", "train", "fit", "train_both_paths", "BothPaths", "Objective", "lr_schedule",
           "warmup_cosine", "DEFAULT_EPOCHS", "FINE_TUNE_LR", "FINE_TUNE_MODEL_SETTINGS"]
