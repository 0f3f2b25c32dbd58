"""Keep a backend's start-up chatter out of a command's stderr.

TensorFlow's C++ runtime writes log lines straight to file descriptor 2 as it
loads and when it first looks for devices (oneDNN notices, CPU flags, "could
not find cuda drivers", a failed ``cuInit`` on a machine without a GPU). They
are written before its log settings exist, so ``TF_CPP_MIN_LOG_LEVEL`` does
not reach them. ``BackendLogFilter`` puts a pipe in front of descriptor 2 for
the life of a command and passes on everything except those lines: a
command's error stays one line. ``VGGCIFAR_BACKEND_LOG=1`` shows them all.
"""

from __future__ import annotations

import os
import re
import sys
import threading

# absl's line format: severity letter, MMDD, time, thread id, file:line]
_ABSL = re.compile(rb"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ")
_EXACT = (b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
          b"To enable the following instructions:",
          # LiteRT's interpreter, as it starts (vggcifar export checks a .tflite in it)
          b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
# An error line is kept unless it is the known one of a GPU-less machine.
_HARMLESS_ERRORS = re.compile(rb"cuInit|cuda drivers|CUDA_ERROR_NO_DEVICE|Unable to register cu")


def is_backend_noise(line: bytes) -> bool:
    """Whether one stderr line (without its newline) is backend start-up chatter."""
    if any(line.startswith(p) for p in _EXACT):
        return True
    if not _ABSL.match(line):
        return False
    return line[:1] != b"E" or bool(_HARMLESS_ERRORS.search(line))


def _could_become_noise(partial: bytes) -> bool:
    """Whether an unfinished line might still turn out to be chatter (then it
    waits for its newline; anything else, e.g. a progress line ending in
    a carriage return, is passed on at once)."""
    if any(p.startswith(partial[:len(p)]) for p in _EXACT):
        return True
    head = partial[:40]
    return bool(re.match(rb"^[IWE]\d{0,4}( [\d:.]* *\d* *\S*)?$", head)) or bool(_ABSL.match(partial))


def _line_end(data: bytes) -> int | None:
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends) + 1 if ends else None


#: Set to anything but "" or "0": the backend's log lines are shown, all of them.
SHOW_ENV = "VGGCIFAR_BACKEND_LOG"


def backend_log_shown() -> bool:
    """Whether the user asked for the backend's log lines (SHOW_ENV)."""
    return os.environ.get(SHOW_ENV, "") not in ("", "0")


class BackendLogFilter:
    """A context manager: while open, descriptor 2 goes through the filter."""

    def __init__(self, stream_fd: int = 2):
        self.fd = stream_fd
        self.active = not backend_log_shown()

    def __enter__(self) -> "BackendLogFilter":
        if not self.active:
            return self
        sys.stderr.flush()
        self.saved = os.dup(self.fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, self.fd)
        os.close(write_end)
        self.read_end = read_end
        self.thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self.thread.start()
        return self

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.saved, data)
        except OSError:
            pass

    def _pump(self) -> None:
        pending = b""
        passing = False  # the current line was already judged and partly passed on
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            # A line ends at a newline, or at a carriage return (a progress line).
            while (end := _line_end(pending)) is not None:
                line, pending = pending[:end], pending[end:]
                if passing or not is_backend_noise(line[:-1]):
                    self._write(line)
                passing = False
            if pending and (passing or not _could_become_noise(pending)):
                self._write(pending)
                pending, passing = b"", True
        if pending and not (not passing and is_backend_noise(pending)):
            self._write(pending)
        os.close(self.read_end)

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        sys.stderr.flush()
        os.dup2(self.saved, self.fd)  # closes the pipe's last writer: the pump sees its end
        self.thread.join(timeout=5)
        os.close(self.saved)
