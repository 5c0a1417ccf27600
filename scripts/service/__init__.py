"""Tools that run the service: Triton, the embedded Redis and workers, the edge, API keys."""
