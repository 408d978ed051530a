"""gpuconv.nn beyond gradients: the trainer, the chapter's kernel learning, the digits
CNN, ``gpuconv demo`` / ``gpuconv train-digits``, and bad inputs."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import gpuconv
from gpuconv import nn
from gpuconv.cli import main
from gpuconv.examples import EDGE_KERNEL, edge_image, learn_edge_kernel, train_digits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- the chapter's experiment ------------------------------------------------------

def _closed_form_descent(k0, steps, lr):
    """Gradient descent on sum((A k - y)^2) written out with the design matrix A."""
    X = edge_image()
    A = np.stack([X[:, :-1].ravel(), X[:, 1:].ravel()], axis=1)  # pixel pairs (left, right)
    y = A @ EDGE_KERNEL.ravel()
    k = np.asarray(k0, dtype=np.float64).ravel()
    losses = []
    for _ in range(steps + 1):
        r = A @ k - y
        losses.append(float(r @ r))
        k = k - lr * 2 * A.T @ r
    return losses


def test_edge_kernel_follows_the_closed_form_descent(backend):
    result = learn_edge_kernel(steps=40, seed=3, backend=backend.name, dtype=np.float64)
    expected = _closed_form_descent(result.initial_kernel, 40, 3e-2)
    np.testing.assert_allclose(result.losses, expected, rtol=1e-9, atol=1e-15)


@pytest.mark.slow_on_standin("40 training steps per seed, 18 s")
def test_edge_kernel_every_seed_within_40_steps(backend):
    worst_step = 0
    for seed in range(50):
        result = learn_edge_kernel(steps=40, seed=seed, backend=backend.name)
        assert len(result.losses) == 41
        assert result.losses[-1] < 1e-4, (seed, result.losses[-1])
        assert result.error < 0.01, (seed, result.kernel)
        # The loss is e^T A^T A e with both modes contracting: it falls every step
        # (checked while the float32 residuals are far above their rounding error).
        early = result.losses[:31]
        assert all(b < a for a, b in zip(early, early[1:])), seed
        worst_step = max(worst_step, next(t for t, v in enumerate(result.losses) if v < 1e-4))
    # The analysis in learn_edge_kernel's docstring bounds this by 29 steps.
    assert worst_step <= 29


def test_edge_kernel_slowest_mode_contracts_by_0_8():
    # Late in the descent only the [1, 1] mode is left; the loss (its square)
    # shrinks by 0.8**2 = 0.64 per step.
    losses = learn_edge_kernel(steps=40, seed=1, dtype=np.float64).losses
    ratios = np.array(losses[21:]) / np.array(losses[20:-1])
    np.testing.assert_allclose(ratios, 0.64, rtol=1e-3)


def test_edge_kernel_initial_kernel_is_pytorch_uniform():
    starts = np.array([learn_edge_kernel(steps=0, seed=s).initial_kernel for s in range(200)])
    bound = 1 / np.sqrt(2)
    assert np.abs(starts).max() <= bound
    assert np.abs(starts).max() > 0.95 * bound
    assert len({tuple(s.ravel()) for s in starts}) == 200


# -- the trainer --------------------------------------------------------------------

def _blobs(rng, n=96):
    centers = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    labels = rng.integers(0, 3, size=n)
    x = centers[labels] + 0.4 * rng.standard_normal((n, 2))
    return x.astype(np.float32), labels


def test_trainer_history_validation_and_callbacks(backend, rng):
    x, y = _blobs(rng)
    model = nn.Sequential(nn.Linear(2, 8, seed=rng), nn.ReLU(), nn.Linear(8, 3, seed=rng))
    seen = []
    history = nn.Trainer(backend=backend.name, progress=False,
                         callbacks=[lambda t, e, logs: seen.append((e, dict(logs)))]).fit(
        model, nn.ArrayLoader(x, y, 16, shuffle=True, seed=0), nn.cross_entropy,
        nn.SGD(model.parameters(), lr=0.1, momentum=0.9), epochs=8,
        val_data=nn.ArrayLoader(x, y, 40))
    assert history.epochs == 8
    assert len(history.val_loss) == len(history.val_accuracy) == len(history.epoch_seconds) == 8
    assert len(history.batch_loss) == 8 * 6
    assert [e for e, _ in seen] == list(range(8))
    assert seen[-1][1]["val_accuracy"] == history.val_accuracy[-1]
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_accuracy[-1] > 0.9
    # The validation numbers are those of an independent pass over the data.
    logits = gpuconv.backend.get_backend_object(backend.name).to_numpy(
        model.eval()(backend.asarray(x)))
    assert history.val_accuracy[-1] == pytest.approx(float((logits.argmax(1) == y).mean()))


def test_trainer_callback_stops_training(rng):
    x, y = _blobs(rng, 32)
    model = nn.Linear(2, 3, seed=0)
    history = nn.Trainer(progress=False, callbacks=[lambda t, e, logs: e == 2]).fit(
        model, nn.ArrayLoader(x, y, 8), nn.cross_entropy, nn.SGD(model.parameters(), lr=0.1),
        epochs=10)
    assert history.epochs == 3
    assert history.val_loss == []


def test_trainer_prepare_batch_moves_to_backend(backend):
    trainer = nn.Trainer(backend=backend.name, progress=False)
    trainer._backend = backend
    xb, yb = trainer.prepare_batch(([[1.0, 2.0]], [0]))
    assert gpuconv._dispatch.array_library(xb) == backend.name
    assert gpuconv._dispatch.array_library(yb) == backend.name
    with pytest.raises(TypeError, match="pairs"):
        trainer.prepare_batch(np.zeros(3))


def test_trainer_regression_has_no_accuracy(rng):
    x = rng.standard_normal((40, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]])).astype(np.float32)
    model = nn.Linear(3, 1, seed=0)
    history = nn.Trainer(progress=False).fit(
        model, nn.ArrayLoader(x, y, 10), nn.mse_loss, nn.SGD(model.parameters(), lr=0.05),
        epochs=30, val_data=[(x, y)])
    assert history.val_accuracy == []
    assert history.val_loss[-1] < 0.05 * history.val_loss[0]


def test_trainer_progress_bar_and_fallback_without_tqdm(rng, monkeypatch, capsys):
    pytest.importorskip("tqdm", reason="tqdm is not installed: no progress bar to show")
    x, y = _blobs(rng, 16)
    model = nn.Linear(2, 3, seed=0)
    data = nn.ArrayLoader(x, y, 8)
    nn.Trainer().fit(model, data, nn.cross_entropy, nn.SGD(model.parameters(), lr=0.1), 2)
    # A bar over 2 epochs x 2 batches was drawn on stderr.
    assert "/4 [" in capsys.readouterr().err
    # Without tqdm the trainer trains silently instead of failing.
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    history = nn.Trainer().fit(model, data, nn.cross_entropy,
                               nn.SGD(model.parameters(), lr=0.1), 2)
    assert history.epochs == 2
    assert "/4 [" not in capsys.readouterr().err


# -- backend="auto": follow the inputs, NumPy when there are none --------------------

def test_backend_auto_in_layers_examples_and_the_trainer(rng):
    for layer in (nn.Conv2D(1, 2, 3, seed=0, backend="auto"), nn.Linear(3, 2, seed=0,
                                                                      backend="auto")):
        assert all(type(p.data) is np.ndarray for p in layer.parameters())
    # "auto" with nothing to follow is NumPy even where another backend is the context's.
    with gpuconv.set_backend("numpy"):
        assert type(nn.Linear(2, 2, backend="auto").weight.data) is np.ndarray
    auto = learn_edge_kernel(steps=5, seed=1, backend="auto")
    plain = learn_edge_kernel(steps=5, seed=1, backend="numpy")
    assert auto.losses == plain.losses
    np.testing.assert_array_equal(auto.kernel, plain.kernel)
    assert train_digits(epochs=1, backend="auto", seed=0).backend == "numpy"
    x, y = _blobs(rng, 16)
    model = nn.Linear(2, 3, seed=0)
    history = nn.Trainer(backend="auto", progress=False).fit(
        model.to("auto"), nn.ArrayLoader(x, y, 8), nn.cross_entropy,
        nn.SGD(model.parameters(), lr=0.1), 2)
    assert history.epochs == 2 and type(model.weight.data) is np.ndarray


def test_backend_auto_follows_a_model_of_another_library(rng, monkeypatch):
    from test_backends import FakeArray, FakeBackend, fake_array_library, registered

    x, y = _blobs(rng, 16)
    with fake_array_library(monkeypatch), registered("fakearray", FakeBackend):
        model = nn.Sequential(nn.Linear(2, 4, seed=0, backend="fakearray"), nn.ReLU(),
                              nn.Linear(4, 3, seed=0, backend="fakearray"))
        # Moving to "auto" keeps each parameter where it is.
        model.to("auto")
        assert all(type(p.data) is FakeArray for p in model.parameters())
        seen = []

        class Spy(nn.Trainer):
            def training_step(self, batch):
                seen.append(tuple(type(a) for a in batch))
                return super().training_step(batch)

        for backend in ("auto", None):
            seen.clear()
            Spy(backend=backend, progress=False).fit(
                model, nn.ArrayLoader(x, y, 8), nn.cross_entropy,
                nn.SGD(model.parameters(), lr=0.1), 1)
            # NumPy batches were moved to the model's library, the model stayed there.
            assert seen == [(FakeArray, FakeArray)] * 2, backend
            assert all(type(p.data) is FakeArray for p in model.parameters())


# -- the digits CNN -----------------------------------------------------------------

def test_digits_data_is_shipped_and_split_is_stratified():
    from gpuconv.data import load_digits, stratified_split

    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 16 and set(np.unique(labels)) == set(range(10))
    train, test = stratified_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    np.testing.assert_allclose(np.bincount(labels[test]) / np.bincount(labels), 0.25, atol=0.01)
    again, _ = stratified_split(labels, 0.25, seed=0)
    np.testing.assert_array_equal(train, again)


def test_digits_data_matches_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets",
                                   reason="scikit-learn is not installed: no original to compare")
    from gpuconv.data import load_digits

    images, labels = load_digits()
    ref = datasets.load_digits()
    np.testing.assert_array_equal(images, ref.images)
    np.testing.assert_array_equal(labels, ref.target)


@pytest.mark.slow_on_standin("a CNN training run, 110 s")
def test_digits_smoke(backend):
    result = train_digits(epochs=2, backend=backend.name, seed=1)
    assert result.history.epochs == 2
    assert result.n_train + result.n_test == 1797
    # Two epochs already learn something (chance is 0.1).
    assert result.test_accuracy > 0.5
    assert result.first_layer_kernels.shape == (32, 1, 3, 3)


@pytest.mark.slow
def test_digits_reaches_97_percent_in_under_60_seconds():
    result = train_digits(backend="numpy")
    assert result.test_accuracy >= 0.97, result.history.val_accuracy
    assert result.train_seconds < 60


# -- the command line -----------------------------------------------------------------

def test_demo_prints_the_tour(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "1. Edge detection" in out
    learned = re.search(r"learned: K = \[\[\s*(\S+)\s+(\S+)\]\], max \|K - \[1, -1\]\| = (\S+)",
                        out)
    assert learned, out
    assert abs(float(learned.group(1)) - 1) < 0.01 and abs(float(learned.group(2)) + 1) < 0.01
    steps = [float(v) for v in re.findall(r"step\s+\d+: loss (\S+)", out)]
    assert len(steps) >= 5 and steps == sorted(steps, reverse=True) and steps[-1] < 1e-4
    assert re.search(r"(\d+)/\1 claims hold", out), "every theory claim should hold"
    assert re.search(r"direct [\d.]+ ms, FFT [\d.]+ ms", out)


def test_demo_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: --plot cannot draw")
    path = tmp_path / "demo.png"
    assert main(["demo", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert f"figure written to {path}" in capsys.readouterr().out


def test_train_digits_cli(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: --plot cannot draw")
    path = tmp_path / "digits.png"
    assert main(["train-digits", "--epochs", "2", "--no-progress", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^epoch\s+\d+/2: train loss", out, flags=re.M)) == 2
    last = out.strip().splitlines()
    accuracy = [line for line in last if line.startswith("test accuracy: ")]
    assert len(accuracy) == 1 and re.fullmatch(r"test accuracy: 0\.\d{4}", accuracy[0])
    assert path.read_bytes()[:8] == PNG_MAGIC


# -- bad inputs -----------------------------------------------------------------------

BAD = [
    (lambda: nn.Conv2D(3, 4, 3, groups=2), ValueError, "divisible by groups"),
    (lambda: nn.Conv2D(0, 4, 3), ValueError, "in_channels must be >= 1"),
    (lambda: nn.Conv2D(1.5, 4, 3), TypeError, "in_channels must be an int"),
    (lambda: nn.Conv2D(1, 4, 0), ValueError, "kernel_size"),
    (lambda: nn.Conv2D(1, 4, 3, padding="full"), ValueError, "'same'"),
    (lambda: nn.Conv2D(1, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: nn.Conv2D(1, 4, 3, dtype=np.int32), TypeError, "float"),
    (lambda: nn.Conv2D(1, 4, 3, backend="nope"), ValueError, "unknown backend"),
    (lambda: nn.Linear(2, 2, backend=3), TypeError, "backend must be a str"),
    (lambda: nn.Linear(2, 2).to("nope"), ValueError, "unknown backend"),
    (lambda: nn.Trainer(backend="nope").fit(nn.Linear(1, 1), [], nn.mse_loss,
                                            nn.SGD(nn.Linear(1, 1).parameters(), lr=1), 1),
     ValueError, "unknown backend"),
    (lambda: nn.cross_entropy(np.zeros((2, 3)), np.full((2, 3), 0.5)), ValueError,
     "row 0 sums to 1.5"),
    (lambda: nn.Linear(3, 0), ValueError, "out_features"),
    (lambda: nn.MaxPool2D(2, padding=2), ValueError, "half the kernel"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "argument 1 is str"),
    (lambda: nn.SGD([], lr=0.1), ValueError, "empty"),
    (lambda: nn.SGD([np.zeros(2)], lr=0.1), TypeError, "Parameter"),
    (lambda: nn.SGD(nn.Linear(2, 2).parameters(), lr=-1), ValueError, "lr must be > 0"),
    (lambda: nn.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=1.0), ValueError,
     "momentum"),
    (lambda: nn.SGD(nn.Linear(2, 2).parameters(), lr="fast"), TypeError, "lr must be a real"),
    (lambda: nn.mse_loss(np.zeros(3), np.zeros(4)), ValueError, "same shape"),
    (lambda: nn.mse_loss(np.zeros(3), np.zeros(3), reduction="none"), ValueError, "reduction"),
    (lambda: nn.cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError, r"\[0, 3\)"),
    (lambda: nn.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError, "integers"),
    (lambda: nn.cross_entropy(np.zeros((2, 3)), np.array([0])), ValueError, "2 labels"),
    (lambda: nn.cross_entropy(np.zeros(3), np.array([0])), ValueError, "2-D"),
    (lambda: nn.Linear(3, 2)(np.zeros((1, 4), np.float32)), ValueError, "in_features=3"),
    (lambda: nn.MaxPool2D(2)(np.zeros((2, 3))), ValueError, "4-D"),
    (lambda: nn.Conv2D(1, 1, 3).backward(np.zeros((1, 1, 2, 2))), RuntimeError, "forward"),
    (lambda: nn.ArrayLoader(np.zeros(3), np.zeros(4), 2), ValueError, "same length"),
    (lambda: nn.ArrayLoader(np.zeros(3), np.zeros(3), 0), ValueError, "batch_size"),
    (lambda: nn.Trainer(callbacks=[1]), TypeError, "callables"),
    (lambda: nn.Trainer().fit("model", [], nn.mse_loss, None, 1), TypeError, "Module"),
    (lambda: nn.Trainer().fit(nn.ReLU(), [], nn.mse_loss, object(), 1), TypeError, "step"),
    (lambda: nn.Trainer().fit(nn.ReLU(), [], nn.mse_loss,
                              nn.SGD(nn.Linear(1, 1).parameters(), lr=1), -1),
     ValueError, "epochs"),
    (lambda: learn_edge_kernel(steps=-1), ValueError, "steps"),
    (lambda: nn.Linear(2, 2).to(dtype=np.int64), TypeError, "floating"),
    (lambda: nn.Parameter(np.zeros(2), name=3), TypeError, "name must be a str"),
    (lambda: nn.functional.pad_nchw(np, np.zeros((1, 1, 2, 2)), (1, 1, 1, 1), "mirror"),
     ValueError, "padding_mode must be one of"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_module_parameters_repr_and_to():
    net = nn.Sequential(nn.Conv2D(1, 2, 3, seed=0), nn.ReLU(), nn.Flatten(),
                        nn.Linear(2, 2, bias=False, seed=0))
    assert [p.name for p in net.parameters()] == ["weight", "bias", "weight"]
    text = repr(net)
    assert "(0): Conv2D(1, 2, kernel_size=(3, 3), stride=(1, 1))" in text
    assert "(3): Linear(in_features=2, out_features=2, bias=False)" in text
    net.to(dtype=np.float64)
    assert all(p.data.dtype == np.float64 for p in net.parameters())
    assert net.training and not net.eval().training and not net[0].training
    # In evaluation mode nothing is cached, so backward refuses.
    net(np.zeros((1, 1, 3, 3)))
    with pytest.raises(RuntimeError, match="forward"):
        net[3].backward(np.zeros((1, 2)))


# -- docstrings ---------------------------------------------------------------------

def _sections(doc):
    lines = doc.splitlines()
    found, current = {}, None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) and line.strip():
            current = line.strip()
            found[current] = []
        elif current is not None and not re.fullmatch(r"-{3,}", line.strip()):
            found[current].append(line)
    return found


def _public_functions():
    import inspect

    import gpuconv.data
    import gpuconv.demo
    import gpuconv.examples
    import gpuconv.nn.functional

    for mod in (nn, gpuconv.nn.functional, gpuconv.examples, gpuconv.data, gpuconv.demo):
        for name in mod.__all__:
            fn = getattr(mod, name)
            if inspect.isfunction(fn):
                yield f"{mod.__name__}.{name}", fn


# Entry points that draw or print the whole tour: documented, exercised by the CLI tests.
_NO_EXAMPLE = {"save_digits_figure", "run_train_digits", "save_figure", "run_demo"}


@pytest.mark.parametrize("qualname,fn", list(_public_functions()),
                         ids=[q for q, _ in _public_functions()])
def test_public_functions_have_numpydoc_docstrings(qualname, fn):
    import inspect

    doc = inspect.getdoc(fn)
    assert doc and len(doc.splitlines()[0]) <= 100, qualname
    found = _sections(doc)
    params = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    documented = [name.strip() for line in found.get("Parameters", [])
                  if line and not line[0].isspace() for name in line.split(":")[0].split(",")]
    assert documented == params, qualname
    if inspect.signature(fn).return_annotation not in (None, "None"):
        assert "Returns" in found, qualname
    if fn.__name__ not in _NO_EXAMPLE:
        assert any(line.lstrip().startswith(">>>") for line in found.get("Examples", [])), \
            qualname


def test_importing_nn_and_examples_imports_no_optional_library():
    import json
    import subprocess

    code = ("import json, sys, gpuconv.nn, gpuconv.examples, gpuconv.demo, gpuconv.data; "
            "print(json.dumps(sorted(m for m in ('tqdm', 'matplotlib', 'torch', 'cupy', "
            "'sklearn', 'threadpoolctl', 'dask') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == []


@pytest.mark.parametrize("command", [
    pytest.param("demo", marks=pytest.mark.heavy_on_standin(
        "the demo times each op five times on images up to 1024x1024 (~25 s of emulated "
        "kernels); train-digits runs the CLI on cupy")),
    pytest.param("train-digits", marks=pytest.mark.slow_on_standin(
        "the digits CNN trains on cupy, 50 s"))])
def test_cli_on_cupy_runs_or_says_why(command, capsys):
    status = gpuconv.available_backends()["cupy"]
    extra = ["--epochs", "1", "--no-progress"] if command == "train-digits" else []
    code = main([command, "--backend", "cupy", *extra])
    out, err = capsys.readouterr()
    if status.usable:
        assert code == 0
        assert ("test accuracy: 0." in out) if command == "train-digits" else ("learned: K" in out)
    else:
        # Refused before any work: nothing on stdout, one line on stderr.
        assert code == 1 and out == ""
        assert err == f"gpuconv: error: backend 'cupy' is not usable: {status.reason}\n"
