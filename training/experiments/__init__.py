"""``ratingctr experiment``: the papers' tables and figures as resumable, cached experiments.

* ``runner``: a plan of runs keyed by their full configuration, executed in parallel
  processes; a run whose artifacts exist is skipped, so an interrupted experiment resumes.
* ``supervision``: binary ("Original") vs rating ("Smooth") heads (paper 1).
* ``connectivity``: Base vs LightGCN TS vs FT across k-cores and activity groups (paper 2).
* ``stats``, ``tables``, ``plots``: summaries, paired tests, markdown and PNG output.
"""
