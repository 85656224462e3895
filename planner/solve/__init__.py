"""The programs and their solvers: the exact integer program (exact), the solver layer under every program
(highs), and the engine for many contexts (scale)."""
