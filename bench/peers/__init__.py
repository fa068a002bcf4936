"""Scripts that load a site with another project's Confluence loader.

Each script runs in the separate benchmark virtual environment (``bench.peer_env``),
never in the project's own, so the peers' dependency pins never meet ours. It loads the
pages and the blog posts of the given spaces with bodies and prints one JSON object:
items loaded per content type and, per type, the error that stopped a case.
"""
