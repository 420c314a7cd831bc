"""Experiment tooling around the algorithm: the ``sb3-dmash`` command (:mod:`~sb3_dmash.experiments.cli`), studies
(:mod:`~sb3_dmash.experiments.bench`, in-run checkpoints in :mod:`~sb3_dmash.experiments.run_checkpoint`), their
statistics and reports (:mod:`~sb3_dmash.experiments.stats`, :mod:`~sb3_dmash.experiments.report`), the context
diagnostics (:mod:`~sb3_dmash.experiments.diagnostics`), the AIB evaluation callback
(:mod:`~sb3_dmash.experiments.callbacks`) and process settings (:mod:`~sb3_dmash.experiments.utils`).
"""
