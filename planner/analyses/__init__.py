"""What is built on plans: forecasts over months (forecast, horizon), scenarios, sweeps and robust fleets,
catalog comparisons, break-even rates, and why a plan chose what it chose (explain)."""
