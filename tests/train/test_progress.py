"""Progress: tqdm bars when stderr is a terminal (checked under a pseudo-terminal), log lines otherwise."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from vit5.train.progress import use_bars

ARGS = ["train", "--epochs", "1", "--batch-size", "32", "data.max_train_images=128", "data.max_test_images=32",
        "model.hidden_dim=16", "model.num_blocks=2", "model.siren_hidden_dim=8", "train.log_every_seconds=0"]  # fmt: skip


def _run(tmp_path, terminal: bool, args: list[str] | None = None) -> str:
    """stderr of ``vit5 ARGS`` run on a pseudo-terminal (``terminal``) or a pipe."""
    args = args or [*ARGS, "--out", str(tmp_path / ("tty" if terminal else "file"))]
    command = [sys.executable, "-m", "vit5", *args]
    env = {**os.environ, "VIT5_PROGRESS": ""}
    if not terminal:
        return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env).stderr
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=secondary, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=240)
    os.close(main)
    return b"".join(chunks).decode("utf-8", "replace")


def test_bars_in_a_terminal(tmp_path):
    shown = _run(tmp_path, terminal=True)
    assert "epoch 1/1:" in shown and "/4 [" in shown and ("step/s" in shown or "s/step" in shown), shown[
        -2000:
    ]
    assert "loss=" in shown and "lr=" in shown  # the bar's postfix
    assert "epoch 1/1  step 1/4" not in shown  # no periodic log lines under a bar


def test_log_lines_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv("VIT5_PROGRESS", raising=False)
    assert not use_bars()  # pytest captures stderr: not a terminal (tests/test_cli.py checks the log lines)
    monkeypatch.setenv("VIT5_PROGRESS", "1")
    assert use_bars()


def test_export_shows_its_stages(tmp_path):
    args = ["export", "--preset", "vit5_tiny_attention", "--out", str(tmp_path / "tiny.pt2")]
    shown = _run(tmp_path, terminal=True, args=args)
    assert "export tiny.pt2:" in shown and "stage" in shown, shown[-2000:]
    assert "loading the model" in shown and "tracing and writing pt2" in shown
    (tmp_path / "tiny.pt2").unlink()
    logged = _run(tmp_path, terminal=False, args=args)
    assert "stage" not in logged and "tracing" not in logged  # no bar, no extra lines in files and pipes
    assert (tmp_path / "tiny.pt2").is_file()
