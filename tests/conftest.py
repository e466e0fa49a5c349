"""Suite-wide settings: quiet TensorFlow, one process, no network."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# Fixed thread pools (read by TensorFlow when it starts; TensorFlow may not be imported here,
# see tests/runner): a run's numbers then depend on the code alone, not on the machine's load.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
