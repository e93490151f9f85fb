"""Every bad input of issue 24 (file system, data and arguments, plugins): one line, a non-zero
exit, no traceback, and nothing in a run folder lost or left half-written."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import vaecore.runs
from vaecore import HOOK_API_VERSION, hookimpl
from vaecore.checkpoint import load_checkpoint
from vaecore.cli import main
from vaecore.data.loaders import load_npz
from vaecore.errors import ConfigError, DataError
from vaecore.plugin_manager import hook_failure
from vaecore.testing import load, make_model, make_registry, tiny_config, write_config

CONFIG: dict[str, Any] = {
    "model": {"latent_dim": 2, "encoder": {"hidden": [16]}, "decoder": {"hidden": [16]}},
    "train": {"epochs": 2, "batch_size": 20, "progress": False},  # 150 training rows: 8 steps an epoch
    "eval": {"nll_samples": 3, "reencoding": False},
}

BOOM = """
    import attrs
    from vaecore import HOOK_API_VERSION, hookimpl

    @attrs.define(kw_only=True)
    class Options:
        at_step: int = 10

    class Boom:
        api_version = HOOK_API_VERSION
        Options = Options

        def __init__(self, options):
            self.options = options

        @hookimpl
        def on_step_end(self, ctx):
            if ctx.step >= self.options.at_step:
                raise ValueError(f"boom at step {ctx.step}")
"""

EXIT = """
    import sys

    sys.exit(7)
"""


def arrays(n: int = 200, labels: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.random((n, 10)) < 0.3).astype(np.uint8)
    out = {"x_train": x[:150], "x_valid": x[150:175], "x_test": x[175:]}
    if labels:
        y = rng.integers(0, 3, n)
        out.update(y_train=y[:150], y_valid=y[150:175], y_test=y[175:])
    return out


def install_fake_distribution(root: Path, dist: str, module: str, source: str, entry: str) -> None:
    """A module and a .dist-info with a vaecore.plugins entry point, as pip would write them."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[vaecore.plugins]\n{entry}\n")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for a folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished one-epoch run (eval.json written), shared by the eval and analysis cases."""
    root = tmp_path_factory.mktemp("trained")
    np.savez(root / "toy.npz", **arrays())
    config = write_config(root / "toy.toml", {**CONFIG, "data": {"name": "npz", "path": root / "toy.npz"}})
    assert main(["train", str(config), "--out", str(root / "run"), "--set", "train.epochs=1"]) == 0
    return root / "run"


class Case:
    """What a case gets to set itself up: a scratch folder, monkeypatch and the trained run."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, run: Path):
        self.tmp, self.monkeypatch, self.request, self.run = tmp_path, monkeypatch, request, run
        self.out = tmp_path / "run"

    def config(self, data: dict[str, np.ndarray] | None = None, **sections: Any) -> str:
        """A config file for ``data`` (default: the good arrays) written as tmp/data.npz."""
        np.savez(self.tmp / "data.npz", **(arrays() if data is None else data))
        raw = {**CONFIG, "data": {"name": "npz", "path": self.tmp / "data.npz"}}
        for key, value in sections.items():
            raw[key] = {**raw.get(key, {}), **value}
        return str(write_config(self.tmp / "data.toml", raw))

    def train(self, data: dict[str, np.ndarray] | None = None, *extra: str, **sections: Any) -> list[str]:
        return ["train", self.config(data, **sections), "--out", str(self.out), *extra]

    def read_only(self) -> Path:
        """A folder nothing can be created in: permissions, or a read-only tmpfs when root."""
        folder = self.tmp / "read-only"
        folder.mkdir()
        if sys.platform == "win32":
            pytest.skip("no read-only folder on Windows")
        if os.geteuid() != 0:
            folder.chmod(0o555)
            self.request.addfinalizer(lambda: folder.chmod(0o755))
            return folder
        mount = ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]
        if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
            pytest.skip("as root, permissions do not stop writes, and a read-only tmpfs cannot be mounted here")
        self.request.addfinalizer(lambda: subprocess.run(["umount", str(folder)], check=False))
        return folder

    def site(self, dist: str, module: str, source: str, entry: str) -> None:
        root = self.tmp / "site"
        root.mkdir(exist_ok=True)
        install_fake_distribution(root, dist, module, source, entry)
        self.monkeypatch.syspath_prepend(str(root))
        self.monkeypatch.delitem(sys.modules, module, raising=False)


