"""One plan: the option table (options), pricing and checking a placement (pricing), the plan with its baselines
(runner), and plan files (files)."""
