"""The relationships consumer: edges between spaces, content, labels and linked pages.

``links`` extracts page and blog post links from storage-format bodies. ``derive`` turns
the facts of one content item into its edge set. ``state`` keeps facts, edges and
buffered structure listings in MongoDB. ``service`` contains the batch handler and the
process entry point (``run``).
"""