def without(data: dict[str, np.ndarray], *keys: str, **replace: np.ndarray) -> dict[str, np.ndarray]:
    return {**{k: v for k, v in data.items() if k not in keys}, **replace}


def labels_with(value: float, row: int = 17) -> dict[str, np.ndarray]:
    data = arrays()
    y = data["y_train"].astype(np.float64)
    y[row] = value
    return {**data, "y_train": y}


# data --------------------------------------------------------------------------------------------


def case_nan_label(c: Case) -> list[str]:
    return c.train(labels_with(np.nan))


def case_fractional_label(c: Case) -> list[str]:
    return c.train(labels_with(3.5))


def case_negative_label(c: Case) -> list[str]:
    return c.train(labels_with(-1.0, row=4))


def case_text_labels(c: Case) -> list[str]:
    data = arrays()
    return c.train({**data, "y_test": np.array(["cat", "dog", "eel"])[data["y_test"]]})


def case_labels_not_one_per_row(c: Case) -> list[str]:
    data = arrays()
    return c.train({**data, "y_valid": np.zeros((25, 3), dtype=np.int64)})


def case_five_rows_no_valid(c: Case) -> list[str]:
    data = arrays(labels=False)
    return c.train({"x_train": data["x_train"][:5], "x_test": data["x_test"]})


def case_empty_train(c: Case) -> list[str]:
    return c.train(without(arrays(), "y_train", x_train=np.zeros((0, 10), dtype=np.uint8)))


def case_empty_test(c: Case) -> list[str]:
    return c.train(without(arrays(), "y_test", x_test=np.zeros((0, 10), dtype=np.uint8)))


def case_zero_byte_npz(c: Case) -> list[str]:
    argv = c.train()
    (c.tmp / "data.npz").write_bytes(b"")
    return argv


def case_npy_not_npz(c: Case) -> list[str]:
    argv = c.train()
    np.save(c.tmp / "single.npy", arrays()["x_train"])
    (c.tmp / "single.npy").replace(c.tmp / "data.npz")
    return argv


def case_string_dtype(c: Case) -> list[str]:
    data = arrays()
    return c.train({**data, "x_train": np.where(data["x_train"] > 0, "on", "off")})


def case_one_dimensional(c: Case) -> list[str]:
    data = arrays(labels=False)
    return c.train({key: x[:, 0] for key, x in data.items()})


def case_complex_dtype(c: Case) -> list[str]:
    data = arrays()
    return c.train({**data, "x_valid": data["x_valid"] + 1j})


# config and arguments ----------------------------------------------------------------------------


def case_huge_seed(c: Case) -> list[str]:
    return c.train(None, "--set", "train.seed=9300000000000")


def case_lr_inf_string(c: Case) -> list[str]:
    return c.train(None, train={"lr": "inf"})


def case_traverse_input_out_of_range(c: Case) -> list[str]:
    return ["traverse", str(c.run), "--input", "99999"]


def case_traverse_negative_input(c: Case) -> list[str]:
    return ["traverse", str(c.run), "--input", "-1"]


def case_traverse_zero_dims_out_of_range(c: Case) -> list[str]:
    return ["traverse", str(c.run), "--zero-dims", "99"]


def case_traverse_radius_nan(c: Case) -> list[str]:
    return ["traverse", str(c.run), "--radius", "nan"]


def case_lso_negative_lr(c: Case) -> list[str]:
    return ["lso", str(c.run), "--lr", "-1"]


def case_lso_one_init(c: Case) -> list[str]:
    return ["lso", str(c.run), "--inits", "1"]


def case_analysis_seed_overflow(c: Case) -> list[str]:
    return ["sample", str(c.run), "--seed", str(2**64)]


# file system -------------------------------------------------------------------------------------


def case_train_out_is_a_file(c: Case) -> list[str]:
    c.out.write_text("not a folder")
    return c.train()


