"""How long a test waits for what the system does on its own before it fails.

Only a guard against a hang (under pytest's own timeout), never a timing: 10-30 s guards
failed under load, where an agent on two busy cores took longer than that to start and a
registry took longer than that to answer a burst of requests.
"""

HANG_GUARD = 300.0
