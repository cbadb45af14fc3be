"""The edge that talks to the API server: requests, list+watch, the cache and the work queue."""