def case_train_out_under_a_file(c: Case) -> list[str]:
    (c.tmp / "file").write_text("not a folder")
    c.out = c.tmp / "file" / "run"
    return c.train()


def case_train_out_read_only(c: Case) -> list[str]:
    c.out = c.read_only() / "run"
    return c.train()


def case_disk_full_at_the_second_last_pt(c: Case) -> list[str]:
    """ENOSPC in the middle of writing epoch 2's checkpoints/.last.pt.tmp (half of it on disk)."""
    writes = {"last": 0}

    class FullDisk:
        def __init__(self, fh: Any):
            self.fh = fh

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

    def open_on_a_full_disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = open(path, mode, *args, **kwargs)
        if Path(path).name == ".last.pt.tmp":
            writes["last"] += 1
            if writes["last"] == 2:
                return FullDisk(fh)
        return fh

    c.monkeypatch.setattr(vaecore.runs, "open", open_on_a_full_disk, raising=False)
    return c.train()


def check_epoch_one_kept(c: Case) -> None:
    """The last committed epoch is intact and loads: nothing was lost."""
    assert load_checkpoint(c.out / "checkpoints" / "last.pt")["epoch"] == 1
    records = [json.loads(line) for line in (c.out / "metrics.jsonl").read_text().splitlines()]
    assert records and records[0]["epoch"] == 1


def case_eval_out_in_a_missing_folder(c: Case) -> list[str]:
    return ["eval", str(c.run), "--out", str(c.tmp / "missing" / "eval.json")]


def case_eval_out_is_a_folder(c: Case) -> list[str]:
    return ["eval", str(c.run), "--out", str(c.tmp)]


def case_sample_out_read_only(c: Case) -> list[str]:
    return ["sample", str(c.run), "--out", str(c.read_only() / "samples")]


def case_sweep_out_is_a_file(c: Case) -> list[str]:
    (c.tmp / "sweep").write_text("not a folder")
    return ["sweep", c.config(), "--grid", "train.lr=1e-3,3e-3", "--out", str(c.tmp / "sweep")]


# plugins -----------------------------------------------------------------------------------------


def case_plugin_hook_raises_in_epoch_two(c: Case) -> list[str]:
    c.site("vaecore-boom-plugin", "fake_boom_24", BOOM, "boom = fake_boom_24:Boom")
    return c.train(None, "--set", "plugins=[{name='boom', at_step=10}]")


def case_plugin_calls_sys_exit_on_import(c: Case) -> list[str]:
    c.site("vaecore-exit-plugin", "fake_exit_24", EXIT, "exitter = fake_exit_24:Exit")
    return c.train(None, "--set", "plugins=[{name='exitter'}]")


