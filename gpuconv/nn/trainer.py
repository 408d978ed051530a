"""A small trainer: ``fit`` -> ``fit_epoch`` -> ``prepare_batch``, after d2l.

Data is any re-iterable of ``(inputs, targets)`` batches; :class:`ArrayLoader`
makes one from two arrays.  The trainer moves each batch to its backend
(``prepare_batch``), runs forward, loss, backward and the optimizer step, shows
a progress bar when tqdm is installed, evaluates on validation data after each
epoch and records a :class:`History`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..backend import backend_for, set_backend
from ._module import Module

__all__ = ["ArrayLoader", "History", "Trainer"]


class ArrayLoader:
    """Mini-batches of ``(x[i], y[i])`` from two arrays, reshuffled every pass.

    Parameters
    ----------
    x, y : array
        Same length along the first axis.
    batch_size : int
        Rows per batch; the last batch may be smaller.
    shuffle : bool, optional
        Draw a new permutation on each iteration (default ``False``).
    seed : int or numpy.random.Generator, optional
        Seeds the shuffling.

    Raises
    ------
    TypeError
        If ``batch_size`` is not an int.
    ValueError
        If ``x`` and ``y`` differ in length or ``batch_size`` is below 1.

    See Also
    --------
    Trainer.fit : takes a loader as its data.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv.nn import ArrayLoader
    >>> loader = ArrayLoader(np.arange(10), np.arange(10) % 2, batch_size=4)
    >>> len(loader), [xb.tolist() for xb, _ in loader]
    (3, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
    """

    def __init__(self, x: Any, y: Any, batch_size: int, *, shuffle: bool = False,
                 seed: Any = None) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"batch_size must be an int; got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        n = len(self.x)
        order = self._rng.permutation(n) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                index: Any = slice(start, start + self.batch_size)
            else:
                index = order[start:start + self.batch_size]
            yield self.x[index], self.y[index]


@dataclass
class History:
    """What :meth:`Trainer.fit` measured, one entry per epoch.

    Attributes
    ----------
    train_loss : list of float
        Mean training loss of each epoch.
    val_loss : list of float
        Validation loss per sample after each epoch; empty without
        validation data.
    val_accuracy : list of float
        Validation accuracy after each epoch, when the targets are class
        labels; else empty.
    epoch_seconds : list of float
        Wall-clock time of each epoch.
    batch_loss : list of float
        The loss of every training batch, in order.

    See Also
    --------
    Trainer.fit : fills it in.

    Examples
    --------
    >>> from gpuconv.nn import History
    >>> h = History(train_loss=[0.9, 0.5])
    >>> h.epochs, h.val_loss
    (2, [])
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.train_loss)


# A callback receives the trainer, the epoch number (from 0) and that epoch's
# numbers; returning True stops training after this epoch.
Callback = Callable[["Trainer", int, dict], Any]


