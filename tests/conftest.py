from pathlib import Path

# Tests run on the package's default backend unless the caller chose one
# (KERAS_BACKEND): importing the package sets it before keras loads.
import vggcifar  # noqa: F401

SPEC_TABLE = Path(__file__).with_name("spec_table_channels_first.txt")
