import os
from pathlib import Path

# Tests run on the package's default backend unless the caller chose one.
os.environ.setdefault("KERAS_BACKEND", "torch")

SPEC_TABLE = Path(__file__).with_name("spec_table_channels_first.txt")