P = pytest.param
DATA, CONF, FS, PLUGIN = 4, 2, 5, 3
BAD_INPUT: list[Any] = [
    P(case_nan_label, DATA, r"data\.npz: y_train: labels must be integers, found nan at row 17$", None),
    P(case_fractional_label, DATA, r"data\.npz: y_train: labels must be integers, found 3\.5 at row 17$", None),
    P(case_negative_label, DATA, r"data\.npz: y_train: labels must be class indices >= 0, found -1 at row 4$", None),
    P(case_text_labels, DATA, r"data\.npz: y_test: labels must be integers, found text \(dtype <U3\)$", None),
    P(case_labels_not_one_per_row, DATA, r"data\.npz: y_valid: has shape \(25, 3\); expected one label per row", None),
    P(case_five_rows_no_valid, DATA, r"data\.npz: x_train has only 5 rows and there is no x_valid", None),
    P(case_empty_train, DATA, r"data\.npz: x_train: has no rows \(shape \(0, 10\)\)$", None),
    P(case_empty_test, DATA, r"data\.npz: x_test: has no rows \(shape \(0, 10\)\)$", None),
    P(case_zero_byte_npz, DATA, r"data\.npz: not a readable \.npz file \(the file is empty, 0 bytes\)$", None),
    P(case_npy_not_npz, DATA, r"data\.npz: holds a single array \(\.npy format\), not an \.npz archive", None),
    P(case_string_dtype, DATA, r"data\.npz: x_train: holds text \(dtype <U3\); inputs must be numbers$", None),
    P(case_one_dimensional, DATA, r"data\.npz: x_train: has shape \(150,\); expected one row per example", None),
    P(case_complex_dtype, DATA, r"data\.npz: x_valid: holds complex numbers \(dtype complex128\)", None),
    P(case_huge_seed, CONF, r"train\.seed: must be between 0 and 4294967295, got 9300000000000$", None),
    P(case_lr_inf_string, CONF, r"invalid config: train\.lr: must be a finite number > 0, got inf$", None),
    P(case_traverse_input_out_of_range, 1, r"--input 99999: the test split has 25 inputs \(0 to 24\)$", None),
    P(case_traverse_negative_input, 1, r"--input -1: the test split has 25 inputs \(0 to 24\)$", None),
    P(case_traverse_zero_dims_out_of_range, 1, r"--zero-dims 99: the model has 2 latent dimensions \(0 to 1\)$", None),
    P(case_traverse_radius_nan, 1, r"--radius: must be a finite number > 0, got nan$", None),
    P(case_lso_negative_lr, 1, r"--lr: must be a finite number > 0, got -1\.0$", None),
    P(case_lso_one_init, 1, r"--inits: must be >= 2 to compare the codes reached from different starts, got 1$", None),
    P(case_analysis_seed_overflow, 1, r"--seed: must be between 0 and 4294967295, got 18446744073709551616$", None),
    P(case_train_out_is_a_file, FS, r"--out .*run: is a file, not a folder$", None),
    P(case_train_out_under_a_file, FS, r"--out .*file/run: .*file is a file, not a folder$", None),
    P(
        case_train_out_read_only,
        FS,
        r"--out .*read-only/run: cannot write in .*read-only \((the file system is read-only|permission denied)\)$",
        None,
    ),
    P(
        case_disk_full_at_the_second_last_pt,
        FS,
        r"run: No space left on device \(free some space\); the last finished epoch is checkpointed in "
        r".*last\.pt: continue with --resume$",
        check_epoch_one_kept,
    ),
    P(case_eval_out_in_a_missing_folder, FS, r"--out .*eval\.json: the folder .*missing does not exist$", None),
    P(case_eval_out_is_a_folder, FS, r"--out .*: is a folder; give the path of the file to write$", None),
    P(
        case_sample_out_read_only,
        FS,
        r"--out .*samples: cannot write in .*read-only \((the file system is read-only|permission denied)\)$",
        None,
    ),
    P(case_sweep_out_is_a_file, FS, r"--out .*sweep: is a file, not a folder", None),
    P(
        case_plugin_hook_raises_in_epoch_two,
        PLUGIN,
        r"plugin 'boom' failed in on_step_end: ValueError: boom at step 10 \(at .*fake_boom_24\.py:\d+\); "
        r"the last finished epoch is checkpointed in .*last\.pt: continue with --resume$",
        check_epoch_one_kept,
    ),
    P(
        case_plugin_calls_sys_exit_on_import,
        CONF,
        r"plugins\[0\]\.name: plugin 'exitter' \(vaecore-exit-plugin 1\.0\) failed to import fake_exit_24:Exit: "
        r"it called sys\.exit\(7\)$",
        None,
    ),
]


@pytest.mark.parametrize(("setup", "code", "message", "check"), BAD_INPUT, ids=lambda v: getattr(v, "__name__", ""))
def test_bad_input_gets_one_line_and_loses_nothing(
    setup: Callable[[Case], list[str]],
    code: int,
    message: str,
    check: Callable[[Case], None] | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    trained: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = Case(tmp_path, monkeypatch, request, trained)
    argv = setup(case)
    before = snapshot(trained)
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaecore: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(trained) == before  # the finished run is untouched (no half-written analysis or eval)
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"
    if check is not None:
        check(case)
    elif case.out.is_dir():  # refused before training: nothing was written into the run folder
        assert not list(case.out.rglob("*.pt")) and not (case.out / "metrics.jsonl").exists()


# the rest of the issue ---------------------------------------------------------------------------


def run_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vaecore.cli", *args], capture_output=True, text=True, env=env, check=False, **kwargs
    )


