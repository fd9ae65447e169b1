"""Training of the built-in demo models on synthetic phantoms (not part of the installed package).

``python -m training NAME|all`` from a checkout retrains a demo model and rewrites its weights,
``metrics.json`` and ``MODEL_CARD.md`` under ``node/models/builtin/assets/<name>/``.  The
phantoms come from ``node.samples.phantoms``, the same generator ``ainode demo`` uses.
"""
