"""What ``mloop`` exits with, so scripts and CI can branch on the outcome (docs/cli.md lists them).

==== =========================================================================================
code meaning
==== =========================================================================================
0    done
1    an error (the message says what and how to fix it; ``--verbose`` shows the traceback)
2    invalid configuration or usage: mloop.yaml, an ``MLOOP_*`` variable, an option
3    ``mloop drift`` / ``mloop monitor`` with ``--fail-on-drift``: the data drifted
4    ``mloop train``: the gates rejected the new version (it stays registered, tagged rejected)
130  interrupted (Ctrl-C)
==== =========================================================================================
"""

from __future__ import annotations

__all__ = ["ABORTED", "CONFIG", "DRIFT", "ERROR", "GATE_REJECTED", "OK"]

OK = 0
ERROR = 1
CONFIG = 2
DRIFT = 3
GATE_REJECTED = 4
ABORTED = 130
