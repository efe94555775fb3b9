"""Reading a run: `open_run` and notebook display, read-only SQL, summaries, cluster tables, the HTML report,
exports for trainers (its plots: `curate.methods.plots`, which the evaluate stage also draws with)."""
