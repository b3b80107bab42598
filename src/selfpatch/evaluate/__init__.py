"""Dense evaluation suite: DAVIS label propagation, segmentation probe, k-NN, pictures.

Each protocol is its own module (:mod:`davis` with :mod:`jf`, :mod:`seg`, :mod:`knn`,
:mod:`attention`), all sharing :mod:`features` for frozen-backbone feature extraction and
:mod:`datasets` for locating the built-in or real data. :mod:`report` runs them all and
writes ``report.md`` / ``report.json``; :mod:`cli` wires them to ``selfpatch eval``.
"""
