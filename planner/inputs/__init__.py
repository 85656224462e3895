"""What kvplan reads: model cards and catalogs, workloads, request traces and reuse histories, SkyPilot CSVs;
each value checked, and an error naming its file, key or row. Nothing here imports the rest of kvplan."""
