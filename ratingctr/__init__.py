"""ratingctr: rating-aware CTR training, torch-free bundles and the serving gateway.

One import namespace over four rooms that stay at the top of the repository
(``training/``, ``export/``, ``serving/``, ``loadtest/``; mapped by ``setup.py``).  This
root holds only what every room shares: the bundle contract, user errors, the CLI with
its verb registry, process/port helpers, hashing and markdown tables.  It imports no room.
"""
