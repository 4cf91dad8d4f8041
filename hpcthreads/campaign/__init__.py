"""Campaigns: a pool of work units on a shared filesystem that any number of runs join and leave.

A campaign directory holds the jobs cut into units (`store.py`), one lease per
unit being computed (`lease.py`), each unit's results file, a marker per
finished unit, and a record per run that joined (`holders.py`); every one of
these files is read bounded and checked before use (`records.py`).
`hpcthreads run --campaign DIR` claims units one after another and runs each
as an ordinary run (`runner.py`); a unit whose holder stops renewing its
lease is taken over and resumed from its ledger. `status.py`
tells where a campaign stands; `merge.py` joins the units' files into one.
"""

from hpcthreads.campaign.store import Campaign, Unit, create_campaign

__all__ = ["Campaign", "Unit", "create_campaign"]
