"""The agent loop and what only it needs: guarded tool calls, budgets, pricing, policy."""
