"""The guard's checks: pytest modules that runners.process.guard runs in a subprocess before training.

They ship with the package so an installed runner (``pip install .``) finds them: the guard's
selector (runners/conf/guard/*.yaml) is a path relative to the folder holding ``runners``
(the checkout, or site-packages). The suite collects them too (tests/tf_ops and tests/torch).
"""