class Trainer:
    """Fit a :class:`~gpuconv.nn.Module` with a loss and an optimizer.

    Parameters
    ----------
    backend : str, optional
        Where to train: the model's parameters and every batch are moved
        there and the ops compute there.  ``"auto"`` follows the model (its
        parameters' library); ``None`` follows :func:`gpuconv.set_backend`
        (the model, under its default ``"auto"``).
    progress : bool, optional
        Show a tqdm progress bar with the running loss (default ``True``);
        silently no bar when tqdm is not installed.
    callbacks : sequence of callable, optional
        Each called as ``callback(trainer, epoch, logs)`` after every epoch,
        with ``logs`` holding ``train_loss`` and, with validation data,
        ``val_loss`` and ``val_accuracy``.  A callback returning ``True``
        stops training.

    Raises
    ------
    TypeError
        If a callback is not callable.

    See Also
    --------
    ArrayLoader : batches from two arrays.
    History : what :meth:`fit` returns.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuconv import nn
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((64, 2)).astype(np.float32)
    >>> y = (x[:, 0] > x[:, 1]).astype(np.int64)
    >>> model = nn.Linear(2, 2, seed=0)
    >>> history = nn.Trainer(progress=False).fit(
    ...     model, nn.ArrayLoader(x, y, 16, shuffle=True, seed=0), nn.cross_entropy,
    ...     nn.SGD(model.parameters(), lr=0.5), epochs=20, val_data=nn.ArrayLoader(x, y, 64))
    >>> history.epochs, history.train_loss[-1] < history.train_loss[0]
    (20, True)
    >>> history.val_accuracy[-1] > 0.9
    True
    """

    def __init__(self, *, backend: str | None = None, progress: bool = True,
                 callbacks: Iterable[Callback] = ()) -> None:
        self.backend_name = backend
        self.progress = bool(progress)
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks must be callables; got {type(cb).__name__}")
        self.stop_training = False
        self.model: Module | None = None
        self.history = History()

    # -- hooks (override to customise) --------------------------------------
    def prepare_batch(self, batch: Any) -> tuple[Any, ...]:
        """Move one batch (a tuple of arrays) to the trainer's backend."""
        if not isinstance(batch, (tuple, list)):
            raise TypeError(f"data must yield (inputs, targets) pairs; got a "
                            f"{type(batch).__name__}")
        return tuple(self._backend.asarray(a) for a in batch)

    def training_step(self, batch: tuple[Any, ...]) -> float:
        """Forward, loss, backward and an optimizer step; returns the batch loss."""
        x, y = batch
        self.model.zero_grad()
        value, grad = self.loss(self.model(x), y)
        self.model.backward(grad)
        self.optimizer.step()
        return value

    def validation_step(self, batch: tuple[Any, ...]) -> tuple[float, int, int]:
        """Loss (summed over the batch), correct predictions and batch size."""
        x, y = batch
        out = self.model(x)
        value, _ = self.loss(out, y)
        n = int(out.shape[0])
        correct = -1
        if out.ndim == 2 and y.ndim == 1 and np.dtype(y.dtype).kind in "iu":
            correct = int((out.argmax(axis=1) == y).sum())
        return value * n, correct, n

    # -- the loop ------------------------------------------------------------
    def fit(self, model: Module, data: Iterable[Any], loss: Callable[[Any, Any], Any],
            optimizer: Any, epochs: int, *, val_data: Iterable[Any] | None = None) -> History:
        """Train ``model`` for ``epochs`` passes over ``data``.

        Parameters
        ----------
        model : Module
        data : iterable of (inputs, targets)
            Iterated once per epoch (an :class:`ArrayLoader`, a list of
            batches, ...).
        loss : callable
            ``loss(prediction, targets) -> (value, grad)``, e.g.
            :func:`~gpuconv.nn.cross_entropy`.
        optimizer
            An object with ``step()``, e.g. :class:`~gpuconv.nn.SGD` over
            ``model.parameters()``.
        epochs : int
            Number of passes, >= 0.
        val_data : iterable of (inputs, targets), optional
            Evaluated after each epoch (loss per sample, and accuracy for labels).

        Returns
        -------
        History
        """
        if not isinstance(model, Module):
            raise TypeError(f"model must be a gpuconv.nn.Module; got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"loss must be callable; got {type(loss).__name__}")
        if not callable(getattr(optimizer, "step", None)):
            raise TypeError(f"optimizer must have a step() method; got "
                            f"{type(optimizer).__name__}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
            raise TypeError(f"epochs must be an int; got {epochs!r}")
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0; got {epochs}")
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.data, self.val_data = data, val_data
        self.history = History()
        self.stop_training = False
        self._backend = self._resolve_backend(model)
        chosen = (set_backend(self.backend_name) if self.backend_name is not None
                  else contextlib.nullcontext())
        with chosen:
            if self.backend_name is not None:
                model.to(self.backend_name)
            self._bar = self._make_bar(epochs)
            try:
                for self.epoch in range(epochs):
                    logs = self.fit_epoch()
                    stop = [bool(cb(self, self.epoch, logs)) for cb in self.callbacks]
                    if any(stop) or self.stop_training:
                        break
            finally:
                if self._bar is not None:
                    self._bar.close()
        return self.history

    def fit_epoch(self) -> dict[str, float]:
        """One pass over the training data and, if given, the validation data."""
        start = time.perf_counter()
        self.model.train()
        total, count = 0.0, 0
        for batch in self.data:
            value = self.training_step(self.prepare_batch(batch))
            self.history.batch_loss.append(value)
            total += value
            count += 1
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix(epoch=self.epoch, loss=f"{value:.4f}", refresh=False)
        logs = {"train_loss": total / max(count, 1)}
        self.history.train_loss.append(logs["train_loss"])
        if self.val_data is not None:
            logs.update(self.evaluate(self.val_data))
            self.history.val_loss.append(logs["val_loss"])
            if "val_accuracy" in logs:
                self.history.val_accuracy.append(logs["val_accuracy"])
        self.history.epoch_seconds.append(time.perf_counter() - start)
        return logs

    def evaluate(self, data: Iterable[Any]) -> dict[str, float]:
        """Mean loss per sample over ``data`` and, for class labels, the accuracy."""
        self.model.eval()
        loss_sum, correct, n, labelled = 0.0, 0, 0, True
        try:
            for batch in data:
                value, right, size = self.validation_step(self.prepare_batch(batch))
                loss_sum += value
                n += size
                if right < 0:
                    labelled = False
                else:
                    correct += right
        finally:
            self.model.train()
        logs = {"val_loss": loss_sum / max(n, 1)}
        if labelled and n:
            logs["val_accuracy"] = correct / n
        return logs

    def _resolve_backend(self, model: Module) -> Any:
        # Under "auto" (chosen here or in the context) batches follow the
        # model: a model on the GPU gets GPU batches, not the NumPy default.
        params = model.parameters()
        return backend_for(self.backend_name, parameter=params[0].data if params else None)

    def log(self, line: str) -> None:
        """Print ``line`` without breaking the progress bar."""
        if getattr(self, "_bar", None) is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def _make_bar(self, epochs: int) -> Any:
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        try:
            total = epochs * len(self.data)  # type: ignore[arg-type]
        except TypeError:
            total = None
        return tqdm(total=total, unit="batch", leave=False)
