"""How runs move: compiling, dispatching and executing steps, approvals, leases, recovery."""
