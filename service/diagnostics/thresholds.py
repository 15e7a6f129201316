"""The thresholds of the diagnostics, and the rules of thumb behind them.

* The ratio of the first to the last weight tensor's gradient norm: a healthy network keeps
  it within a few orders of magnitude of 1; below 1e-3 the early layers barely learn
  (vanishing gradients, typical of deep sigmoid/tanh stacks without normalisation); above 1e3
  the gradients grow towards the input (exploding).
* The update-to-weight ratio ``lr_eff * |grad| / |weight|`` (how far one SGD step moves a
  tensor, relative to its size): about 1e-3 is healthy, below 1e-5 the learning rate is far too
  small, above 1e-1 far too high. ``lr_eff = lr / (1 - momentum)`` for SGD; for adaptive
  optimizers (Adam, AdamW, RMSprop) the step does not scale with the gradient, so the ratio is
  reported but not judged.
* Accuracy near chance (below 1.5x ``1 / num_classes``) after a segment means the network is
  not learning at all.
"""

from __future__ import annotations

#: epochs at the end of a segment that trends and plateaus are judged on
DEFAULT_WINDOW = 5

VANISHING_RATIO = 1e-3
EXPLODING_RATIO = 1e3
#: a total gradient norm above this (mean-reduced cross-entropy) is an explosion, not noise
EXPLODING_NORM = 1e3
#: a weight tensor whose gradient is this small relative to the total receives no signal
DEAD_RELATIVE = 1e-10
DEAD_ABSOLUTE = 1e-12
UPDATE_RATIO_LOW = 1e-5
UPDATE_RATIO_HIGH = 1e-1
UPDATE_RATIO_HEALTHY = 1e-3
#: largest step of an epoch over its mean, and epoch-to-epoch growth of the mean
SPIKE_RATIO = 5.0
JUMP_RATIO = 10.0
NEAR_CHANCE_FACTOR = 1.5
PLATEAU_LOSS = 0.01  # relative improvement of the validation loss below this: no progress
PLATEAU_ACCURACY = 0.005  # validation accuracy gain below this: no progress
OVERFIT_GAP = 0.1
OVERFIT_LOSS_RISE = 0.1

ADAPTIVE_OPTIMIZERS = frozenset({"adam", "adamw", "rmsprop"})
