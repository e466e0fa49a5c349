"""The TensorFlow guard check, collected with the suite: it ships in the package
(runners/process/guard_checks/tf_translation.py) so an installed runner's guard finds it."""
from runners.process.guard_checks.tf_translation import *  # noqa: F401,F403  (pytest collects the test_ functions)
