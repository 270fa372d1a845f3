"""Worker pools: arq settings per provider, the job function, provider adapters, the health monitor."""