def test_a_million_threads_is_refused_not_a_segfault(tmp_path):
    np.savez(tmp_path / "toy.npz", **arrays())
    config = write_config(tmp_path / "toy.toml", {**CONFIG, "data": {"name": "npz", "path": tmp_path / "toy.npz"}})
    result = run_cli("train", str(config), "--out", str(tmp_path / "run"), "--set", "train.threads=1000000")
    assert result.returncode == 2
    assert result.stderr == "vaecore: error: invalid config: train.threads: must be between 1 and 1024, got 1000000\n"
    assert not (tmp_path / "run").exists()


def test_plugins_json_into_a_closed_pipe_exits_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaecore.cli", "plugins", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before vaecore has imported, let alone printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_plugin_that_calls_sys_exit_is_listed_as_broken(tmp_path, monkeypatch, capsys, request):
    case = Case(tmp_path, monkeypatch, request, tmp_path)
    case.site("vaecore-exit-plugin", "fake_exit_24b", EXIT, "exitter = fake_exit_24b:Exit")
    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["exitter"]["status"] == (
        "error: plugin 'exitter' (vaecore-exit-plugin 1.0) failed to import fake_exit_24b:Exit: it called sys.exit(7)"
    )


def test_a_config_with_a_byte_order_mark_is_accepted(tmp_path, capsys):
    np.savez(tmp_path / "toy.npz", **arrays())
    text = write_config(tmp_path / "plain.toml", {**CONFIG, "data": {"name": "npz", "path": tmp_path / "toy.npz"}})
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.read_bytes())
    assert main(["train", str(bom), "--out", str(tmp_path / "run"), "--set", "train.epochs=1"]) == 0
    assert (tmp_path / "run" / "eval.json").exists()


def test_valid_labels_load_as_int64(tmp_path):
    data = arrays()
    data["y_train"] = data["y_train"].astype(np.float32)  # whole numbers stored as floats are fine
    data["y_valid"] = data["y_valid"][:, None]  # a column of labels too
    data["y_test"] = data["y_test"] > 0  # and booleans
    np.savez(tmp_path / "ok.npz", **data)
    ds = load_npz(tmp_path / "ok.npz")
    assert all(s.y is not None and s.y.dtype == torch.int64 for s in (ds.train, ds.valid, ds.test))
    assert ds.valid.y is not None and ds.valid.y.shape == (25,)


def test_labels_are_checked_before_the_hold_out(tmp_path):
    """A bad label in the rows held out as validation is named by its row in the file."""
    data = arrays()
    y = data["y_train"].astype(np.float64)
    y[149] = 0.5
    np.savez(tmp_path / "bad.npz", x_train=data["x_train"], x_test=data["x_test"], y_train=y)
    with pytest.raises(DataError, match=r"y_train: labels must be integers, found 0\.5 at row 149$"):
        load_npz(tmp_path / "bad.npz")


class Raising:
    api_version = HOOK_API_VERSION

    @hookimpl
    def latent_map(self, y):
        raise TypeError("put this plugin first")


def test_a_hook_exception_keeps_its_type_and_names_its_plugin(tiny_data):
    """Code calling the model directly still catches the plugin's own exception type; the CLI
    reads the plugin and the hook from it."""
    registry = make_registry({"raising": Raising}, entry_points=False)
    model = make_model(tiny_config([{"name": "raising"}]), tiny_data, registry)
    with pytest.raises(TypeError, match="put this plugin first") as info:
        model.latent_map(torch.zeros(2, 4), model.context())
    failure = hook_failure(info.value)
    assert failure is not None
    assert re.fullmatch(
        r"plugin 'raising' failed in latent_map: TypeError: put this plugin first \(at .*test_bad_input\.py:\d+\)",
        failure,
    )
    assert hook_failure(ValueError("not from a hook")) is None


def test_infinite_values_are_refused_where_they_make_no_sense():
    with pytest.raises(ConfigError) as info:
        load({"train": {"lr": float("inf"), "beta": "inf", "grad_clip": "inf"}}, make_registry(entry_points=False))
    assert info.value.problems == [
        "train.lr: must be a finite number > 0, got inf",
        "train.beta: must be a finite number >= 0, got inf",
    ]  # grad_clip = inf is kept: it checks the gradient norm for NaN without clipping
