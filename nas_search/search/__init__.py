"""The task-agnostic search: one module per concern.

- :mod:`.config`: every option of ``nas-search run`` (:class:`~.config.SearchConfig`).
- :mod:`.resolve`: options checked (one-line errors), typed budgets, derived defaults.
- :mod:`.budgets`: :class:`~.budgets.Budgets` and the Optuna constraints they become.
- :mod:`.identity`: what a study searches, stored once and checked on every rerun.
- :mod:`.provisioning`: the supernet, checked or trained, and its scorer.
- :mod:`.space_protocol`: :class:`~.space_protocol.CandidateSpace`, the one way the search
  reaches a space; :mod:`.supernet_space` implements it for supernet spaces.
- :mod:`.objective`: one trial: suggest, cost, constrain, score, record.
- :mod:`.queue`: planning trials, working through them, ``nas-search worker``.
- :mod:`.records`: a typed view of what a trial recorded; :mod:`.ranking`: how trials rank.
- :mod:`.finalists`: re-ranking the best trials by short training.
- :mod:`.report`: the summary, the study note and the charts.
- :mod:`.runner`: ``nas-search run`` (:func:`~.runner.run_search`).
- :mod:`.study`, :mod:`.samplers`, :mod:`.parameters`, :mod:`.projection`: Optuna storage
  and queue primitives, samplers, parameter names, the FLOPs band.

Nothing here is imported on ``import nas_search.search``: import the module you need.
"""
