"""Framework integrations: callbacks and loggers that map a framework's training lifecycle onto
mlobs runs, epochs, steps and metrics, the same way whichever framework produced them.

Each module imports its framework when it is imported, and only then; this package imports
none of them:

- ``.lightning``: ``MlobsCallback`` and ``MlobsLogger`` for PyTorch Lightning
- ``.keras``: ``MlobsCallback`` for Keras 3 (any backend)
- ``.transformers``: ``MlobsCallback`` for the Hugging Face ``Trainer``
- ``.xgboost``: ``MlobsCallback`` for ``xgboost.train`` and the sklearn API
- ``.lightgbm``: ``mlobs_callback()`` for ``lightgbm.train`` and the sklearn API
- ``.sklearn``: ``observe_fit``, ``observe_predict`` and ``instrument`` for
  scikit-learn estimators

The mapping: one run per fit (named after the model's class unless ``run_name=`` says otherwise;
the framework's hyperparameters as params), or the active run when the fit happens inside
``with mlobs.run(...)``; one ``mlobs.epoch(n)`` per epoch or boosting round, numbered as the
framework numbers them (from 0); metrics named as the framework names them, less a split prefix
that becomes the ``split`` attribute (``val_loss`` is ``loss`` in split ``val``); and the run
``finished``, or ``failed`` when the fit raised, the exception propagating unchanged.
"""

from mlobs.instrument.integrations._lifecycle import UnobservedFailure

__all__ = ["UnobservedFailure"]
