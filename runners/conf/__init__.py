"""The runner's Hydra config groups (``*.yaml``), shipped with the package.

A package (not a plain folder) so Hydra finds it by module path too (``pkg://runners.conf``):
the ``ptycho-phase`` console script calls ``runners.phase.cli`` by module, where
``python -m runners.phase`` composes from the file path beside runners/phase.py.
"""
