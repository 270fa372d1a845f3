"""Worker pools: one provider's worker loop over arq's job format, the job processor, provider adapters,
the health monitor."""
