"""The chapter's experiments, runnable on any backend.

* :func:`learn_edge_kernel`: learn the edge detector ``K = [[1, -1]]`` from the
  image it was applied to, with a one-channel :class:`~gpuconv.nn.Conv2D`, the
  summed squared loss and plain gradient descent.
* :func:`train_digits`: a LeNet-style CNN on the handwritten digits shipped in
  :mod:`gpuconv.data`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import nn
from ._argtypes import add_backend_option, nonnegative_int, plot_file, positive_int
from .backend import set_backend
from .correlate import corr2d
from .data import load_digits, stratified_split
from .nn._module import current_backend

__all__ = [
    "EDGE_KERNEL",
    "EdgeKernelResult",
    "DigitsResult",
    "cosine_lr",
    "edge_image",
    "learn_edge_kernel",
    "lenet_digits",
    "run_train_digits",
    "save_digits_figure",
    "train_digits",
]

EDGE_KERNEL = np.array([[1.0, -1.0]])


def edge_image(height: int = 6, width: int = 8) -> np.ndarray:
    """The chapter's image: ones, with columns 2..5 set to zero (two vertical edges).

    Parameters
    ----------
    height, width : int, optional
        Its size (default 6x8, as in the chapter).

    Returns
    -------
    numpy.ndarray, shape (height, width), float64

    Examples
    --------
    >>> from gpuconv.examples import edge_image
    >>> edge_image()[0]
    array([1., 1., 0., 0., 0., 0., 1., 1.])
    """
    X = np.ones((height, width))
    X[:, 2:6] = 0
    return X


def _backend_context(backend: str | None) -> Any:
    return set_backend(backend) if backend is not None else contextlib.nullcontext()


@dataclass
class EdgeKernelResult:
    """What :func:`learn_edge_kernel` learned.

    ``losses[t]`` is the summed squared loss after ``t`` gradient steps, so
    ``losses[0]`` is the loss of the random start and ``losses[-1]`` that of
    ``kernel``.
    """

    kernel: np.ndarray
    losses: list[float]
    initial_kernel: np.ndarray

    @property
    def error(self) -> float:
        """``max |kernel - [[1, -1]]|``."""
        return float(np.abs(self.kernel - EDGE_KERNEL).max())


def learn_edge_kernel(steps: int = 40, lr: float = 3e-2, seed: Any = 0, *,
                      backend: str | None = None, dtype: Any = np.float32) -> EdgeKernelResult:
    """Learn the edge kernel from ``X`` and ``Y = corr2d(X, [[1, -1]])``, as in the chapter.

    A 1-in, 1-out :class:`~gpuconv.nn.Conv2D` with a 1x2 kernel and no bias,
    initialised as PyTorch does (``U(-1/sqrt(2), 1/sqrt(2))``, seeded), is
    trained on the 6x8 edge image by full-batch gradient descent on the summed
    squared error ``sum((conv(X) - Y)**2)``.

    Parameters
    ----------
    steps : int, optional
        Gradient steps (default 40).
    lr : float, optional
        Learning rate (the chapter's 3e-2).
    seed : int or numpy.random.Generator, optional
        Seeds the initial kernel.
    backend : str, keyword-only
        Where to compute; ``None`` follows :func:`gpuconv.set_backend`.
    dtype : floating dtype, keyword-only
        Of the kernel and the data (default float32, as in the chapter).

    Returns
    -------
    EdgeKernelResult
        ``kernel`` (1, 2) as a NumPy array, ``losses`` (``steps + 1`` values:
        the loss after 0, 1, ..., ``steps`` updates) and ``initial_kernel``.

    Notes
    -----
    The loss is the quadratic ``e^T A e`` in the kernel error ``e = k - K``,
    with ``A = 2 * [[18, 12], [12, 18]]`` for this image (each of the 6 rows
    has 3 pixel pairs in which the left, the right, or both pixels are 1).  The
    eigenvalues of ``[[18, 12], [12, 18]]`` are 30 (along ``[1, 1]``) and 6
    (along ``[1, -1]``); one step multiplies those components of ``e`` by
    ``1 - 2 * lr * 30 = -0.8`` and ``1 - 2 * lr * 6 = 0.64``.  From any start
    in ``U(-1/sqrt(2), 1/sqrt(2))`` the ``[1, 1]`` component is at most 1 in
    size, so the loss is below ``30 * 0.8**(2t)``: under 1e-4 after 29 steps
    in the worst case, and the kernel within 0.8**t of K.

    Examples
    --------
    >>> from gpuconv.examples import learn_edge_kernel
    >>> result = learn_edge_kernel(steps=40, seed=0)
    >>> result.losses[-1] < 1e-4, result.error < 0.01
    (True, True)
    >>> result.kernel.round(3)
    array([[ 1., -1.]], dtype=float32)
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an int >= 0; got {steps!r}")
    with _backend_context(backend):
        be = current_backend(backend)
        X = edge_image()
        Y = corr2d(X, EDGE_KERNEL)
        x = be.asarray(X[None, None].astype(dtype))
        y = be.asarray(Y[None, None].astype(dtype))
        conv = nn.Conv2D(1, 1, kernel_size=(1, 2), bias=False, seed=seed, dtype=dtype,
                         backend=be.name)
        initial = be.to_numpy(conv.weight.data).reshape(1, 2).copy()
        optimizer = nn.SGD(conv.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            value, grad = nn.mse_loss(conv(x), y, reduction="sum")
            losses.append(value)
            conv.zero_grad()
            conv.backward(grad)
            optimizer.step()
        losses.append(nn.mse_loss(conv(x), y, reduction="sum").value)
        kernel = be.to_numpy(conv.weight.data).reshape(1, 2).copy()
    return EdgeKernelResult(kernel, losses, initial)


def lenet_digits(seed: Any = 0, *, dtype: Any = np.float32,
                 backend: str | None = None) -> nn.Sequential:
    """A LeNet-style CNN for 8x8 digits: two conv/ReLU/max-pool stages and two dense layers.

    ``(N, 1, 8, 8) -> conv 3x3 (32) -> pool -> conv 3x3 (64) -> pool -> 256 -> 128 -> 10``,
    every convolution padded to keep its size, ReLU after each hidden layer.

    Parameters
    ----------
    seed : int or numpy.random.Generator, optional
        Seeds the initialisation of every layer.
    dtype : floating dtype, keyword-only
        Of the parameters (default float32).
    backend : str, keyword-only
        Where the parameters live; ``None`` follows :func:`gpuconv.set_backend`.

    Returns
    -------
    gpuconv.nn.Sequential

    Examples
    --------
    >>> from gpuconv.examples import lenet_digits
    >>> net = lenet_digits()
    >>> sum(int(np.prod(p.shape)) for p in net.parameters())
    53002
    """
    rng = np.random.default_rng(seed)
    kw = dict(dtype=dtype, backend=backend)
    return nn.Sequential(
        nn.Conv2D(1, 32, 3, padding=1, seed=rng, **kw), nn.ReLU(), nn.MaxPool2D(2),
        nn.Conv2D(32, 64, 3, padding=1, seed=rng, **kw), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 128, seed=rng, **kw), nn.ReLU(),
        nn.Linear(128, 10, seed=rng, **kw),
    )


@dataclass
class DigitsResult:
    """What :func:`train_digits` produced."""

    model: nn.Sequential
    history: nn.History
    test_accuracy: float
    train_seconds: float
    n_train: int
    n_test: int
    backend: str = ""
    first_layer_kernels: np.ndarray = field(default_factory=lambda: np.zeros(0))


def cosine_lr(lr: float, epochs: int) -> Any:
    """A :class:`~gpuconv.nn.Trainer` callback decaying the learning rate to 0 on a cosine.

    After epoch ``e`` (from 0) the optimizer's ``lr`` becomes
    ``lr * (1 + cos(pi * (e + 1) / epochs)) / 2``.

    Parameters
    ----------
    lr : float
        The starting learning rate.
    epochs : int
        The epoch count the schedule spans.

    Returns
    -------
    callable
        ``callback(trainer, epoch, logs)``, for :class:`~gpuconv.nn.Trainer`.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from gpuconv.examples import cosine_lr
    >>> trainer = SimpleNamespace(optimizer=SimpleNamespace(lr=0.1))
    >>> callback = cosine_lr(0.1, epochs=4)
    >>> callback(trainer, 1, {}); round(trainer.optimizer.lr, 4)
    0.05
    """
    def callback(trainer: Any, epoch: int, logs: dict) -> None:
        trainer.optimizer.lr = lr * 0.5 * (1 + math.cos(math.pi * (epoch + 1) / epochs))

    return callback


def _blas_threads(threads: int | None) -> Any:
    # The digits network multiplies matrices of a few hundred rows; OpenBLAS
    # splitting those over threads costs more than it saves, and far more
    # when other processes share the cores (measured here: 10x slower epochs).
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def train_digits(epochs: int = 20, *, backend: str | None = None, seed: int = 0,
                 batch_size: int = 32, lr: float = 0.05, momentum: float = 0.9,
                 weight_decay: float = 1e-4, test_fraction: float = 0.25,
                 blas_threads: int | None = 1, progress: bool = False,
                 callbacks: Any = ()) -> DigitsResult:
    """Train :func:`lenet_digits` on the shipped digits and measure held-out accuracy.

    The images are scaled to [0, 1]; a stratified, seeded split holds out
    ``test_fraction`` of each class for the test, which is evaluated after
    every epoch (``history.val_accuracy``) and never trained on.  Mini-batch
    SGD with momentum runs with a cosine learning-rate decay (:func:`cosine_lr`).

    Parameters
    ----------
    epochs : int, optional
        Passes over the training images.
    backend : str, keyword-only
        Where to train (``"numpy"``, ``"cupy"``, ...); ``None`` follows
        :func:`gpuconv.set_backend`.
    seed : int, keyword-only
        Seeds the split, the initialisation and the shuffling.
    batch_size, lr, momentum, weight_decay : keyword-only
        Mini-batch SGD settings; ``lr`` is the starting learning rate.
    test_fraction : float, keyword-only
        Share of each class held out.
    blas_threads : int or None, keyword-only
        Limit the CPU BLAS to this many threads while training (with
        threadpoolctl); ``None`` leaves it alone.  The network's matrices
        are small, so one thread is fastest.
    progress : bool, keyword-only
        Show a progress bar (tqdm).
    callbacks : keyword-only
        More :class:`~gpuconv.nn.Trainer` callbacks, run after the schedule's.

    Returns
    -------
    DigitsResult
        The trained model, its :class:`~gpuconv.nn.History`, the held-out
        accuracy, the training time and the first layer's kernels.

    Examples
    --------
    >>> from gpuconv.examples import train_digits
    >>> result = train_digits(epochs=1, seed=0)
    >>> result.test_accuracy > 0.3, len(result.history.train_loss)
    (True, 1)
    """
    images, labels = load_digits()
    x = (images.astype(np.float32) / 16.0)[:, None]
    train, test = stratified_split(labels, test_fraction, seed=seed)
    with _backend_context(backend), _blas_threads(blas_threads):
        be = current_backend(backend)
        model = lenet_digits(seed, backend=be.name)
        optimizer = nn.SGD(model.parameters(), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)
        trainer = nn.Trainer(backend=be.name, progress=progress,
                             callbacks=[cosine_lr(lr, epochs), *callbacks])
        data = nn.ArrayLoader(x[train], labels[train], batch_size, shuffle=True, seed=seed)
        val = nn.ArrayLoader(x[test], labels[test], 512)
        start = time.perf_counter()
        history = trainer.fit(model, data, nn.cross_entropy, optimizer, epochs, val_data=val)
        seconds = time.perf_counter() - start
        accuracy = trainer.evaluate(val)["val_accuracy"]
        kernels = be.to_numpy(model[0].weight.data).copy()
    return DigitsResult(model, history, accuracy, seconds, len(train), len(test), be.name,
                        kernels)


def save_digits_figure(path: str, result: DigitsResult) -> None:
    """The loss curves and the learned first-layer kernels, as one PNG (needs matplotlib).

    Parameters
    ----------
    path : str or path-like
        Where the PNG goes.
    result : DigitsResult
        What :func:`train_digits` returned.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = result.first_layer_kernels[:, 0]
    cols = 8
    rows = -(-kernels.shape[0] // cols)
    fig = plt.figure(figsize=(12, 4.2), constrained_layout=True)
    grid = fig.add_gridspec(rows, 2 + cols, width_ratios=[5, 1] + [1] * cols)
    ax = fig.add_subplot(grid[:, 0])
    history = result.history
    batches = np.arange(1, len(history.batch_loss) + 1) / max(len(history.batch_loss), 1)
    ax.plot(batches * history.epochs, history.batch_loss, lw=0.6, alpha=0.5,
            label="training batch loss")
    epochs = np.arange(1, history.epochs + 1)
    ax.plot(epochs, history.train_loss, marker="o", label="training loss (epoch mean)")
    if history.val_loss:
        ax.plot(epochs, history.val_loss, marker="s", label="held-out loss")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"digits CNN: test accuracy {result.test_accuracy:.4f}")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    limit = float(np.abs(kernels).max())
    for i, k in enumerate(kernels):
        kax = fig.add_subplot(grid[i // cols, 2 + i % cols])
        kax.imshow(k, cmap="coolwarm", vmin=-limit, vmax=limit)
        kax.set_xticks([])
        kax.set_yticks([])
    fig.suptitle("loss curves and the learned first-layer 3x3 kernels")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_train_digits(backend: str | None = None, epochs: int = 20, seed: int = 0,
                     plot: str | None = None, progress: bool = True) -> int:
    """``gpuconv train-digits``: train, print a line per epoch and the test accuracy.

    Parameters
    ----------
    backend : str, optional
        Where to train; ``None`` follows :func:`gpuconv.set_backend`, and
        ``"auto"`` follows the data (NumPy arrays).
    epochs : int, optional
        Passes over the training images.
    seed : int, optional
        Seeds the split, the initialisation and the shuffling.
    plot : str, optional
        Also save :func:`save_digits_figure` there (needs matplotlib).
    progress : bool, optional
        Show a progress bar (tqdm, when installed).

    Returns
    -------
    int
        The process exit code, 0.

    Raises
    ------
    BackendUnavailableError
        If the backend cannot run here (before training).
    ImportError
        If ``plot`` is given and matplotlib is missing (before training).
    """
    if plot:
        try:
            import matplotlib  # noqa: F401  - fail before training, not after it
        except ImportError:
            raise ImportError("plot needs matplotlib: pip install 'gpuconv[plot]'") from None

    def report(trainer: Any, epoch: int, logs: dict) -> None:
        line = (f"epoch {epoch + 1:2d}/{epochs}: train loss {logs['train_loss']:.4f}, "
                f"held-out loss {logs['val_loss']:.4f}, accuracy {logs['val_accuracy']:.4f}")
        trainer.log(line)

    result = train_digits(epochs, backend=backend, seed=seed, progress=progress,
                          callbacks=[report])
    print(f"{result.n_train} training and {result.n_test} held-out images (stratified split, "
          f"seed {seed}); {result.train_seconds:.1f} s on the {result.backend!r} backend")
    print(f"test accuracy: {result.test_accuracy:.4f}")
    if plot:
        save_digits_figure(plot, result)
        print(f"figure written to {plot}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``train-digits`` subcommand of ``gpuconv``."""
    parser = subparsers.add_parser(
        "train-digits", help="train a small CNN (gpuconv.nn) on the shipped 8x8 handwritten "
                             "digits",
        description="Train a LeNet-style CNN built from gpuconv.nn on the 1797 shipped 8x8 "
                    "handwritten digits and report the held-out accuracy.")
    add_backend_option(parser)
    parser.add_argument("--epochs", type=positive_int, default=20, metavar="N",
                        help="passes over the training images (default 20)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, metavar="N",
                        help="seeds the split, the initialisation and the shuffling (default 0)")
    parser.add_argument("--plot", metavar="PATH", type=plot_file,
                        help="also save the loss curves and the learned first-layer kernels "
                             "(PNG; needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=lambda args: run_train_digits(
        backend=args.backend, epochs=args.epochs, seed=args.seed, plot=args.plot,
        progress=not args.no_progress))
    return parser
