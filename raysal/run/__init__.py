"""A run on Ray: its state, its lease, and each round as a sequence of committed stages.

``state`` knows every path of a run (``RunState``, ``RoundFiles``) on top of ``store`` (files
written whole); ``lease`` lets one round at a time change it; ``rounds`` runs a round through
``stages`` (score, select, label, train, evaluate), which use ``scoring`` (the actor pool),
``topk`` (the exact distributed top-k) and ``embedding_cache``; ``status`` reports;
``preflight``, ``cluster`` and ``duplicates`` refuse what cannot run before anything is written;
``schedule`` names scheduled rounds. Importing this package loads nothing: import a module.
"""
